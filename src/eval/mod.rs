//! Evaluation: caption metrics with the COCO definitions (the DriveLM language score, EM-VLM4AD, BDD-X, DRAMA and
//! LingoQA use them). Dataset loaders, task scores and the `eval` runner arrive with the evaluation issue.

pub mod bleu;
pub mod caption;
pub mod cider;
pub mod ptb;
pub mod rouge;
