//! [`Engine`]: the model that answers, on either backend: [`VideoQa`] (libtorch, CUDA when available) or, with the
//! `onnx` feature, [`OnnxQa`] (ONNX Runtime on an export folder). Everything that answers questions (the
//! [`super::builder::Pipeline`], `bench`, `compress`, `eval`) goes through it, so every command runs on both backends
//! with the same options and the same record.

#[cfg(feature = "onnx")]
use super::onnx_qa::OnnxQa;
pub use super::qa::VisualTokens;
use super::qa::{MediaKind, QaError, QaOptions, QaRecord};
use super::video_qa::VideoQa;
use std::path::Path;
#[cfg(feature = "onnx")]
use tokensieve_models::onnx_session::{OnnxOptions, Precision};
use tokensieve_pruners::PruneError;
use tokensieve_video::Frame;

/// Which backend to load a model on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineChoice {
    /// libtorch on `device`, computing in `dtype` (a Hugging Face `llava` / `llava_onevision` directory).
    Torch {
        /// Where the tensors live.
        device: tch::Device,
        /// Compute dtype of tower and decoder.
        dtype: tch::Kind,
    },
    /// ONNX Runtime on an export folder (`models/export/export_onnx.py`), in `precision`.
    #[cfg(feature = "onnx")]
    Onnx {
        /// Which graph files to load.
        precision: Precision,
        /// Session settings.
        options: OnnxOptions,
    },
}

/// A loaded model on one of the backends.
pub enum Engine {
    /// libtorch.
    Torch(VideoQa),
    /// ONNX Runtime.
    #[cfg(feature = "onnx")]
    Onnx(OnnxQa),
}

impl Engine {
    /// Loads `dir` on the chosen backend.
    pub fn load(dir: &Path, choice: EngineChoice) -> Result<Self, QaError> {
        Ok(match choice {
            EngineChoice::Torch { device, dtype } => Engine::Torch(VideoQa::load_as(dir, device, dtype)?),
            #[cfg(feature = "onnx")]
            EngineChoice::Onnx { precision, options } => Engine::Onnx(OnnxQa::load(dir, precision, &options)?),
        })
    }

    /// Checks settings that depend on the model and backend (in-decoder layers exist; the onnx backend refuses
    /// in-decoder pruning).
    pub fn check_options(&self, opts: &QaOptions) -> Result<(), PruneError> {
        match self {
            Engine::Torch(qa) => qa.check_options(opts),
            #[cfg(feature = "onnx")]
            Engine::Onnx(qa) => qa.check_options(opts),
        }
    }

    /// Answers `question` about `frames`.
    pub fn ask(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        question: &str,
        opts: &QaOptions,
    ) -> Result<(String, QaRecord), QaError> {
        self.ask_streaming(frames, kind, None, question, opts, &mut |_| true)
    }

    /// Answers `question` about `frames` after an optional system prompt, handing each new piece of the answer to
    /// `on_text` (`false` stops).
    pub fn ask_streaming(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        match self {
            Engine::Torch(qa) => qa.ask_streaming(frames, kind, system, question, opts, on_text),
            #[cfg(feature = "onnx")]
            Engine::Onnx(qa) => qa.ask_streaming(frames, kind, system, question, opts, on_text),
        }
    }

    /// The visual tokens of `frames` before pruning, with their layout and signals.
    pub fn visual_tokens(&self, frames: &[Frame], kind: MediaKind) -> Result<VisualTokens, QaError> {
        match self {
            Engine::Torch(qa) => qa.visual_tokens(frames, kind),
            #[cfg(feature = "onnx")]
            Engine::Onnx(qa) => qa.visual_tokens(frames, kind),
        }
    }

    /// The image processor the model's frames go through.
    pub fn processor(&self) -> &tokensieve_video::preprocess::ImageProcessor {
        match self {
            Engine::Torch(qa) => qa.processor(),
            #[cfg(feature = "onnx")]
            Engine::Onnx(qa) => qa.processor(),
        }
    }
}
