//! Memory-mapped safetensors files (Hugging Face checkpoints): an 8-byte little-endian header length, a JSON header
//! mapping each tensor to its dtype, shape and byte range, then the data. A tensor is read either as its stored
//! bytes ([`Safetensors::stored`], which the model loaders hand to libtorch in the stored dtype) or converted to f32
//! ([`Safetensors::tensor_f32`]); F32, F16 and BF16 are supported and nothing else is read. Once a loader has copied
//! a tensor out, [`Safetensors::release`] drops its pages from the process (the map stays valid: they would be read
//! from the file again), so loading a checkpoint does not hold the file's pages and the loaded copy at once.

use half::{bf16, f16};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What can go wrong reading a safetensors file.
#[derive(Debug, Error)]
pub enum SafetensorsError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The header or a byte range is malformed.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: no tensor `{name}`")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor whose shape differs from the configuration's.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Found.
        got: Vec<usize>,
        /// Expected.
        expected: Vec<usize>,
    },
}

/// The stored dtype of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// `F32`.
    F32,
    /// `F16`.
    F16,
    /// `BF16`.
    Bf16,
}

/// A tensor's stored bytes (little-endian, row-major), dtype and shape.
pub struct Stored<'a> {
    /// The data, as in the file.
    pub bytes: &'a [u8],
    /// Its dtype.
    pub dtype: StoredDtype,
    /// Its shape.
    pub shape: &'a [usize],
}

impl Stored<'_> {
    /// The values as f32 (exact for every supported dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        let bytes = self.bytes;
        match self.dtype {
            StoredDtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            StoredDtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            StoredDtype::Bf16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        }
    }
}

struct Entry {
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An open safetensors file.
pub struct Safetensors {
    path: PathBuf,
    map: Mmap,
    entries: BTreeMap<String, Entry>,
    data_start: usize,
}

impl Safetensors {
    /// Maps and indexes `path`.
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let file =
            std::fs::File::open(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
        // SAFETY: read-only map of a checkpoint that is not modified while open.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
        let bad = |reason: String| SafetensorsError::Format { path: path.to_path_buf(), reason };
        let len = map
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
            .ok_or_else(|| bad("shorter than its header".into()))?;
        let header = map.get(8..8 + len).ok_or_else(|| bad("header runs past the end".into()))?;
        let json: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?;
        let mut entries = BTreeMap::new();
        for (name, v) in json.as_object().ok_or_else(|| bad("header is not an object".into()))? {
            if name == "__metadata__" {
                continue;
            }
            let shape = v["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64()).map(|d| d as usize).collect())
                .unwrap_or_default();
            let offsets = v["data_offsets"].as_array().ok_or_else(|| bad(format!("`{name}` has no data_offsets")))?;
            let (start, end) = (offsets[0].as_u64().unwrap_or(0) as usize, offsets[1].as_u64().unwrap_or(0) as usize);
            let dtype = v["dtype"].as_str().unwrap_or("").to_string();
            entries.insert(name.clone(), Entry { dtype, shape, start, end });
        }
        Ok(Safetensors { path: path.to_path_buf(), map, entries, data_start: 8 + len })
    }

    /// Names of the tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor `name` as stored: its bytes (checked against its dtype and shape), dtype and shape.
    pub fn stored(&self, name: &str) -> Result<Stored<'_>, SafetensorsError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| SafetensorsError::Missing { path: self.path.clone(), name: name.into() })?;
        let bad = |reason: String| SafetensorsError::Format { path: self.path.clone(), reason };
        let bytes = self
            .map
            .get(self.data_start + e.start..self.data_start + e.end)
            .ok_or_else(|| bad(format!("`{name}` lies past the end")))?;
        let (dtype, width) = match e.dtype.as_str() {
            "F32" => (StoredDtype::F32, 4),
            "F16" => (StoredDtype::F16, 2),
            "BF16" => (StoredDtype::Bf16, 2),
            other => return Err(bad(format!("`{name}` has dtype {other}; F32, F16 and BF16 are supported"))),
        };
        let count = e.shape.iter().product::<usize>();
        if bytes.len() != count * width {
            return Err(bad(format!("`{name}`: {} bytes for {:?} of {}", bytes.len(), e.shape, e.dtype)));
        }
        Ok(Stored { bytes, dtype, shape: &e.shape })
    }

    /// Tensor `name`, checked against `expected` shape, as stored.
    pub fn stored_as(&self, name: &str, expected: &[usize]) -> Result<Stored<'_>, SafetensorsError> {
        let stored = self.stored(name)?;
        if stored.shape != expected {
            return Err(SafetensorsError::Shape {
                path: self.path.clone(),
                name: name.into(),
                got: stored.shape.to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(stored)
    }

    /// Drops the pages of `name`'s bytes from this process once they were copied out (a hint: errors are ignored).
    /// They stay readable: the kernel reads them from the file again if they are touched.
    pub fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Some(e) = self.entries.get(name) {
            // SAFETY: MADV_DONTNEED on a read-only file mapping only discards clean pages, which later reads fault
            // back in from the unchanged file; no reference into the range sees different bytes.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.data_start + e.start,
                    e.end - e.start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = name;
    }

    /// Bytes stored per dtype name (`"BF16"`, `"F32"`, ...), read from the header.
    fn bytes_by_dtype(&self) -> impl Iterator<Item = (&str, usize)> {
        self.entries.values().map(|e| (e.dtype.as_str(), e.end.saturating_sub(e.start)))
    }

    /// Tensor `name` as f32 values and its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), SafetensorsError> {
        let stored = self.stored(name)?;
        Ok((stored.to_f32(), stored.shape.to_vec()))
    }

    /// Tensor `name`, checked against `expected` shape.
    pub fn expect(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, SafetensorsError> {
        Ok(self.stored_as(name, expected)?.to_f32())
    }
}

/// A single `model.safetensors` or the shards listed by `model.safetensors.index.json`.
pub struct Checkpoint {
    files: Vec<Safetensors>,
    by_name: std::collections::HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens `dir`'s `model.safetensors`, or every shard its index names.
    pub fn open(dir: &Path) -> Result<Self, SafetensorsError> {
        let index = dir.join("model.safetensors.index.json");
        let names: Vec<std::path::PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| SafetensorsError::Format { path: index.clone(), reason: e.to_string() })?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| SafetensorsError::Format { path: index.clone(), reason: e.to_string() })?;
            let mut files: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let files = names.iter().map(|p| Safetensors::open(p)).collect::<Result<Vec<_>, _>>()?;
        let by_name = files.iter().enumerate().flat_map(|(i, f)| f.names().map(move |n| (n.to_string(), i))).collect();
        Ok(Checkpoint { files, by_name })
    }

    /// Whether any shard holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The floating dtype most of the checkpoint's bytes are stored in (what `from_pretrained(dtype="auto")` computes
    /// in); `None` when no tensor is F32, F16 or BF16.
    pub fn float_dtype(&self) -> Option<StoredDtype> {
        let mut bytes = [0usize; 3];
        for (dtype, n) in self.files.iter().flat_map(Safetensors::bytes_by_dtype) {
            match dtype {
                "F32" => bytes[0] += n,
                "F16" => bytes[1] += n,
                "BF16" => bytes[2] += n,
                _ => {}
            }
        }
        let most = (0..3).max_by_key(|&i| bytes[i]).filter(|&i| bytes[i] > 0)?;
        Some([StoredDtype::F32, StoredDtype::F16, StoredDtype::Bf16][most])
    }

    /// Tensor `name` as f32 values and its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), SafetensorsError> {
        match self.by_name.get(name) {
            Some(&file) => self.files[file].tensor_f32(name),
            None => self.files[0].tensor_f32(name),
        }
    }

    /// Tensor `name`, checked against `expected` shape.
    pub fn expect(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, SafetensorsError> {
        self.file_of(name).expect(name, expected)
    }

    /// Tensor `name`, checked against `expected` shape, as stored ([`Safetensors::stored_as`]).
    pub fn stored_as(&self, name: &str, expected: &[usize]) -> Result<Stored<'_>, SafetensorsError> {
        self.file_of(name).stored_as(name, expected)
    }

    /// Drops `name`'s pages from this process ([`Safetensors::release`]).
    pub fn release(&self, name: &str) {
        self.file_of(name).release(name)
    }

    /// The shard holding `name` (the first one when none does, so the error names a file).
    fn file_of(&self, name: &str) -> &Safetensors {
        &self.files[self.by_name.get(name).copied().unwrap_or(0)]
    }
}

/// Storage type of a tensor written by [`write()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAs {
    /// 32-bit floats.
    F32,
    /// bfloat16 (half the bytes; what large checkpoints ship in).
    Bf16,
}

/// Writes named f32 tensors `(name, shape, values)` as one safetensors file, in the given order, stored as `dtype`.
pub fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: StoreAs) -> Result<(), SafetensorsError> {
    use std::io::Write;
    let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
    let width = match dtype {
        StoreAs::F32 => 4,
        StoreAs::Bf16 => 2,
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(SafetensorsError::Shape {
                path: path.to_path_buf(),
                name: name.clone(),
                got: vec![values.len()],
                expected: shape.clone(),
            });
        }
        let end = offset + values.len() * width;
        let dtype = if width == 4 { "F32" } else { "BF16" };
        header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    // The data starts 8-byte aligned, as the reference writer pads the header with spaces.
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(text.as_bytes()).map_err(io)?;
    for (_, _, values) in tensors {
        for &v in values {
            match dtype {
                StoreAs::F32 => out.write_all(&v.to_le_bytes()),
                StoreAs::Bf16 => out.write_all(&bf16::from_f32(v).to_le_bytes()),
            }
            .map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn written_files_read_back() {
        let dir = std::env::temp_dir().join(format!("tokensieve-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let tensors = vec![("a".to_string(), vec![2, 3], (0..6).map(|i| i as f32 * 0.5).collect::<Vec<_>>())];
        for dtype in [StoreAs::F32, StoreAs::Bf16] {
            write(&path, &tensors, dtype).unwrap();
            let st = Safetensors::open(&path).unwrap();
            assert_eq!(st.tensor_f32("a").unwrap(), (tensors[0].2.clone(), vec![2, 3]), "{dtype:?}");
        }
        let bad = vec![("b".to_string(), vec![4], vec![1.0f32])];
        assert!(matches!(write(&path, &bad, StoreAs::F32), Err(SafetensorsError::Shape { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `float_dtype` names the dtype most bytes are stored in (what `--dtype auto` starts from).
    #[test]
    fn a_checkpoint_names_its_stored_dtype() {
        let dir = std::env::temp_dir().join(format!("tokensieve-st-dtype-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors = vec![("w".to_string(), vec![4, 4], vec![0.25f32; 16])];
        for (dtype, want) in [(StoreAs::F32, StoredDtype::F32), (StoreAs::Bf16, StoredDtype::Bf16)] {
            write(&dir.join("model.safetensors"), &tensors, dtype).unwrap();
            assert_eq!(Checkpoint::open(&dir).unwrap().float_dtype(), Some(want));
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
