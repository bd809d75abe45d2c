//! # tokensieve-models
//!
//! Vision encoders, projectors and LLM decoders for tokensieve, behind two backends: `torch` (libtorch through
//! tch, CUDA when present) and `onnx` (ONNX Runtime through ort, loaded at run time). This crate exposes the
//! signals the pruners need (hidden states, CLS attention, keys, attention rows at a decoder layer) and accepts the
//! kept indices; it knows nothing about pruning policy.
//!
//! Checkpoints: GGUF and safetensors readers, tokenizers and chat templates (no backend needed); with `torch`: the
//! CLIP/SigLIP towers, Llama/Qwen2 decoders with in-decoder token drops, LLaVA and LLaVA-OneVision.

#![warn(missing_docs)]

pub mod arch;
pub mod chat_template;
pub mod dual_encoder;

pub mod gguf;
#[cfg(feature = "torch")]
pub mod linear;
#[cfg(feature = "torch")]
pub mod llama;
#[cfg(feature = "torch")]
pub mod llava;
pub mod onevision;
#[cfg(feature = "onnx")]
pub mod onnx_decoder;
#[cfg(feature = "onnx")]
pub mod onnx_dual_encoder;
#[cfg(feature = "onnx")]
pub mod onnx_encoder;
#[cfg(feature = "onnx")]
pub mod onnx_session;
pub mod positions;
pub mod qwen_grid;
#[cfg(feature = "torch")]
pub mod qwen_vision;
pub mod random_checkpoint;
pub mod runtime;
pub mod safetensors;
pub mod sampling;
pub mod tokenizer;
#[cfg(feature = "torch")]
pub mod vision;
pub mod vlm_config;
#[cfg(feature = "torch")]
pub mod weights;
