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

/// A Qwen-VL checkpoint's tower and decoder in f32 on `device`; each test adds its family's prefill.
pub struct Model {
    /// The vision tower.
    pub vision: tokensieve_models::qwen_vision::QwenVision,
    /// The decoder.
    pub text: tokensieve_models::llama::Llama,
}

impl Model {
    /// Loads `dir` on `device`.
    pub fn load(dir: &Path, device: Device) -> Self {
        Model {
            vision: tokensieve_models::qwen_vision::QwenVision::load_as(dir, device, Kind::Float).unwrap(),
            text: tokensieve_models::llama::Llama::from_hf_dir_as(dir, device, Kind::Float).unwrap(),
        }
    }

    /// The input embeddings of `ids` with each `(placeholder id, rows)` part written at that id's positions.
    pub fn embeds(&self, ids: &[i64], parts: &[(i64, &Tensor)]) -> Tensor {
        let ids = Tensor::from_slice(ids).unsqueeze(0).to_device(self.vision.device());
        tokensieve_models::llava::merge_at(&self.text, &ids, parts).unwrap()
    }

    /// `steps` greedy tokens: the argmax of `first`, then cached decode steps.
    pub fn greedy(&self, first: &Tensor, cache: &mut tokensieve_models::llama::KvCache, steps: usize) -> Vec<i64> {
        let mut out = vec![first.argmax(-1, false).int64_value(&[0])];
        while out.len() < steps {
            let ids = Tensor::from_slice(&out[out.len() - 1..]).unsqueeze(0).to_device(self.vision.device());
            out.push(self.text.forward(&ids, cache).unwrap().argmax(-1, false).int64_value(&[0]));
        }
        out
    }
}

/// The last position's row of `[L, V]` logits.
pub fn last_row(logits: &Tensor) -> Tensor {
    logits.get(logits.size()[0] - 1)
}
