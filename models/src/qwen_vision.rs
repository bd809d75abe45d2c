//! The Qwen2.5-VL vision tower on libtorch (transformers' `Qwen2_5_VisionTransformerPretrainedModel`): native
//! resolution patches of `temporal_patch_size x patch_size²` pixels, 2-D rotary embeddings, windowed attention with
//! full attention in `fullatt_block_indexes`, RMSNorm, a SwiGLU MLP, and the 2 x 2 patch merger that makes the
//! tokens the LLM sees.
//!
//! ```text
//! x      = patches · W_patchᵀ                       (Conv3d with stride = kernel: a linear map of each patch)
//! rotary = [h·θ, w·θ, h·θ, w·θ]                      (θ_i = base^(−4i/d_head), i < d_head/4; rotate_half)
//! block  = x + proj(attn(norm1(x)));  + mlp(norm2(·))  attention within a window of (window_size/patch/merge)²
//!          merged tokens of one frame, or the whole frame in the full-attention blocks
//! tokens = mlp2(gelu(mlp0(ln_q(x) viewed as [N/4, 4·D])))        in (frame, merged row, merged col) order
//! ```
//!
//! Patches come in the processor's order: per temporal patch, merge blocks row by row, each block's 2 x 2 patches
//! row by row. Every temporal patch (two frames of a video, or one image) is its own attention sequence (transformers'
//! `cu_seqlens`), so a batch of temporal patches of one grid is exact, and so is encoding a long video a batch at a
//! time. Windows are batched with a key mask (no `N x N` score matrix: `windows x W²`); a frame's full attention is
//! one fused SDPA per block.
//!
//! Signals \[project\], at the last full-attention block (Qwen has no CLS token): the mean attention each patch
//! receives in its frame (softmax over keys, mean over heads and queries, one frame at a time) and the keys before
//! rotary embedding averaged over heads, both pooled (mean) over each merged token's 2 x 2 patches: how VisPruner
//! and HoliTom's Qwen ports score tokens.
//!
//! Complexity per frame of `P` patches: full blocks `O(P²·D)`, window blocks `O(P·W·D)` with `W` patches per
//! window.

use crate::arch::SignalRequest;
use crate::safetensors::{Checkpoint, SafetensorsError};
use crate::weights::{WeightError, Weights};
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Why the tower could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum QwenVisionError {
    /// A weight is missing or mis-shaped.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From libtorch.
    #[error("libtorch: {}", crate::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// `config.json` or the input does not fit.
    #[error("{what}: {reason}")]
    Input {
        /// The file or tensor.
        what: String,
        /// Why.
        reason: String,
    },
}

/// `rope_parameters` of the vision config.
#[derive(Debug, Clone, Deserialize)]
struct VisionRope {
    rope_theta: Option<f64>,
}

/// The `vision_config` keys of a `qwen2_5_vl` `config.json` (transformers' names and defaults).
#[derive(Debug, Clone, Deserialize)]
pub struct QwenVisionConfig {
    /// Blocks.
    pub depth: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// The merger's block side.
    pub spatial_merge_size: usize,
    /// Window side in pixels.
    pub window_size: usize,
    /// Blocks with full (per-frame) attention.
    pub fullatt_block_indexes: Vec<usize>,
    /// Width of the merged tokens (the LLM's hidden size).
    pub out_hidden_size: usize,
    /// Input channels.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// The MLP activation (`silu` in every released checkpoint).
    #[serde(default = "silu")]
    pub hidden_act: String,
    /// Temporal position ids per second of video (the rope index's scale).
    #[serde(default = "two")]
    pub tokens_per_second: f64,
    rope_parameters: Option<VisionRope>,
}

fn three() -> usize {
    3
}
fn two() -> f64 {
    2.0
}
fn silu() -> String {
    "silu".into()
}

impl QwenVisionConfig {
    /// Values in one patch row: `channels x temporal x patch²`.
    pub fn patch_values(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Merged tokens per window side.
    fn window_side(&self) -> usize {
        (self.window_size / self.spatial_merge_size / self.patch_size).max(1)
    }
}

struct Block {
    norm1: Tensor,
    norm2: Tensor,
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    gate: (Tensor, Tensor),
    up: (Tensor, Tensor),
    down: (Tensor, Tensor),
}

/// The tokens of one grid from [`QwenVision::encode`]: `[frames, tokens, D]` and the signals asked for, in the
/// merged (frame, row, col) order.
pub struct QwenTap {
    /// `[t, h·w/4, out_hidden_size]` merged tokens.
    pub features: Tensor,
    /// `[t, h·w/4]` mean received attention, pooled over each merged token's patches (f32).
    pub attention: Option<Tensor>,
    /// `[t, h·w/4, head_dim]` keys (mean over heads, pooled), f32.
    pub keys: Option<Tensor>,
}

/// A loaded Qwen2.5-VL vision tower.
pub struct QwenVision {
    /// Its configuration.
    pub config: QwenVisionConfig,
    patch: Tensor,
    blocks: Vec<Block>,
    ln_q: Tensor,
    mlp0: (Tensor, Tensor),
    mlp2: (Tensor, Tensor),
    /// `[d_head/4]` f32.
    inv_freq: Tensor,
    device: Device,
}

/// How a grid's merged tokens are visited window by window (transformers' `get_vision_window_index`, per frame).
struct Windows {
    /// Merged-token indices of one frame in window order.
    order: Vec<i64>,
    /// `[windows, W]` patch rows (in window order) of each window, padded with 0.
    gather: Vec<i64>,
    /// `[windows, W]` true for the real rows.
    valid: Vec<bool>,
    /// Windows per frame and patches per full window.
    count: usize,
    width: usize,
}

fn windows(h: usize, w: usize, side: usize, unit: usize) -> Windows {
    let (nh, nw) = (h.div_ceil(side), w.div_ceil(side));
    let mut order = Vec::with_capacity(h * w);
    let mut lengths = Vec::with_capacity(nh * nw);
    for wy in 0..nh {
        for wx in 0..nw {
            let before = order.len();
            for r in wy * side..((wy + 1) * side).min(h) {
                for c in wx * side..((wx + 1) * side).min(w) {
                    order.push((r * w + c) as i64);
                }
            }
            lengths.push((order.len() - before) * unit);
        }
    }
    let width = side * side * unit;
    let (mut gather, mut valid) = (Vec::with_capacity(lengths.len() * width), Vec::new());
    let mut start = 0;
    for len in &lengths {
        for j in 0..width {
            gather.push(if j < *len { (start + j) as i64 } else { 0 });
            valid.push(j < *len);
        }
        start += len;
    }
    Windows { order, gather, valid, count: lengths.len(), width }
}

impl QwenVision {
    /// Loads the tower of a `qwen2_5_vl` directory (`model.visual.*` as transformers 5 saves it, or `visual.*` as
    /// the released checkpoints store it) onto `device`, computing in `kind`.
    pub fn load_as(dir: &Path, device: Device, kind: Kind) -> Result<Self, QwenVisionError> {
        let path = dir.join("config.json");
        let bad = |reason: String| QwenVisionError::Input { what: path.display().to_string(), reason };
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        let config = QwenVisionConfig::deserialize(json.get("vision_config").unwrap_or(&serde_json::Value::Null))
            .map_err(|e| bad(format!("vision_config: {e}")))?;
        if config.hidden_act != "silu" {
            return Err(bad(format!("vision_config.hidden_act {:?}: only silu is supported", config.hidden_act)));
        }
        if config.num_heads == 0
            || config.hidden_size % config.num_heads != 0
            || (config.hidden_size / config.num_heads) % 4 != 0
        {
            return Err(bad(format!(
                "vision_config: hidden_size {} over {} heads must give a head width divisible by 4",
                config.hidden_size, config.num_heads
            )));
        }
        let ck = Checkpoint::open(dir)?;
        let prefix = ["model.visual.", "visual."]
            .into_iter()
            .find(|p| ck.contains(&format!("{p}patch_embed.proj.weight")))
            .unwrap_or("model.visual.");
        let _guard = tch::no_grad_guard();
        let root = Weights::new(&ck, prefix, device, kind);
        let (d, m, c) = (config.hidden_size, config.intermediate_size, &config);
        let linear = |w: &Weights<'_>, name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), WeightError> {
            Ok((w.get(&format!("{name}.weight"), &[out, inp])?, w.get(&format!("{name}.bias"), &[out])?))
        };
        let patch = root
            .get("patch_embed.proj.weight", &[d, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size])?
            .f_reshape([d as i64, c.patch_values() as i64])?;
        let blocks = (0..c.depth)
            .map(|i| {
                let b = root.pp(&format!("blocks.{i}"));
                Ok(Block {
                    norm1: b.get("norm1.weight", &[d])?,
                    norm2: b.get("norm2.weight", &[d])?,
                    qkv: linear(&b, "attn.qkv", 3 * d, d)?,
                    proj: linear(&b, "attn.proj", d, d)?,
                    gate: linear(&b, "mlp.gate_proj", m, d)?,
                    up: linear(&b, "mlp.up_proj", m, d)?,
                    down: linear(&b, "mlp.down_proj", d, m)?,
                })
            })
            .collect::<Result<Vec<_>, WeightError>>()?;
        let unit = c.spatial_merge_size * c.spatial_merge_size;
        let merger = root.pp("merger");
        let ln_q = merger.get("ln_q.weight", &[d])?;
        let mlp0 = linear(&merger, "mlp.0", d * unit, d * unit)?;
        let mlp2 = linear(&merger, "mlp.2", c.out_hidden_size, d * unit)?;
        let head = (d / c.num_heads) as i64;
        let base = c.rope_parameters.as_ref().and_then(|r| r.rope_theta).unwrap_or(10000.0);
        // transformers: 1 / base^(arange(0, d/2, 2) / (d/2)).
        let inv_freq =
            Tensor::f_arange(head / 4, (Kind::Float, device))?.f_mul_scalar(-4.0 / head as f64 * base.ln())?.f_exp()?;
        Ok(QwenVision { config, patch, blocks, ln_q, mlp0, mlp2, inv_freq, device })
    }

    /// Encodes the patches `[t·h·w, patch_values]` of a grid of `t` temporal patches of `h x w` patches (the
    /// processor's order) into `[t, h·w/4, out]` merged tokens, with the signals `request` asks for.
    pub fn encode(
        &self,
        patches: &Tensor,
        grid: [usize; 3],
        request: SignalRequest,
    ) -> Result<QwenTap, QwenVisionError> {
        let _guard = tch::no_grad_guard();
        let c = &self.config;
        let [t, h, w] = grid;
        let m = c.spatial_merge_size;
        let bad = |reason: String| QwenVisionError::Input { what: "patches".into(), reason };
        if h % m != 0 || w % m != 0 || t == 0 || h == 0 || w == 0 {
            return Err(bad(format!("grid {grid:?}: height and width must be positive multiples of {m}")));
        }
        let want = [(t * h * w) as i64, c.patch_values() as i64];
        if patches.size() != want {
            return Err(bad(format!("shape {:?} for grid {grid:?}, expected {want:?}", patches.size())));
        }
        let (d, heads) = (c.hidden_size as i64, c.num_heads as i64);
        let head = d / heads;
        let unit = m * m;
        let (mh, mw) = (h / m, w / m);
        let per_frame = (h * w) as i64;
        let kind = self.patch.kind();
        let x = patches.f_to_device(self.device)?.f_to_kind(kind)?.f_matmul(&self.patch.f_tr()?)?;
        // Window order of one frame's merge units, the same for every frame.
        let win = windows(mh, mw, c.window_side(), unit);
        let unit_order: Vec<i64> =
            (0..t as i64).flat_map(|f| win.order.iter().map(move |&u| f * (mh * mw) as i64 + u)).collect();
        let unit_order = Tensor::from_slice(&unit_order).f_to_device(self.device)?;
        let permute = |x: &Tensor| -> Result<Tensor, tch::TchError> {
            let width = x.size()[1];
            x.f_reshape([-1, unit as i64, width])?.f_index_select(0, &unit_order)?.f_reshape([-1, width])
        };
        let mut x = permute(&x)?;
        // Rotary angles of every patch: (row, col) of the patch in its frame, in window order.
        let mut hw: Vec<f32> = Vec::with_capacity(2 * h * w);
        for br in 0..mh {
            for bc in 0..mw {
                for ir in 0..m {
                    for ic in 0..m {
                        hw.push((br * m + ir) as f32);
                        hw.push((bc * m + ic) as f32);
                    }
                }
            }
        }
        let ids = Tensor::from_slice(&hw).f_reshape([per_frame, 2])?.f_to_device(self.device)?;
        let freqs = ids.f_unsqueeze(-1)?.f_mul(&self.inv_freq)?.f_reshape([per_frame, head / 2])?; // [h θ, w θ]
        let angles = Tensor::f_cat(&[&freqs, &freqs], 1)?; // [P, head]
        let angles = permute(&angles.f_repeat([t as i64, 1])?)?;
        let (cos, sin) = (angles.f_cos()?.f_unsqueeze(1)?, angles.f_sin()?.f_unsqueeze(1)?); // [N, 1, head] f32
        let n = (t * h * w) as i64;
        let gather = Tensor::from_slice(&win.gather).f_to_device(self.device)?;
        let valid = Tensor::from_slice(&win.valid).f_to_device(self.device)?;
        let (count, width) = (win.count as i64, win.width as i64);
        // Rows of the window batch: frame f's windows read rows offset by f·P.
        let frame_offsets = Tensor::f_arange(t as i64, (Kind::Int64, self.device))?.f_mul_scalar(per_frame)?;
        let batch_rows =
            gather.f_reshape([1, count * width])?.f_add(&frame_offsets.f_unsqueeze(1)?)?.f_reshape([-1])?;
        let key_mask = valid
            .f_reshape([1, count, 1, 1, width])?
            .f_expand([t as i64, count, 1, 1, width], false)?
            .f_reshape([t as i64 * count, 1, 1, width])?;
        let real_rows = Tensor::from_slice(
            &(0..t as i64 * count * width).filter(|i| win.valid[(*i % (count * width)) as usize]).collect::<Vec<i64>>(),
        )
        .f_to_device(self.device)?;
        let signal_block = c.fullatt_block_indexes.iter().copied().filter(|&b| b < c.depth).max();
        let (mut attention, mut keys) = (None, None);
        for (i, b) in self.blocks.iter().enumerate() {
            let normed = rms(&x, &b.norm1)?;
            let qkv = normed.f_linear(&b.qkv.0, Some(&b.qkv.1))?.f_reshape([n, 3, heads, head])?;
            let (q, k, v) = (qkv.f_select(1, 0)?, qkv.f_select(1, 1)?, qkv.f_select(1, 2)?); // [N, H, hd]
            if Some(i) == signal_block && request.keys {
                keys = Some(pool(&k.f_to_kind(Kind::Float)?.f_mean_dim([1i64].as_slice(), false, Kind::Float)?, unit)?);
            }
            let rotate = |x: &Tensor| -> Result<Tensor, tch::TchError> {
                let x = x.f_to_kind(Kind::Float)?;
                let half = head / 2;
                let rot = Tensor::f_cat(&[x.f_narrow(2, half, half)?.f_neg()?, x.f_narrow(2, 0, half)?], 2)?;
                x.f_mul(&cos)?.f_add(&rot.f_mul(&sin)?)?.f_to_kind(kind)
            };
            let (q, k) = (rotate(&q)?, rotate(&k)?);
            let full = c.fullatt_block_indexes.contains(&i);
            let out = if full {
                // One sequence per frame: [t, H, P, hd].
                let frames = |x: &Tensor| x.f_reshape([t as i64, per_frame, heads, head])?.f_transpose(1, 2);
                let (qf, kf, vf) = (frames(&q)?, frames(&k)?, frames(&v)?);
                if Some(i) == signal_block && request.attention {
                    attention = Some(pool(&received(&qf, &kf, head)?.f_reshape([-1])?, unit)?);
                }
                let o = Tensor::f_scaled_dot_product_attention::<Tensor>(&qf, &kf, &vf, None, 0.0, false, None, false)?;
                o.f_transpose(1, 2)?.f_reshape([n, d])?
            } else {
                let windowed = |x: &Tensor| {
                    x.f_index_select(0, &batch_rows)?
                        .f_reshape([t as i64 * count, width, heads, head])?
                        .f_transpose(1, 2)
                };
                let (qw, kw, vw) = (windowed(&q)?, windowed(&k)?, windowed(&v)?);
                let o =
                    Tensor::f_scaled_dot_product_attention(&qw, &kw, &vw, Some(&key_mask), 0.0, false, None, false)?;
                o.f_transpose(1, 2)?.f_reshape([-1, d])?.f_index_select(0, &real_rows)?
            };
            x = x.f_add(&out.f_linear(&b.proj.0, Some(&b.proj.1))?)?;
            let normed = rms(&x, &b.norm2)?;
            let gated = normed
                .f_linear(&b.gate.0, Some(&b.gate.1))?
                .f_silu()?
                .f_mul(&normed.f_linear(&b.up.0, Some(&b.up.1))?)?;
            x = x.f_add(&gated.f_linear(&b.down.0, Some(&b.down.1))?)?;
        }
        let merged = rms(&x, &self.ln_q)?.f_reshape([-1, d * unit as i64])?;
        let merged = merged.f_linear(&self.mlp0.0, Some(&self.mlp0.1))?.f_gelu("none")?;
        let merged = merged.f_linear(&self.mlp2.0, Some(&self.mlp2.1))?;
        // Back from window order to (frame, row, col).
        let reverse = unit_order.f_argsort(0, false)?;
        let tokens = (mh * mw) as i64;
        let unwind = |x: Tensor| -> Result<Tensor, tch::TchError> {
            let x = x.f_index_select(0, &reverse)?;
            let size = x.size();
            let mut shape = vec![t as i64, tokens];
            shape.extend_from_slice(&size[1..]);
            x.f_reshape(shape.as_slice())
        };
        Ok(QwenTap {
            features: unwind(merged)?,
            attention: attention.map(unwind).transpose()?,
            keys: keys.map(unwind).transpose()?,
        })
    }

    /// Where the tensors live.
    pub fn device(&self) -> Device {
        self.device
    }
}

/// transformers' `Qwen2_5_VLRMSNorm`: normalised in f32, scaled in the input dtype (eps 1e-6).
fn rms(x: &Tensor, weight: &Tensor) -> Result<Tensor, tch::TchError> {
    let kind = x.kind();
    let f = x.f_to_kind(Kind::Float)?;
    let var = f.f_pow_tensor_scalar(2)?.f_mean_dim([-1i64].as_slice(), true, Kind::Float)?;
    let normed = f.f_mul(&var.f_add_scalar(1e-6)?.f_rsqrt()?)?.f_to_kind(kind)?;
    weight.f_mul(&normed)
}

/// Mean over each run of `unit` consecutive rows (a merged token's patches in window order): `[N, ...] ->
/// [N/unit, ...]`.
fn pool(x: &Tensor, unit: usize) -> Result<Tensor, tch::TchError> {
    let size = x.size();
    let mut shape = vec![size[0] / unit as i64, unit as i64];
    shape.extend_from_slice(&size[1..]);
    x.f_reshape(shape.as_slice())?.f_mean_dim([1i64].as_slice(), false, Kind::Float)
}

/// The attention each patch receives in its frame, `softmax(Q Kᵀ/√d)` averaged over heads and queries, one frame
/// at a time (`heads x P x P` at once): `[t, P]` f32 from `[t, H, P, hd]`.
fn received(q: &Tensor, k: &Tensor, head: i64) -> Result<Tensor, tch::TchError> {
    let rows = (0..q.size()[0])
        .map(|f| {
            let (qf, kf) = (q.f_select(0, f)?.f_to_kind(Kind::Float)?, k.f_select(0, f)?.f_to_kind(Kind::Float)?);
            let scores = qf.f_matmul(&kf.f_transpose(1, 2)?)?.f_div_scalar((head as f64).sqrt())?;
            scores.f_softmax(-1, Kind::Float)?.f_mean_dim([0i64, 1].as_slice(), false, Kind::Float)?.f_unsqueeze(0)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::f_cat(&rows, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_get_vision_window_index() {
        // A 3 x 5 merged grid with 2 x 2 windows: windows (0,0),(0,1),(0,2),(1,0),(1,1),(1,2) of 4,4,2,2,2,1 units.
        let w = windows(3, 5, 2, 4);
        assert_eq!(w.order, vec![0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]);
        assert_eq!((w.count, w.width), (6, 16));
        let lengths: Vec<usize> = w.valid.chunks(16).map(|c| c.iter().filter(|&&v| v).count()).collect();
        assert_eq!(lengths, vec![16, 16, 8, 8, 8, 4]);
        // The third window's rows start after the first two windows' 32 patch rows.
        assert_eq!(w.gather[32..34], [32, 33]);
    }
}
