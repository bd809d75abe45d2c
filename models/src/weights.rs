//! Prefix-scoped weight loading (candle's `VarBuilder` idea): a [`Weights`] scoped to `model.language_model.` hands
//! out tensors by relative name, checks each one's shape against the shape the configuration implies *before* its
//! values are read, and names the full tensor, the expected and the found shape when they differ. A checkpoint that
//! does not fit its `config.json` therefore fails at load with one line, instead of deep inside a matmul with a
//! libtorch backtrace.

use crate::safetensors::{Checkpoint, SafetensorsError, StoredDtype};
use tch::{Device, Kind, Tensor};

/// Why a weight could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// Missing, mis-shaped or unreadable (the error names the tensor and the shapes).
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// libtorch could not place it on the device.
    #[error("libtorch: {}", brief(.0))]
    Torch(#[from] tch::TchError),
}

/// A checkpoint seen through a name prefix, loading onto one device in one dtype.
pub struct Weights<'a> {
    checkpoint: &'a Checkpoint,
    prefix: String,
    device: Device,
    kind: Kind,
}

impl<'a> Weights<'a> {
    /// Tensors of `checkpoint` under `prefix` (`""` for none), loaded onto `device` as `kind`.
    pub fn new(checkpoint: &'a Checkpoint, prefix: &str, device: Device, kind: Kind) -> Self {
        Weights { checkpoint, prefix: prefix.to_string(), device, kind }
    }

    /// The same checkpoint under `prefix` + `sub` + `.`.
    pub fn pp(&self, sub: &str) -> Weights<'a> {
        Weights { prefix: format!("{}{sub}.", self.prefix), ..*self }
    }

    /// The full name of `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the checkpoint holds `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.name(name))
    }

    /// Tensor `name` of shape `shape`, on the device in the dtype; a missing or mis-shaped tensor is an error naming
    /// it with both shapes.
    ///
    /// The stored bytes become a tensor in the stored dtype (one copy), move to the device in that dtype (half the
    /// transfer for a bf16 checkpoint) and are converted there; the file's pages are then dropped. So a checkpoint
    /// costs its size in the compute dtype, not that plus an f32 staging copy plus the mapped file.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, WeightError> {
        let full = self.name(name);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let stored = self.checkpoint.stored_as(&full, shape)?;
        let tensor = if cfg!(target_endian = "little") {
            let kind = match stored.dtype {
                StoredDtype::F32 => Kind::Float,
                StoredDtype::F16 => Kind::Half,
                StoredDtype::Bf16 => Kind::BFloat16,
            };
            Tensor::f_from_data_size(stored.bytes, &dims, kind)?.f_to_device(self.device)?.f_to_kind(self.kind)?
        } else {
            // safetensors is little-endian: a big-endian host decodes the values instead.
            let values = stored.to_f32();
            Tensor::from_slice(&values).f_reshape(dims.as_slice())?.f_to_kind(self.kind)?.f_to_device(self.device)?
        };
        self.checkpoint.release(&full);
        Ok(tensor)
    }
}

/// The first line of a libtorch error: its message without the C++ stack trace that `c10::Error` appends
/// (`Exception raised from ...` and the frames after it), which means nothing to a user.
pub fn brief(e: &tch::TchError) -> String {
    let text = e.to_string();
    let cut = ["\nException raised from", "\nframe #"].iter().filter_map(|m| text.find(m)).min().unwrap_or(text.len());
    text[..cut].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn brief_drops_the_cpp_stack_trace() {
        let e = tch::TchError::Torch(
            "mat1 and mat2 shapes cannot be multiplied (3x31 and 32x32)\nException raised from meta at aten/x.cpp:1\n\
             frame #0: c10::Error::Error + 0x9"
                .into(),
        );
        assert_eq!(
            super::brief(&e),
            "Internal torch error: mat1 and mat2 shapes cannot be multiplied (3x31 and 32x32)"
        );
    }
}
