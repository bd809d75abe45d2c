//! The `onnx` backend's vision encoder: an ONNX graph mapping pixels `[B, 3, S, S]` to visual tokens `[B, N, D]`,
//! run with ONNX Runtime (the library setup takes out of the PyPI wheel, loaded at run time). It reads the
//! `vision_encoder.onnx` that `models/export/export_onnx.py` writes (outputs `image_features`, and for CLIP towers
//! `cls_attention` and `keys`, the signals attention-based pruners read) or any user encoder whose first output is
//! the `[B, N, D]` tokens.
//!
//! The session is built once (intra-op threads, memory-pattern planning and the graph optimisation level are the
//! settings that matter on small machines) and reused; pixels are handed to ONNX Runtime as a view of the caller's
//! slice, without a copy. Cost: one graph run, O(B·N·D·layers) like the tower itself.

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

/// Why the encoder could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The ONNX Runtime library is missing or unusable (the path and reason come from the runtime probe).
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// ONNX Runtime refused the model or the run.
    #[error("{path}: {reason}")]
    Ort {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// An output is missing or has an unexpected shape.
    #[error("{path}: output `{output}`: {reason}")]
    Output {
        /// The model file.
        path: PathBuf,
        /// The output name.
        output: String,
        /// What is wrong.
        reason: String,
    },
}

/// ONNX Runtime allows one environment per process; every session shares it.
fn environment() -> Result<&'static ort::environment::Environment, String> {
    static ENVIRONMENT: std::sync::OnceLock<Result<ort::environment::Environment, String>> = std::sync::OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| ort::init().with_name("tokensieve").build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub intra_threads: usize,
    /// Plan memory from the first run's shapes (faster repeated runs of one shape, more memory).
    pub memory_pattern: bool,
    /// Graph optimisation level, 0 (none) to 3 (all, layout changes included).
    pub optimization: u8,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions { intra_threads: 0, memory_pattern: true, optimization: 3 }
    }
}

/// A `[dims..]` tensor copied out of ONNX Runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// What the encoder returned.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutput {
    /// Visual tokens `[B, N, D]` (the first output, or `image_features`).
    pub features: Array,
    /// CLS attention over the patches `[B, N]`, when the graph has a `cls_attention` output.
    pub cls_attention: Option<Array>,
    /// Last-layer keys averaged over heads `[B, T, d]`, when the graph has a `keys` output.
    pub keys: Option<Array>,
}

/// A loaded ONNX vision encoder.
pub struct OnnxVisionEncoder {
    session: Session,
    path: PathBuf,
    input: String,
    features: String,
}

impl OnnxVisionEncoder {
    /// Loads `path` with `options`, after checking that the ONNX Runtime library can be loaded.
    pub fn load(path: &Path, options: &OnnxOptions) -> Result<Self, OnnxError> {
        crate::runtime::onnx()?;
        let fail = |e: &dyn std::fmt::Display| OnnxError::Ort { path: path.to_path_buf(), reason: e.to_string() };
        let environment = environment().map_err(|e| fail(&e))?;
        let level = match options.optimization {
            0 => GraphOptimizationLevel::Disable,
            1 => GraphOptimizationLevel::Level1,
            2 => GraphOptimizationLevel::Level2,
            _ => GraphOptimizationLevel::Level3,
        };
        let mut builder = Session::builder(environment)
            .map_err(|e| fail(&e))?
            .with_optimization_level(level)
            .map_err(|e| fail(&e))?
            .with_memory_pattern(options.memory_pattern)
            .map_err(|e| fail(&e))?;
        if options.intra_threads > 0 {
            builder = builder.with_intra_threads(options.intra_threads).map_err(|e| fail(&e))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| fail(&e))?;
        let input =
            session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| fail(&"the graph has no input"))?;
        let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let features = names
            .iter()
            .find(|n| *n == "image_features")
            .or_else(|| names.first())
            .cloned()
            .ok_or_else(|| fail(&"the graph has no output"))?;
        Ok(OnnxVisionEncoder { session, path: path.to_path_buf(), input, features })
    }

    /// Encodes `batch` preprocessed images of `side x side` (`pixels` is `[batch, 3, side, side]`, row-major).
    pub fn encode(&mut self, pixels: &[f32], batch: usize, side: usize) -> Result<EncoderOutput, OnnxError> {
        let path = self.path.clone();
        let fail = |e: &dyn std::fmt::Display| OnnxError::Ort { path: path.clone(), reason: e.to_string() };
        if pixels.len() != batch * 3 * side * side {
            return Err(fail(&format!("{} pixel values for {batch} images of 3 x {side} x {side}", pixels.len())));
        }
        let shape = [batch as i64, 3, side as i64, side as i64];
        let view = TensorRef::from_array_view((shape, pixels)).map_err(|e| fail(&e))?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => view]).map_err(|e| fail(&e))?;
        let take = |name: &str| -> Result<Option<Array>, OnnxError> {
            let Some(value) = outputs.get(name) else { return Ok(None) };
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| OnnxError::Output {
                path: path.clone(),
                output: name.to_string(),
                reason: e.to_string(),
            })?;
            Ok(Some(Array { shape: shape.iter().map(|&d| d as usize).collect(), data: data.to_vec() }))
        };
        let features = take(&self.features)?.ok_or_else(|| OnnxError::Output {
            path: path.clone(),
            output: self.features.clone(),
            reason: "missing".into(),
        })?;
        if features.shape.len() != 3 || features.shape[0] != batch {
            return Err(OnnxError::Output {
                path: path.clone(),
                output: self.features.clone(),
                reason: format!("shape {:?}, expected [{batch}, N, D]", features.shape),
            });
        }
        Ok(EncoderOutput { features, cls_attention: take("cls_attention")?, keys: take("keys")? })
    }
}
