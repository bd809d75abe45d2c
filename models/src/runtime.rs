//! Probes of the native runtimes the backends load: which libtorch the binary is linked against and whether CUDA
//! is usable, and whether an ONNX Runtime library loads and which version it is.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a runtime is not usable.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The backend was not compiled into this build.
    #[error("the `{0}` backend is not compiled in (rebuild with `--features {0}`)")]
    NotCompiled(&'static str),
    /// `ORT_DYLIB_PATH` is unset.
    #[error("ORT_DYLIB_PATH is not set (run `make setup` and source $TOKENSIEVE_HOME/env.sh)")]
    OrtPathUnset,
    /// The ONNX Runtime library could not be loaded or has the wrong version.
    #[error("ONNX Runtime at {path}: {reason}")]
    OrtLoad {
        /// The library path.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
}

/// What libtorch offers this process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TorchRuntime {
    /// `torch.__version__` of the linked libtorch (e.g. `2.13.0+cu130`).
    pub version: String,
    /// Folder of the linked libtorch libraries.
    pub library_dir: String,
    /// Whether CUDA can be used.
    pub cuda_available: bool,
    /// Number of CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN can be used.
    pub cudnn_available: bool,
}

/// What ONNX Runtime offers this process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnnxRuntime {
    /// The library loaded.
    pub library: PathBuf,
    /// Its version (e.g. `1.31.1`).
    pub version: String,
}

/// Probes libtorch (feature `torch`).
pub fn torch() -> Result<TorchRuntime, RuntimeError> {
    #[cfg(feature = "torch")]
    {
        Ok(TorchRuntime {
            version: env!("TOKENSIEVE_LIBTORCH_VERSION").to_string(),
            library_dir: env!("TOKENSIEVE_LIBTORCH_LIB").to_string(),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
        })
    }
    #[cfg(not(feature = "torch"))]
    {
        Err(RuntimeError::NotCompiled("torch"))
    }
}

/// Loads ONNX Runtime from `ORT_DYLIB_PATH` (feature `onnx`) and reports its version. Loading happens once per
/// process; later calls report the library already loaded.
pub fn onnx() -> Result<OnnxRuntime, RuntimeError> {
    let path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or(RuntimeError::OrtPathUnset)?;
    onnx_from(&path)
}

/// Loads ONNX Runtime from `path` (feature `onnx`).
pub fn onnx_from(path: &Path) -> Result<OnnxRuntime, RuntimeError> {
    #[cfg(feature = "onnx")]
    {
        let fail = |reason: String| RuntimeError::OrtLoad { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        // ort resolves relative paths against the executable's folder, which surprises users: make it absolute.
        let absolute = std::fs::canonicalize(path).map_err(|e| fail(e.to_string()))?;
        let builder = ort::init_from(&absolute).map_err(|e| fail(e.to_string()))?;
        drop(builder);
        let info = ort::info();
        let version = info
            .split([',', ' '])
            .find_map(|part| part.strip_prefix("git-branch=rel-"))
            .map(str::to_string)
            .or_else(|| absolute.file_name()?.to_str()?.strip_prefix("libonnxruntime.so.").map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        Ok(OnnxRuntime { library: absolute, version })
    }
    #[cfg(not(feature = "onnx"))]
    {
        let _ = path;
        Err(RuntimeError::NotCompiled("onnx"))
    }
}

/// The devices to run on: the CPU, then every CUDA device libtorch sees. Parity tests loop over these, so the same
/// checks run on a GPU wherever there is one.
#[cfg(feature = "torch")]
pub fn compute_devices() -> Vec<tch::Device> {
    let cuda = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
    std::iter::once(tch::Device::Cpu).chain((0..cuda as usize).map(tch::Device::Cuda)).collect()
}

/// [`compute_devices`], saying on stderr when no CUDA device exists (tests call this, so a CPU-only run is never
/// mistaken for a GPU check).
#[cfg(feature = "torch")]
pub fn compute_devices_reported() -> Vec<tch::Device> {
    let devices = compute_devices();
    if devices.len() == 1 {
        eprintln!("CUDA: no device on this machine; these checks ran on the CPU only");
    }
    devices
}

/// Whether this CPU has instructions for `kind` arithmetic (AVX512-BF16 for bf16, AVX512-FP16 for f16), so that
/// libtorch's oneDNN kernels compute in it at full speed; f32 always. Without them half-precision matmuls are
/// emulated and run slower than f32.
#[cfg(feature = "torch")]
pub fn cpu_computes(kind: tch::Kind) -> bool {
    match kind {
        tch::Kind::Float => true,
        #[cfg(target_arch = "x86_64")]
        tch::Kind::BFloat16 => std::is_x86_feature_detected!("avx512bf16"),
        #[cfg(target_arch = "x86_64")]
        tch::Kind::Half => std::is_x86_feature_detected!("avx512fp16"),
        #[cfg(target_arch = "aarch64")]
        tch::Kind::BFloat16 => std::arch::is_aarch64_feature_detected!("bf16"),
        #[cfg(target_arch = "aarch64")]
        tch::Kind::Half => std::arch::is_aarch64_feature_detected!("fp16"),
        _ => false,
    }
}

/// The compute dtype `--dtype auto` picks for a checkpoint stored as `stored` on `device`: the stored dtype, as
/// transformers' `from_pretrained(dtype="auto")` does, wherever the device computes it natively (every CUDA device;
/// a CPU with [`cpu_computes`]), else f32. Checkpoints with no float tensors compute in f32.
#[cfg(feature = "torch")]
pub fn auto_dtype(stored: Option<crate::safetensors::StoredDtype>, device: tch::Device) -> tch::Kind {
    use crate::safetensors::StoredDtype;
    let kind = match stored {
        Some(StoredDtype::Bf16) => tch::Kind::BFloat16,
        Some(StoredDtype::F16) => tch::Kind::Half,
        Some(StoredDtype::F32) | None => tch::Kind::Float,
    };
    if device.is_cuda() || cpu_computes(kind) {
        kind
    } else {
        tch::Kind::Float
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::safetensors::StoredDtype;
    use tch::{Device, Kind};

    /// `auto`: f32 stays f32; half precision is kept on CUDA and on a CPU that computes it natively, else f32.
    #[test]
    fn auto_dtype_keeps_the_stored_dtype_where_it_is_native() {
        assert_eq!(auto_dtype(Some(StoredDtype::F32), Device::Cpu), Kind::Float);
        assert_eq!(auto_dtype(None, Device::Cuda(0)), Kind::Float);
        assert_eq!(auto_dtype(Some(StoredDtype::Bf16), Device::Cuda(0)), Kind::BFloat16);
        assert_eq!(auto_dtype(Some(StoredDtype::F16), Device::Cuda(0)), Kind::Half);
        let cpu_bf16 = if cpu_computes(Kind::BFloat16) { Kind::BFloat16 } else { Kind::Float };
        assert_eq!(auto_dtype(Some(StoredDtype::Bf16), Device::Cpu), cpu_bf16);
        assert!(cpu_computes(Kind::Float) && !cpu_computes(Kind::Int64));
    }
}
