//! The CLIP vision tower (transformers' `CLIPVisionModel`) on libtorch, exposing what the pruners need: the hidden
//! states of every layer, the last layer's CLS -> patch attention averaged over heads, and its keys averaged over
//! heads (ALGORITHMS.md §1.8). Loads a standalone `CLIPVisionModel` (no prefix) or the tower inside a full `CLIPModel`
//! or LLaVA checkpoint (prefix `vision_model.` / `vision_tower.vision_model.`).
//!
//! ```text
//! x = [class_embedding; conv_patch(pixels)] + position_embedding;  x = pre_layrnorm(x)
//! per layer: x += out(attn(ln1(x)));  x += fc2(quick_gelu(fc1(ln2(x))))     quick_gelu(z) = z·σ(1.702 z)
//! pooled = post_layernorm(x[:, 0])
//! ```
//!
//! Attention runs through fused scaled-dot-product attention; the last layer's CLS row is recomputed as
//! `softmax(q_cls Kᵀ / √d)` per head, so no full attention map is ever materialised.

use crate::safetensors::{Safetensors, SafetensorsError};
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// Why the tower could not load or run.
#[derive(Debug, Error)]
pub enum ClipError {
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// config.json could not be read.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The `config.json` keys of a CLIP vision tower (transformers' names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipVisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-5
}

struct Layer {
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    out: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

/// What one forward pass exposes.
pub struct VisionOutput {
    /// `layers + 1` tensors `[B, 1+N, D]`: the embeddings (after the pre-layernorm), then every layer.
    pub hidden_states: Vec<Tensor>,
    /// Last layer, CLS -> patch attention averaged over heads, `[B, N]`.
    pub cls_attention: Tensor,
    /// Last layer keys averaged over heads, `[B, 1+N, head_dim]`.
    pub keys: Tensor,
    /// `post_layernorm` of the last CLS state, `[B, D]`.
    pub pooled: Tensor,
}

/// A loaded CLIP vision tower.
pub struct ClipVision {
    /// Its configuration.
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    patch: Tensor,
    position: Tensor,
    pre_ln: (Tensor, Tensor),
    post_ln: (Tensor, Tensor),
    layers: Vec<Layer>,
}

impl ClipVision {
    /// Loads `config.json` + `model.safetensors` from `dir` onto `device`; finds the tower's prefix itself.
    pub fn load(dir: &Path, device: Device) -> Result<Self, ClipError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        // A full CLIP or LLaVA config nests the tower's keys.
        let section = json.get("vision_config").cloned().unwrap_or(json);
        let config: ClipVisionConfig = serde_json::from_value(section)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        let st = Safetensors::open(&dir.join("model.safetensors"))?;
        let prefix = ["", "vision_model.", "vision_tower.vision_model.", "model.vision_tower.vision_model."]
            .into_iter()
            .find(|p| st.contains(&format!("{p}embeddings.class_embedding")))
            .unwrap_or("");
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let patches = (config.image_size / config.patch_size).pow(2);
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ClipError> {
            let v = st.expect(&format!("{prefix}{name}"), shape)?;
            let dims: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
            Ok(Tensor::from_slice(&v).f_reshape(dims.as_slice())?.f_to_device(device)?)
        };
        let pair = |name: &str, out: usize, inp: Option<usize>| -> Result<(Tensor, Tensor), ClipError> {
            let w = match inp {
                Some(i) => get(&format!("{name}.weight"), &[out, i])?,
                None => get(&format!("{name}.weight"), &[out])?,
            };
            Ok((w, get(&format!("{name}.bias"), &[out])?))
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                Ok(Layer {
                    ln1: pair(&format!("{p}.layer_norm1"), d, None)?,
                    ln2: pair(&format!("{p}.layer_norm2"), d, None)?,
                    q: pair(&format!("{p}.self_attn.q_proj"), d, Some(d))?,
                    k: pair(&format!("{p}.self_attn.k_proj"), d, Some(d))?,
                    v: pair(&format!("{p}.self_attn.v_proj"), d, Some(d))?,
                    out: pair(&format!("{p}.self_attn.out_proj"), d, Some(d))?,
                    fc1: pair(&format!("{p}.mlp.fc1"), m, Some(d))?,
                    fc2: pair(&format!("{p}.mlp.fc2"), d, Some(m))?,
                })
            })
            .collect::<Result<Vec<_>, ClipError>>()?;
        Ok(ClipVision {
            class_embedding: get("embeddings.class_embedding", &[d])?,
            patch: get("embeddings.patch_embedding.weight", &[d, 3, config.patch_size, config.patch_size])?,
            position: get("embeddings.position_embedding.weight", &[patches + 1, d])?,
            pre_ln: pair("pre_layrnorm", d, None)?,
            post_ln: pair("post_layernorm", d, None)?,
            layers,
            config,
        })
    }

    /// Runs `pixels` `[B, 3, H, W]` (preprocessed) through the tower.
    pub fn forward(&self, pixels: &Tensor) -> Result<VisionOutput, ClipError> {
        let _guard = tch::no_grad_guard();
        let c = &self.config;
        let (d, heads) = (c.hidden_size as i64, c.num_attention_heads as i64);
        let head_dim = d / heads;
        let b = pixels.size()[0];
        let ln = |x: &Tensor, (w, bias): &(Tensor, Tensor)| {
            x.f_layer_norm([d].as_slice(), Some(w), Some(bias), c.layer_norm_eps, false)
        };
        let lin = |x: &Tensor, (w, bias): &(Tensor, Tensor)| x.f_linear(w, Some(bias));
        let stride = c.patch_size as i64;
        let patches = pixels.f_conv2d::<&Tensor>(
            &self.patch,
            None,
            [stride, stride].as_slice(),
            [0i64, 0].as_slice(),
            [1i64, 1].as_slice(),
            1,
        )?;
        let patches = patches.f_flatten(2, 3)?.f_transpose(1, 2)?; // [B, N, D]
        let cls = self.class_embedding.f_reshape([1, 1, d])?.f_expand([b, 1, d], false)?;
        let mut x = ln(&Tensor::f_cat(&[cls, patches], 1)?.f_add(&self.position.f_unsqueeze(0)?)?, &self.pre_ln)?;
        let mut hidden_states = vec![x.shallow_clone()];
        let tokens = x.size()[1];
        let mut last = None;
        for (i, l) in self.layers.iter().enumerate() {
            let h = ln(&x, &l.ln1)?;
            let split = |t: Tensor| t.f_reshape([b, tokens, heads, head_dim])?.f_transpose(1, 2);
            let (q, k, v) = (split(lin(&h, &l.q)?)?, split(lin(&h, &l.k)?)?, split(lin(&h, &l.v)?)?);
            let attn = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
            if i + 1 == self.layers.len() {
                // The CLS row alone: softmax(q_cls Kᵀ / √d) per head.
                let scores =
                    q.f_narrow(2, 0, 1)?.f_matmul(&k.f_transpose(2, 3)?)?.f_div_scalar((head_dim as f64).sqrt())?;
                let probs = scores.f_softmax(-1, Kind::Float)?.f_squeeze_dim(2)?; // [B, H, 1+N]
                let cls_attention =
                    probs.f_mean_dim([1i64].as_slice(), false, Kind::Float)?.f_narrow(1, 1, tokens - 1)?;
                let keys = k.f_mean_dim([1i64].as_slice(), false, Kind::Float)?;
                last = Some((cls_attention, keys));
            }
            let attn = attn.f_transpose(1, 2)?.f_reshape([b, tokens, d])?;
            x = x.f_add(&lin(&attn, &l.out)?)?;
            let h = lin(&ln(&x, &l.ln2)?, &l.fc1)?;
            let h = h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?;
            x = x.f_add(&lin(&h, &l.fc2)?)?;
            hidden_states.push(x.shallow_clone());
        }
        let pooled = ln(&x.f_select(1, 0)?, &self.post_ln)?;
        let (cls_attention, keys) = match last {
            Some(v) => v,
            None => (
                Tensor::zeros([b, tokens - 1], (Kind::Float, x.device())),
                Tensor::zeros([b, tokens, head_dim], (Kind::Float, x.device())),
            ),
        };
        Ok(VisionOutput { hidden_states, cls_attention, keys, pooled })
    }
}
