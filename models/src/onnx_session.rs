//! What the `onnx` backend's models share: the one ONNX Runtime environment of the process, session settings, typed
//! errors naming the model file, and copying outputs out of ONNX Runtime.

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionOutputs};
use std::path::{Path, PathBuf};

/// Why an ONNX model could not load or run.
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

/// ONNX Runtime allows one environment per process; every session shares it.
fn environment() -> Result<&'static ort::environment::Environment, String> {
    static ENVIRONMENT: std::sync::OnceLock<Result<ort::environment::Environment, String>> = std::sync::OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| ort::init().with_name("tokensieve").build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// A session on `path` with `options`, after checking that the ONNX Runtime library can be loaded.
pub fn build_session(path: &Path, options: &OnnxOptions) -> Result<Session, OnnxError> {
    crate::runtime::onnx()?;
    let fail = |e: &dyn std::fmt::Display| OnnxError::Ort { path: path.to_path_buf(), reason: e.to_string() };
    let level = match options.optimization {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::Level3,
    };
    let mut builder = Session::builder(environment().map_err(|e| fail(&e))?)
        .map_err(|e| fail(&e))?
        .with_optimization_level(level)
        .map_err(|e| fail(&e))?
        .with_memory_pattern(options.memory_pattern)
        .map_err(|e| fail(&e))?;
    if options.intra_threads > 0 {
        builder = builder.with_intra_threads(options.intra_threads).map_err(|e| fail(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| fail(&e))
}

/// Copies the f32 output `name` out of `outputs` (`None` when the graph has no such output).
pub fn take(outputs: &SessionOutputs<'_>, name: &str, path: &Path) -> Result<Option<Array>, OnnxError> {
    let Some(value) = outputs.get(name) else { return Ok(None) };
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| OnnxError::Output {
        path: path.to_path_buf(),
        output: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(Array { shape: shape.iter().map(|&d| d as usize).collect(), data: data.to_vec() }))
}
