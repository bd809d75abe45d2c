//! What the `onnx` backend's models share: the one ONNX Runtime environment of the process, session settings, typed
//! errors naming the model file, and copying outputs out of ONNX Runtime.

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionOutputs};
use ort::value::DynValue;
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
    /// Keep freed CPU buffers in ONNX Runtime's arena for reuse (faster; the arena only grows, so a small device
    /// running one long prompt may prefer it off).
    pub memory_arena: bool,
    /// Graph optimisation level, 0 (none) to 3 (all, layout changes included).
    pub optimization: u8,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions { intra_threads: 0, memory_pattern: true, memory_arena: true, optimization: 3 }
    }
}

/// Which precision variant of an export to load. The community exports ship each graph several times, told apart by
/// a file-name suffix: `decoder_model_merged.onnx` (fp32), `decoder_model_merged_fp16.onnx`,
/// `..._quantized.onnx` (8-bit weights, dynamic activations; Transformers.js calls it `q8`), `..._int8.onnx`,
/// `..._uint8.onnx`, `..._q4.onnx` (4-bit blocked weights), `..._q4f16.onnx` and `..._bnb4.onnx`. fp16 graphs take and
/// return float16 tensors; the backend converts at the graph boundary so callers always see f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `name.onnx`.
    #[default]
    Fp32,
    /// `name_fp16.onnx`.
    Fp16,
    /// `name_quantized.onnx` (`q8`, `quantized`).
    Q8,
    /// `name_int8.onnx`.
    Int8,
    /// `name_uint8.onnx`.
    Uint8,
    /// `name_q4.onnx`.
    Q4,
    /// `name_q4f16.onnx`.
    Q4f16,
    /// `name_bnb4.onnx`.
    Bnb4,
}

impl Precision {
    /// The names accepted by [`Precision::parse`].
    pub const NAMES: [&'static str; 9] = ["fp32", "fp16", "q8", "quantized", "int8", "uint8", "q4", "q4f16", "bnb4"];

    /// Parses a Transformers.js `dtype` name; the error lists the accepted ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "fp32" => Precision::Fp32,
            "fp16" => Precision::Fp16,
            "q8" | "quantized" => Precision::Q8,
            "int8" => Precision::Int8,
            "uint8" => Precision::Uint8,
            "q4" => Precision::Q4,
            "q4f16" => Precision::Q4f16,
            "bnb4" => Precision::Bnb4,
            other => return Err(format!("precision `{other}` is not one of {}", Self::NAMES.join(", "))),
        })
    }

    /// The file of graph `stem` (`vision_encoder`, ...) in this precision.
    pub fn file(self, stem: &str) -> String {
        let suffix = match self {
            Precision::Fp32 => "",
            Precision::Fp16 => "_fp16",
            Precision::Q8 => "_quantized",
            Precision::Int8 => "_int8",
            Precision::Uint8 => "_uint8",
            Precision::Q4 => "_q4",
            Precision::Q4f16 => "_q4f16",
            Precision::Bnb4 => "_bnb4",
        };
        format!("{stem}{suffix}.onnx")
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
        .map_err(|e| fail(&e))?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(options.memory_arena).build()])
        .map_err(|e| fail(&e))?;
    if options.intra_threads > 0 {
        builder = builder.with_intra_threads(options.intra_threads).map_err(|e| fail(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| fail(&e))
}

/// Copies the output `name` out of `outputs` as f32 (float16 outputs are widened; `None` when the graph has no such
/// output).
pub fn take(outputs: &SessionOutputs<'_>, name: &str, path: &Path) -> Result<Option<Array>, OnnxError> {
    outputs.get(name).map(|v| extract(v, name, path, false)).transpose()
}

/// The last row (`[.., V]` -> `[V]`) of the output `name`, copying only that row: a prefill's logits cover every
/// prompt position, and only the last one picks the next token.
pub fn take_last_row(outputs: &SessionOutputs<'_>, name: &str, path: &Path) -> Result<Option<Vec<f32>>, OnnxError> {
    outputs.get(name).map(|v| extract(v, name, path, true).map(|a| a.data)).transpose()
}

fn extract(value: &DynValue, name: &str, path: &Path, last_row: bool) -> Result<Array, OnnxError> {
    let fail = |reason: String| OnnxError::Output { path: path.to_path_buf(), output: name.to_string(), reason };
    let tail = |shape: &[i64], len: usize| -> usize {
        if last_row {
            len - shape.last().map_or(len, |&v| v.max(0) as usize).min(len)
        } else {
            0
        }
    };
    let (shape, data): (Vec<i64>, Vec<f32>) = match value.try_extract_tensor::<f32>() {
        Ok((shape, data)) => (shape.to_vec(), data[tail(shape, data.len())..].to_vec()),
        Err(e) => match value.try_extract_tensor::<half::f16>() {
            Ok((shape, data)) => (shape.to_vec(), data[tail(shape, data.len())..].iter().map(|v| v.to_f32()).collect()),
            Err(_) => return Err(fail(e.to_string())),
        },
    };
    let shape = if last_row { vec![data.len()] } else { shape.iter().map(|&d| d as usize).collect() };
    Ok(Array { shape, data })
}

/// Whether the session's input `name` takes float16 (an fp16 export).
pub fn takes_f16(session: &Session, name: &str) -> bool {
    session.inputs().iter().any(|i| {
        i.name() == name
            && matches!(i.dtype(), ort::value::ValueType::Tensor { ty: ort::value::TensorElementType::Float16, .. })
    })
}

/// A float input for `session`: a view of `data` when the graph takes f32 (no copy), a float16 copy when it takes
/// float16.
pub fn float_input<'v>(
    session: &Session,
    name: &str,
    shape: &[usize],
    data: &'v [f32],
    path: &Path,
) -> Result<ort::session::SessionInputValue<'v>, OnnxError> {
    let fail = |e: ort::Error| OnnxError::Ort { path: path.to_path_buf(), reason: format!("input `{name}`: {e}") };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(if takes_f16(session, name) {
        let half: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        ort::value::Tensor::from_array((dims, half)).map_err(fail)?.into()
    } else {
        ort::value::TensorRef::from_array_view((dims, data)).map_err(fail)?.into()
    })
}
