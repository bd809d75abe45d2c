//! Evaluation: caption metrics with the COCO definitions (the DriveLM language score, EM-VLM4AD, BDD-X, DRAMA and
//! LingoQA use them), the DriveLM challenge score, NuScenes-QA accuracy, and pluggable LLM judges. The video-QA
//! loaders, multiple-choice extractors and the `eval` runner (which needs the pipeline) are still to come.

pub mod bleu;
pub mod caption;
pub mod cider;
pub mod drivelm;
pub mod judge;
pub mod mcq;
pub mod nuscenes_qa;
pub mod ptb;
pub mod rouge;
#[cfg(all(feature = "torch", feature = "video"))]
pub mod runner;
