//! # tokensieve
//!
//! Make vision-language and video LLMs cheaper by sending them fewer visual tokens. The data flows one way:
//! video -> frames -> pixels -> visual tokens -> kept tokens -> decoder. This crate is the facade and the command
//! line; the stages live in their own crates, re-exported here:
//!
//! - [`pruners`] (`tokensieve-pruners`): every selection and merging method, on ndarray or tch tensors;
//! - [`video`] (`tokensieve-video`, feature `video`): decoding, samplers, preprocessing;
//! - [`models`] (`tokensieve-models`): encoders, projectors, decoders on the `torch` and `onnx` backends.

#![warn(missing_docs)]

pub mod assets;
pub mod eval;
pub mod hub;
pub mod npy;
pub mod pipeline;

pub use tokensieve_models as models;
pub use tokensieve_pruners as pruners;
#[cfg(feature = "video")]
pub use tokensieve_video as video;
