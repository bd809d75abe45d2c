//! Reading and writing NumPy `.npy` files: f64 (NumPy's default dtype), f32 and f16 read and converted to f32, f32
//! written; C order, format versions 1, 2 and 3.
//!
//! The pruner command line trades arrays with Python this way (`np.save`), so the reader checks what NumPy writes
//! and rejects the rest with the file and the reason: Fortran order, other dtypes, big-endian data, truncated files.

use half::f16;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an `.npy` file could not be used.
#[derive(Debug, Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an `.npy` file NumPy would write, or not one we accept.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A float array read from `.npy` (converted to f32) with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in C order.
    pub data: Vec<f32>,
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(tuple) = rest.strip_prefix('(') {
        return tuple.find(')').map(|end| &tuple[..end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Reads a little-endian f64, f32 or f16 C-order array, converted to f32.
pub fn read(path: &Path) -> Result<NpyArray, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: path.to_path_buf(), source })?;
    let bad = |reason: String| NpyError::Format { path: path.to_path_buf(), reason };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (missing the \\x93NUMPY magic)".into()));
    }
    let (header_len, offset) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let header = bytes
        .get(offset..offset + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-text header".into()))?;
    let descr =
        header_value(header, "descr").ok_or_else(|| bad("header has no descr".into()))?.trim_matches(['\'', '"']);
    if header_value(header, "fortran_order") != Some("False") {
        return Err(bad("Fortran-order arrays are not supported; save with np.ascontiguousarray".into()));
    }
    let shape_text = header_value(header, "shape").ok_or_else(|| bad("header has no shape".into()))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("bad shape ({shape_text})"))))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let body = &bytes[offset + header_len..];
    let width = match descr {
        "<f8" => 8,
        "<f4" => 4,
        "<f2" => 2,
        other => {
            return Err(bad(format!("dtype {other} is not supported (use float64, float32 or float16, little-endian)")))
        }
    };
    if body.len() != count * width {
        return Err(bad(format!("shape {shape:?} needs {} data bytes, file has {}", count * width, body.len())));
    }
    let data = match width {
        // Narrowed as NumPy's astype(float32) does (round to nearest); pruners compute in f32.
        8 => body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect(),
        4 => body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        _ => body.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    };
    Ok(NpyArray { shape, data })
}

/// Writes a little-endian f32 C-order array (format version 1).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape_text}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    data.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
    std::fs::write(path, bytes).map_err(|source| NpyError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        let v = dir.path().join("v.npy");
        write_f32(&v, &[3], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(read(&v).unwrap().shape, vec![3]);
        let raw = std::fs::read(&p).unwrap();
        std::fs::write(&p, &raw[..raw.len() - 4]).unwrap();
        assert!(matches!(read(&p), Err(NpyError::Format { .. })));
        std::fs::write(&p, b"hello world, not numpy").unwrap();
        assert!(matches!(read(&p), Err(NpyError::Format { .. })));
        assert!(matches!(read(&dir.path().join("missing.npy")), Err(NpyError::Io { .. })));
    }

    #[test]
    fn numpy_default_float64_is_read_and_narrowed() {
        // What `np.save(p, np.array([[0.1, -2.5], [1e-3, 7.0]]))` writes (float64 is NumPy's default dtype).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f8.npy");
        let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }".to_string();
        header.push_str(&" ".repeat(63 - (10 + header.len()) % 64));
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        [0.1f64, -2.5, 1e-3, 7.0].iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        std::fs::write(&p, bytes).unwrap();
        let a = read(&p).unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 2], vec![0.1f32, -2.5, 1e-3, 7.0]));
    }
}
