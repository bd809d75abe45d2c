//! Frame and clip samplers: which frames of a video reach the vision encoder (ALGORITHMS.md §2).
//!
//! Index rules work on frame indices `0..N` of a video with a known frame rate, so they can be tested without
//! decoding; `decode::decode_at` then fetches exactly those frames. Samplers that look at content (D-CoDe, F2C,
//! segments) take per-frame embeddings or relevance through [`FrameEmbedder`], so any vision encoder plugs in.

pub mod by_name;
pub mod dcode;
pub mod embed;
pub mod f2c;
pub mod segments;
pub mod uniform;

pub use by_name::{Sampler, SamplerError, SAMPLERS};
pub use embed::{EmbedError, FrameEmbedder, FrameScorer, ThumbnailEmbedder};
pub use uniform::{fps_indices, uniform_indices, Uniform};

use thiserror::Error;

/// Why a sampler cannot produce frames.
#[derive(Debug, Error, PartialEq)]
pub enum SampleError {
    /// The video has no frames.
    #[error("the video has no frames to sample")]
    NoFrames,
    /// A parameter is out of range.
    #[error("sampler {sampler}: {reason}")]
    Param {
        /// Sampler name.
        sampler: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Inputs of mismatched lengths.
    #[error("sampler {sampler}: {what} has {got} entries, expected {expected}")]
    Length {
        /// Sampler name.
        sampler: &'static str,
        /// Which input.
        what: &'static str,
        /// Entries received.
        got: usize,
        /// Entries expected.
        expected: usize,
    },
}
