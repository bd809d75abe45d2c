//! GGUF files (llama.cpp's format): metadata, tensor directory, and dequantisation to f32.
//!
//! The file is memory-mapped; a tensor is read only when asked for and dequantised block by block. Supported
//! tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K (the dequantisers follow ggml's
//! `dequantize_row_*` and are tested against llama.cpp's Python package); other types are reported as unsupported
//! with the tensor's name.
//! Layout facts: dimensions are stored innermost first (`ne[0]` is the row length), so a PyTorch `[out, in]` weight
//! has `dims = [in, out]`; data starts at the first multiple of `general.alignment` (default 32) after the
//! directory; all integers are little-endian.

use half::{bf16, f16};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What can go wrong reading a GGUF file.
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes are not a GGUF file this reader understands.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: no tensor `{name}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor type without a dequantiser.
    #[error("{path}: tensor `{name}` has type {kind}, which is not supported yet")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The GGML type id.
        kind: u32,
    },
    /// A metadata key is missing or has the wrong type.
    #[error("{path}: metadata `{key}` {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// An array.
    Array(Vec<Value>),
}

impl Value {
    /// As an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// As a float (integers convert).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's directory entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// GGML type id.
    pub kind: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

/// An open GGUF file.
pub struct Gguf {
    path: PathBuf,
    map: Mmap,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    data_start: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("unexpected end of file")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short read")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short read")?))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
    fn value(&mut self, kind: u32) -> Result<Value, String> {
        let b = |r: &mut Self, n| r.take(n).map(|s| s.to_vec());
        Ok(match kind {
            0 => Value::Int(b(self, 1)?[0] as i64),
            1 => Value::Int(b(self, 1)?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(b(self, 2)?.try_into().unwrap_or([0; 2])) as i64),
            3 => Value::Int(i16::from_le_bytes(b(self, 2)?.try_into().unwrap_or([0; 2])) as i64),
            4 => Value::Int(self.u32()? as i64),
            5 => Value::Int(self.u32()? as i32 as i64),
            6 => Value::Float(f32::from_le_bytes(b(self, 4)?.try_into().unwrap_or([0; 4])) as f64),
            7 => Value::Bool(b(self, 1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let item = self.u32()?;
                let n = self.u64()? as usize;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(self.u64()? as i64),
            12 => Value::Float(f64::from_le_bytes(b(self, 8)?.try_into().unwrap_or([0; 8]))),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

/// (elements per block, bytes per block) of a GGML type.
fn block(kind: u32) -> Option<(usize, usize)> {
    match kind {
        0 => Some((1, 4)),      // F32
        1 => Some((1, 2)),      // F16
        30 => Some((1, 2)),     // BF16
        2 => Some((32, 18)),    // Q4_0
        3 => Some((32, 20)),    // Q4_1
        8 => Some((32, 34)),    // Q8_0
        12 => Some((256, 144)), // Q4_K
        14 => Some((256, 210)), // Q6_K
        _ => None,
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// One Q4_K super-block: `d`, `dmin` (f16), 12 bytes of packed 6-bit scales and minima, 128 bytes of 4-bit values.
fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1, d2, min2) = (d * s1 as f32, dmin * m1 as f32, d * s2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xf) as f32 - min1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// One Q6_K super-block: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 signed scales, `d` (f16).
fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
    for n in 0..2 {
        let (ql, qh, sc, y) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..], &mut y[128 * n..]);
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

impl Gguf {
    /// Opens and indexes a GGUF file (version 2 or 3).
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = std::fs::File::open(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
        // SAFETY: the map is read-only; tokensieve does not modify model files while they are open.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
        let bad = |reason: String| GgufError::Format { path: path.to_path_buf(), reason };
        let mut r = Reader { bytes: &map, pos: 0 };
        if r.take(4).map_err(&bad)? != b"GGUF" {
            return Err(bad("not a GGUF file (missing the GGUF magic)".into()));
        }
        let version = r.u32().map_err(&bad)?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let tensor_count = r.u64().map_err(&bad)?;
        let kv_count = r.u64().map_err(&bad)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string().map_err(&bad)?;
            let kind = r.u32().map_err(&bad)?;
            metadata.insert(key, r.value(kind).map_err(&bad)?);
        }
        let mut tensors = BTreeMap::new();
        for _ in 0..tensor_count {
            let name = r.string().map_err(&bad)?;
            let n_dims = r.u32().map_err(&bad)?;
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>().map_err(&bad)?;
            let kind = r.u32().map_err(&bad)?;
            let offset = r.u64().map_err(&bad)?;
            tensors.insert(name, TensorInfo { dims, kind, offset });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_int).unwrap_or(32).max(1) as usize;
        let data_start = r.pos.div_ceil(alignment) * alignment;
        Ok(Gguf { path: path.to_path_buf(), map, metadata, tensors, data_start })
    }

    /// A required metadata value.
    pub fn meta(&self, key: &str) -> Result<&Value, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            reason: "is missing".into(),
        })
    }

    /// A required integer.
    pub fn meta_int(&self, key: &str) -> Result<i64, GgufError> {
        self.meta(key)?.as_int().ok_or_else(|| GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            reason: "is not an integer".into(),
        })
    }

    /// A required float.
    pub fn meta_float(&self, key: &str) -> Result<f64, GgufError> {
        self.meta(key)?.as_float().ok_or_else(|| GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            reason: "is not a number".into(),
        })
    }

    /// The tensor `name` as f32 values (row-major, outermost dimension first) and its PyTorch-order shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), GgufError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.into() })?;
        let count: usize = info.dims.iter().map(|&d| d as usize).product();
        let (per_block, bytes_per_block) = block(info.kind).ok_or_else(|| GgufError::Unsupported {
            path: self.path.clone(),
            name: name.into(),
            kind: info.kind,
        })?;
        let size = count / per_block * bytes_per_block;
        let start = self.data_start + info.offset as usize;
        let bytes = self.map.get(start..start + size).ok_or_else(|| GgufError::Format {
            path: self.path.clone(),
            reason: format!("tensor `{name}` lies beyond the end of the file"),
        })?;
        let mut out = vec![0f32; count];
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        match info.kind {
            0 => out
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            1 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, b)| *o = half(b)),
            30 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            8 => {
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                    let d = half(&b[..2]);
                    o.iter_mut().zip(&b[2..]).for_each(|(o, &q)| *o = d * (q as i8) as f32);
                }
            }
            2 | 3 => {
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(bytes_per_block)) {
                    let d = half(&b[..2]);
                    let (m, q) = if info.kind == 3 { (half(&b[2..4]), &b[4..20]) } else { (-8.0 * d, &b[2..18]) };
                    for (j, &byte) in q.iter().enumerate() {
                        o[j] = d * (byte & 0x0f) as f32 + m;
                        o[j + 16] = d * (byte >> 4) as f32 + m;
                    }
                }
            }
            12 => out.chunks_exact_mut(256).zip(bytes.chunks_exact(144)).for_each(|(o, b)| dequantize_q4_k(b, o)),
            14 => out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)).for_each(|(o, b)| dequantize_q6_k(b, o)),
            _ => unreachable!("block() admitted only the types handled here"),
        }
        let shape = info.dims.iter().rev().map(|&d| d as usize).collect();
        Ok((out, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a tiny GGUF v3 file with one Q4_1 and one Q8_0 tensor and reads it back.
    #[test]
    fn reads_metadata_and_dequantises_blocks() {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend((t.len() as u64).to_le_bytes());
            b.extend(t.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        // Tensor directory: q41 [32], q80 [32].
        s(&mut b, "q41");
        b.extend(1u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        s(&mut b, "q80");
        b.extend(1u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        // Q4_1 block: d = 0.5, m = -1, nibbles j (low) and 15 - j (high).
        b.extend(f16::from_f32(0.5).to_le_bytes());
        b.extend(f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        b.extend([0u8; 12]); // pad the Q4_1 block (20 bytes) to the next tensor offset (32)
                             // Q8_0 block: d = 0.25, values -16..16.
        b.extend(f16::from_f32(0.25).to_le_bytes());
        b.extend((0..32i32).map(|i| (i - 16) as i8 as u8));
        let dir = std::env::temp_dir().join(format!("tokensieve-gguf-{}.gguf", std::process::id()));
        std::fs::write(&dir, &b).unwrap();
        let g = Gguf::open(&dir).unwrap();
        assert_eq!(g.meta("general.architecture").unwrap().as_str(), Some("llama"));
        assert_eq!(g.meta_int("llama.block_count").unwrap(), 2);
        let (q41, shape) = g.tensor_f32("q41").unwrap();
        assert_eq!(shape, vec![32]);
        assert_eq!(q41[3], 0.5 * 3.0 - 1.0);
        assert_eq!(q41[16 + 3], 0.5 * 12.0 - 1.0);
        let (q80, _) = g.tensor_f32("q80").unwrap();
        assert_eq!(q80[0], -4.0);
        assert_eq!(q80[31], 3.75);
        assert!(matches!(g.tensor_f32("nope"), Err(GgufError::MissingTensor { .. })));
        std::fs::write(&dir, b"GGUX").unwrap();
        assert!(matches!(Gguf::open(&dir), Err(GgufError::Format { .. })));
        std::fs::remove_file(&dir).ok();
    }
}
