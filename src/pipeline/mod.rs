//! The pipeline that joins the stages: frames -> pixels -> visual tokens -> kept tokens -> decoder, with a record
//! of what happened (tokens per stage, time per stage, TTFT, KV-cache bytes, FLOPs).
//!
//! One engine ([`engine::Engine`]) runs every model family on every backend: the backends implement the two sides
//! of [`model`] (`torch_model`, `onnx_model`), the families live in `tokensieve_models::arch`.

#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod builder;
#[cfg(all(feature = "onnx", feature = "video"))]
pub mod custom_encoder;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod engine;
pub mod flops;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod frames;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod model;
#[cfg(all(feature = "onnx", feature = "video"))]
pub mod onnx_model;
pub mod overlap;
pub mod prompt;
#[cfg(feature = "video")]
pub mod qa;
#[cfg(feature = "video")]
pub mod relevance;
/// Frame samplers by name (they live in the video crate, beside the index rules, so the Python package has them).
#[cfg(feature = "video")]
pub use tokensieve_video::samplers::by_name as sampler;
#[cfg(all(feature = "torch", feature = "video"))]
pub mod torch_model;
