//! Evaluation: dataset loaders (driving VQA and multiple-choice long-video QA, in every format they are published
//! in), caption metrics with the COCO definitions, the DriveLM challenge score, NuScenes-QA accuracy, named
//! multiple-choice extractors, pluggable LLM judges, and the `eval` runner (which needs the pipeline).

pub mod bleu;
pub mod caption;
pub mod cider;
pub mod drivelm;
pub mod error;
pub mod judge;
pub mod lingoqa;
pub mod mcq;
pub mod nuscenes_qa;
pub mod ptb;
pub mod rouge;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod runner;
pub mod table;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub mod task;
pub mod video_mcq;

/// 64-bit FNV-1a of `bytes`, its offset basis mixed with `seed` (0 gives plain FNV-1a): the configuration hash of a
/// run and the per-sample seeds of random answer fallbacks, identical on every platform.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed ^ 0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
