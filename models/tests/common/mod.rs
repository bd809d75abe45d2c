//! Helpers shared by the Qwen-VL parity tests: the fixture's reference tensors (ids, grids and positions are stored
//! as float32) and the largest absolute difference.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokensieve_models::positions::PositionIds;
use tokensieve_models::safetensors::Safetensors;

/// A committed fixture folder under `models/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fixture's `reference.safetensors`, written by its generator script.
pub struct Reference(Safetensors);

impl Reference {
    /// Opens `dir/reference.safetensors`.
    pub fn open(dir: &Path) -> Self {
        Reference(Safetensors::open(&dir.join("reference.safetensors")).expect("run make fixtures"))
    }
    /// A tensor in its stored shape, as f32.
    pub fn tensor(&self, name: &str) -> Tensor {
        let (v, shape) = self.0.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        Tensor::from_slice(&v).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
    }
    /// Integers stored as float32.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.0.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0.iter().map(|&v| v as i64).collect()
    }
    /// A `(t, h, w)` grid.
    pub fn grid(&self, name: &str) -> [usize; 3] {
        let g = self.ints(name);
        [g[0] as usize, g[1] as usize, g[2] as usize]
    }
    /// `[3, L]` position ids as three rows.
    pub fn positions(&self, name: &str) -> PositionIds {
        let flat = self.ints(name);
        let l = flat.len() / 3;
        PositionIds::MRope([flat[..l].to_vec(), flat[l..2 * l].to_vec(), flat[2 * l..].to_vec()])
    }
}

/// The largest absolute difference of `a` (any device and kind) and `b` (f32 on the CPU).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]) - b.reshape([-1])).abs().max().double_value(&[])
}
