//! The pipeline that joins the stages: frames -> pixels -> visual tokens -> kept tokens -> decoder, with a record
//! of what happened (tokens per stage, time per stage, TTFT, KV-cache bytes, FLOPs).

#[cfg(all(feature = "torch", feature = "video"))]
pub mod builder;
#[cfg(all(feature = "onnx", feature = "video"))]
pub mod custom_encoder;
#[cfg(all(feature = "torch", feature = "video"))]
pub mod engine;
pub mod flops;
#[cfg(all(feature = "onnx", feature = "video"))]
pub mod onnx_qa;
pub mod overlap;
pub mod prompt;
#[cfg(feature = "video")]
pub mod qa;
#[cfg(feature = "video")]
pub mod sampler;
#[cfg(all(feature = "torch", feature = "video"))]
pub mod video_qa;
