//! The Qwen-VL vision towers on libtorch: native resolution patches of `temporal_patch_size x patch_size²` pixels,
//! 2-D rotary embeddings and the 2 x 2 patch merger that makes the tokens the LLM sees.
//!
//! - Qwen2.5-VL (transformers' `Qwen2_5_VisionTransformerPretrainedModel`): windowed attention with full attention
//!   in `fullatt_block_indexes`, RMSNorm, a SwiGLU MLP, a patch embedding without bias.
//! - Qwen3-VL (`Qwen3VLVisionModel`): full attention in every block, LayerNorm, a `gelu_pytorch_tanh` MLP, a patch
//!   embedding with bias, a learned `sqrt(num_position_embeddings)²` position table resampled bilinearly
//!   (`align_corners=True`) to each grid and added after the patch embedding, and DeepStack: after each block of
//!   `deepstack_visual_indexes` a merger of its own (LayerNorm over the 4 patches' concatenation) turns the states
//!   into one more plane of merged tokens, which the decoder adds to its first layers' visual rows.
//!
//! ```text
//! x      = patches · W_patchᵀ                       (Conv3d with stride = kernel: a linear map of each patch)
//! rotary = [h·θ, w·θ, h·θ, w·θ]                      (θ_i = base^(−4i/d_head), i < d_head/4; rotate_half)
//! block  = x + proj(attn(norm1(x)));  + mlp(norm2(·))  attention within a window of (window_size/patch/merge)²
//!          merged tokens of one frame, or the whole frame in the full-attention blocks
//! tokens = mlp2(gelu(mlp0(ln_q(x) viewed as [N/4, 4·D])))        in (frame, merged row, merged col) order
//! Qwen3: x += Σ_taps w · pos_table[tap];  deepstack_l = fc2(gelu(fc1(norm_l(x_l viewed as [N/4, 4·D]))))
//! ```
//!
//! Patches come in the processor's order: per temporal patch, merge blocks row by row, each block's 2 x 2 patches
//! row by row. Every temporal patch (two frames of a video, or one image) is its own attention sequence (transformers'
//! `cu_seqlens`), so a batch of temporal patches of one grid is exact, and so is encoding a long video a batch at a
//! time. Windows are batched with a key mask (no `N x N` score matrix: `windows x W²`); a frame's full attention is
//! one fused SDPA per block.
//!
//! Signals \[project\], at the last full-attention block (the last block on Qwen3-VL; Qwen has no CLS token): the mean attention each patch
//! receives in its frame (softmax over keys, mean over heads and queries, one frame at a time) and the keys before
//! rotary embedding averaged over heads, both pooled (mean) over each merged token's 2 x 2 patches: how VisPruner
//! and HoliTom's Qwen ports score tokens.
//!
//! Complexity per frame of `P` patches: full blocks `O(P²·D)`, window blocks `O(P·W·D)` with `W` patches per
//! window.

use crate::arch::qwen2_5_vl::QwenGeneration;
use crate::arch::SignalRequest;
pub use crate::qwen_grid::QwenVisionConfig;
use crate::qwen_grid::{interpolation_taps, patch_positions, Windows};
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

/// RMSNorm (Qwen2.5-VL) or LayerNorm with bias (Qwen3-VL), eps 1e-6 both.
enum Norm {
    Rms(Tensor),
    Layer(Tensor, Tensor),
}

impl Norm {
    fn apply(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Norm::Rms(w) => rms(x, w),
            Norm::Layer(w, b) => {
                let width = [*w.size().first().unwrap_or(&0)];
                x.f_layer_norm(width.as_slice(), Some(w), Some(b), 1e-6, false)
            }
        }
    }
}

/// SwiGLU (Qwen2.5-VL) or `fc2(gelu_tanh(fc1 x))` (Qwen3-VL).
enum Mlp {
    Gated { gate: (Tensor, Tensor), up: (Tensor, Tensor), down: (Tensor, Tensor) },
    Plain { fc1: (Tensor, Tensor), fc2: (Tensor, Tensor) },
}

impl Mlp {
    fn apply(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Mlp::Gated { gate, up, down } => {
                let g = x.f_linear(&gate.0, Some(&gate.1))?.f_silu()?.f_mul(&x.f_linear(&up.0, Some(&up.1))?)?;
                g.f_linear(&down.0, Some(&down.1))
            }
            Mlp::Plain { fc1, fc2 } => x.f_linear(&fc1.0, Some(&fc1.1))?.f_gelu("tanh")?.f_linear(&fc2.0, Some(&fc2.1)),
        }
    }
}

/// A patch merger: the norm over each patch (`post_shuffle = false`) or over the 4 patches' concatenation
/// (DeepStack's), then `fc2(gelu(fc1 ·))` on the concatenation.
struct Merger {
    norm: Norm,
    post_shuffle: bool,
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

impl Merger {
    fn apply(&self, x: &Tensor, unit: i64) -> Result<Tensor, tch::TchError> {
        let wide = x.size()[1] * unit;
        let merged = match self.post_shuffle {
            true => self.norm.apply(&x.f_reshape([-1, wide])?)?,
            false => self.norm.apply(x)?.f_reshape([-1, wide])?,
        };
        merged.f_linear(&self.fc1.0, Some(&self.fc1.1))?.f_gelu("none")?.f_linear(&self.fc2.0, Some(&self.fc2.1))
    }
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    mlp: Mlp,
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
    /// Qwen3-VL's DeepStack planes, one `[t, h·w/4, out_hidden_size]` per entry of `deepstack_visual_indexes`.
    pub deepstack: Vec<Tensor>,
}

/// A loaded Qwen2.5-VL or Qwen3-VL vision tower.
pub struct QwenVision {
    /// Its configuration.
    pub config: QwenVisionConfig,
    /// Which tower (the family's generation).
    pub tower: QwenGeneration,
    patch: Tensor,
    patch_bias: Option<Tensor>,
    /// Qwen3-VL's learned `[side², D]` position table.
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    /// `[d_head/4]` f32.
    inv_freq: Tensor,
    device: Device,
}

impl QwenVision {
    /// Loads the tower of a `qwen2_5_vl` or `qwen3_vl` directory (`model.visual.*` as transformers 5 saves it, or
    /// `visual.*` as the released checkpoints store it) onto `device`, computing in `kind`.
    pub fn load_as(dir: &Path, device: Device, kind: Kind) -> Result<Self, QwenVisionError> {
        let path = dir.join("config.json");
        let bad = |reason: String| QwenVisionError::Input { what: path.display().to_string(), reason };
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        let model_type = json["model_type"].as_str().unwrap_or_default();
        let tower = QwenGeneration::from_model_type(model_type)
            .ok_or_else(|| bad(format!("model_type `{model_type}` is not a Qwen-VL tower (qwen2_5_vl, qwen3_vl)")))?;
        let config = QwenVisionConfig::deserialize(json.get("vision_config").unwrap_or(&serde_json::Value::Null))
            .map_err(|e| bad(format!("vision_config: {e}")))?;
        let act = match tower {
            QwenGeneration::Qwen25 => "silu",
            QwenGeneration::Qwen3 => "gelu_pytorch_tanh",
        };
        if config.hidden_act != act {
            return Err(bad(format!("vision_config.hidden_act {:?}: this tower's MLP is {act}", config.hidden_act)));
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
        if let Some(&i) = config.deepstack_visual_indexes.iter().find(|&&i| i >= config.depth) {
            return Err(bad(format!("vision_config.deepstack_visual_indexes: block {i} of {}", config.depth)));
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
        let norm = |w: &Weights<'_>, name: &str, width: usize| -> Result<Norm, WeightError> {
            Ok(match tower {
                QwenGeneration::Qwen25 => Norm::Rms(w.get(&format!("{name}.weight"), &[width])?),
                QwenGeneration::Qwen3 => {
                    Norm::Layer(w.get(&format!("{name}.weight"), &[width])?, w.get(&format!("{name}.bias"), &[width])?)
                }
            })
        };
        let patch = root
            .get("patch_embed.proj.weight", &[d, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size])?
            .f_reshape([d as i64, c.patch_values() as i64])?;
        let patch_bias = match tower {
            QwenGeneration::Qwen25 => None,
            QwenGeneration::Qwen3 => Some(root.get("patch_embed.proj.bias", &[d])?),
        };
        let blocks = (0..c.depth)
            .map(|i| {
                let b = root.pp(&format!("blocks.{i}"));
                let mlp = match tower {
                    QwenGeneration::Qwen25 => Mlp::Gated {
                        gate: linear(&b, "mlp.gate_proj", m, d)?,
                        up: linear(&b, "mlp.up_proj", m, d)?,
                        down: linear(&b, "mlp.down_proj", d, m)?,
                    },
                    QwenGeneration::Qwen3 => Mlp::Plain {
                        fc1: linear(&b, "mlp.linear_fc1", m, d)?,
                        fc2: linear(&b, "mlp.linear_fc2", d, m)?,
                    },
                };
                Ok(Block {
                    norm1: norm(&b, "norm1", d)?,
                    norm2: norm(&b, "norm2", d)?,
                    qkv: linear(&b, "attn.qkv", 3 * d, d)?,
                    proj: linear(&b, "attn.proj", d, d)?,
                    mlp,
                })
            })
            .collect::<Result<Vec<_>, WeightError>>()?;
        let unit = c.spatial_merge_size * c.spatial_merge_size;
        let (wide, out) = (d * unit, c.out_hidden_size);
        let (merger, deepstack, pos_embed) = match tower {
            QwenGeneration::Qwen25 => {
                let w = root.pp("merger");
                let merger = Merger {
                    norm: norm(&w, "ln_q", d)?,
                    post_shuffle: false,
                    fc1: linear(&w, "mlp.0", wide, wide)?,
                    fc2: linear(&w, "mlp.2", out, wide)?,
                };
                (merger, Vec::new(), None)
            }
            QwenGeneration::Qwen3 => {
                let merger_at = |w: Weights<'_>, post_shuffle: bool| -> Result<Merger, WeightError> {
                    Ok(Merger {
                        norm: norm(&w, "norm", if post_shuffle { wide } else { d })?,
                        post_shuffle,
                        fc1: linear(&w, "linear_fc1", wide, wide)?,
                        fc2: linear(&w, "linear_fc2", out, wide)?,
                    })
                };
                let deepstack = (0..c.deepstack_visual_indexes.len())
                    .map(|i| merger_at(root.pp(&format!("deepstack_merger_list.{i}")), true))
                    .collect::<Result<Vec<_>, _>>()?;
                let entries = c.num_position_embeddings.unwrap_or(2304);
                let side = (entries as f64).sqrt().round() as usize;
                if side * side != entries {
                    return Err(bad(format!("vision_config.num_position_embeddings {entries} is not a square")));
                }
                (merger_at(root.pp("merger"), false)?, deepstack, Some(root.get("pos_embed.weight", &[entries, d])?))
            }
        };
        let head = (d / c.num_heads) as i64;
        let base = c.rope_parameters.as_ref().and_then(|r| r.rope_theta).unwrap_or(10000.0);
        // transformers: 1 / base^(arange(0, d/2, 2) / (d/2)).
        let inv_freq =
            Tensor::f_arange(head / 4, (Kind::Float, device))?.f_mul_scalar(-4.0 / head as f64 * base.ln())?.f_exp()?;
        Ok(QwenVision { config, tower, patch, patch_bias, pos_embed, blocks, merger, deepstack, inv_freq, device })
    }

    /// Merged tokens per window side (Qwen3-VL and any grid within one window: the whole frame).
    fn window_side(&self, mh: usize, mw: usize) -> usize {
        match self.tower {
            QwenGeneration::Qwen25 => self.config.window_side(mh, mw),
            QwenGeneration::Qwen3 => mh.max(mw).max(1),
        }
    }

    /// Whether block `i` attends to whole frames.
    fn full_attention(&self, i: usize) -> bool {
        self.tower == QwenGeneration::Qwen3 || self.config.fullatt_block_indexes.contains(&i)
    }

    /// Qwen3-VL's learned positions of one `h x w` frame in merge-block order, `[h·w, D]`: transformers'
    /// `get_vision_interpolation_indices_and_weights` (bilinear, `align_corners=True`, border taps clamped) as a
    /// weighted sum of 4 table rows per patch.
    fn learned_positions(&self, table: &Tensor, h: usize, w: usize) -> Result<Tensor, tch::TchError> {
        let side = (table.size()[0] as f64).sqrt().round() as usize;
        let (index, weight) = interpolation_taps(h, w, side, self.config.spatial_merge_size);
        let index = Tensor::from_slice(&index).f_to_device(self.device)?;
        let weight = Tensor::from_slice(&weight).f_reshape([(h * w) as i64, 4, 1])?.f_to_device(self.device)?;
        let rows = table.f_index_select(0, &index)?.f_reshape([(h * w) as i64, 4, -1])?;
        rows.f_mul(&weight)?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_to_kind(table.kind())
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
        let mut x = patches.f_to_device(self.device)?.f_to_kind(kind)?.f_matmul(&self.patch.f_tr()?)?;
        if let Some(bias) = &self.patch_bias {
            x = x.f_add(bias)?;
        }
        if let Some(table) = &self.pos_embed {
            let frame = self.learned_positions(table, h, w)?;
            x = x.f_add(&frame.f_repeat([t as i64, 1])?)?;
        }
        // Window order of one frame's merge units, the same for every frame (the identity with one window).
        let win = Windows::new(mh, mw, self.window_side(mh, mw), unit);
        let unit_order: Vec<i64> =
            (0..t as i64).flat_map(|f| win.order.iter().map(move |&u| f * (mh * mw) as i64 + u)).collect();
        let unit_order = Tensor::from_slice(&unit_order).f_to_device(self.device)?;
        let permute = |x: &Tensor| -> Result<Tensor, tch::TchError> {
            let width = x.size()[1];
            x.f_reshape([-1, unit as i64, width])?.f_index_select(0, &unit_order)?.f_reshape([-1, width])
        };
        let mut x = permute(&x)?;
        // Rotary angles of every patch: (row, col) of the patch in its frame, in window order.
        let hw: Vec<f32> = patch_positions(h, w, m).into_iter().map(|v| v as f32).collect();
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
        let signal_block = (0..c.depth).filter(|&b| self.full_attention(b)).max();
        let (mut attention, mut keys) = (None, None);
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let normed = b.norm1.apply(&x)?;
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
            let full = self.full_attention(i);
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
            x = x.f_add(&b.mlp.apply(&b.norm2.apply(&x)?)?)?;
            if let Some(level) = c.deepstack_visual_indexes.iter().position(|&l| l == i) {
                if let Some(merger) = self.deepstack.get(level) {
                    deepstack.push(merger.apply(&x, unit as i64)?);
                }
            }
        }
        let merged = self.merger.apply(&x, unit as i64)?;
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
            deepstack: deepstack.into_iter().map(unwind).collect::<Result<_, _>>()?,
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
