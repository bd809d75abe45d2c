//! ViT vision towers on libtorch — CLIP (transformers' `CLIPVisionModel`) and SigLIP (`SiglipVisionModel`) —
//! exposing what the pruners need: the hidden states of every layer, an attention signal over the patches averaged
//! over heads (CLIP: the last layer's CLS row; SigLIP, which has no CLS token: the pooling head's probe attention,
//! as FastVID uses), and the last layer's keys averaged over heads (ALGORITHMS.md §1.8). Loads a standalone tower
//! (no prefix) or the tower inside a full CLIP/SigLIP or LLaVA checkpoint (`vision_model.`,
//! `vision_tower.vision_model.`).
//!
//! ```text
//! CLIP:   x = pre_layrnorm([class_embedding; conv(pixels)] + pos);  act = quick_gelu(z) = z·σ(1.702 z)
//!         pooled = post_layernorm(x[:, 0])
//! SigLIP: x = conv(pixels) + bias + pos (no CLS);  act = gelu (tanh approximation);  out = post_layernorm(x)
//!         pooled = head: probe attends over out (multi-head), then + mlp(layernorm(·))
//! per layer: x += out_proj(attn(ln1(x)));  x += fc2(act(fc1(ln2(x))))
//! ```
//!
//! Attention runs through fused scaled-dot-product attention; the CLS row and the probe row are recomputed as
//! `softmax(q Kᵀ / √d)` per head, so no full attention map is ever materialised.

use crate::safetensors::{Checkpoint, SafetensorsError};
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// Why the tower could not load or run.
#[derive(Debug, Error)]
pub enum ClipError {
    /// A weight is missing or does not fit the configuration.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From libtorch.
    #[error("libtorch: {}", crate::weights::brief(.0))]
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

/// Which family a tower belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerKind {
    /// OpenAI CLIP ViT (CLS token, pre-layernorm, quick GELU).
    Clip,
    /// SigLIP (no CLS token, patch bias, tanh GELU, optional attention-pooling head).
    Siglip,
}

/// The `config.json` keys of a vision tower (transformers' names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VisionConfig {
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
    /// `clip_vision_model`, `siglip_vision_model`, ...
    #[serde(default)]
    pub model_type: String,
    /// SigLIP: whether the attention-pooling head exists.
    #[serde(default = "default_true")]
    pub vision_use_head: bool,
    /// The MLP activation (`quick_gelu`, `gelu`, `gelu_pytorch_tanh`, ...); absent: the family's default.
    #[serde(default)]
    pub hidden_act: Option<String>,
}

/// The MLP activation of a CLIP/SigLIP encoder layer, from `hidden_act` (transformers' `ACT2FN` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `z·σ(1.702 z)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU (`gelu`; LAION/OpenCLIP conversions).
    Gelu,
    /// The tanh approximation (`gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`; SigLIP).
    GeluTanh,
}

impl Activation {
    /// Parses `hidden_act`; absent gives `default` (the family's own: CLIP quick GELU, SigLIP tanh GELU).
    pub fn parse(name: Option<&str>, default: Activation) -> Result<Self, ClipError> {
        Ok(match name {
            None => default,
            Some("quick_gelu") => Activation::QuickGelu,
            Some("gelu") => Activation::Gelu,
            Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") => Activation::GeluTanh,
            Some(other) => {
                return Err(ClipError::Config {
                    path: "config.json".into(),
                    reason: format!(
                        "hidden_act = {other:?} is not supported (known: quick_gelu, gelu, gelu_pytorch_tanh, gelu_new)"
                    ),
                })
            }
        })
    }

    /// Applies the activation.
    pub fn apply(self, h: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Activation::QuickGelu => h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?),
            Activation::Gelu => h.f_gelu("none"),
            Activation::GeluTanh => h.f_gelu("tanh"),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

/// One pre-layernorm transformer block of CLIP and SigLIP, shared by their vision and text towers:
/// `x += out_proj(attn(ln1(x)))`, then `x += fc2(act(fc1(ln2(x))))`.
pub(crate) struct EncoderLayer {
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    out: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

/// The shapes an encoder block runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockShape {
    /// Width.
    pub hidden: i64,
    /// Attention heads.
    pub heads: i64,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// MLP activation.
    pub act: Activation,
    /// Causal self-attention (CLIP's text tower).
    pub causal: bool,
}

impl EncoderLayer {
    /// Loads block `i` from `w` (`encoder.layers.{i}.*` under its prefix), width `d`, MLP width `m`.
    pub(crate) fn load(w: &crate::weights::Weights<'_>, i: usize, d: usize, m: usize) -> Result<Self, ClipError> {
        let p = format!("encoder.layers.{i}");
        let pair = |name: &str, out: usize, inp: Option<usize>| -> Result<(Tensor, Tensor), ClipError> {
            let weight = match inp {
                Some(i) => w.get(&format!("{p}.{name}.weight"), &[out, i])?,
                None => w.get(&format!("{p}.{name}.weight"), &[out])?,
            };
            Ok((weight, w.get(&format!("{p}.{name}.bias"), &[out])?))
        };
        Ok(EncoderLayer {
            ln1: pair("layer_norm1", d, None)?,
            ln2: pair("layer_norm2", d, None)?,
            q: pair("self_attn.q_proj", d, Some(d))?,
            k: pair("self_attn.k_proj", d, Some(d))?,
            v: pair("self_attn.v_proj", d, Some(d))?,
            out: pair("self_attn.out_proj", d, Some(d))?,
            fc1: pair("mlp.fc1", m, Some(d))?,
            fc2: pair("mlp.fc2", d, Some(m))?,
        })
    }

    /// The block on `x` `[B, T, D]`. Returns the new states and the block's queries and keys
    /// `[B, heads, T, head_dim]`, from which the towers compute their signals.
    pub(crate) fn forward(&self, x: &Tensor, s: BlockShape) -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
        let (b, tokens) = (x.size()[0], x.size()[1]);
        let ln = |x: &Tensor, (w, bias): &(Tensor, Tensor)| {
            x.f_layer_norm([s.hidden].as_slice(), Some(w), Some(bias), s.eps, false)
        };
        let lin = |x: &Tensor, (w, bias): &(Tensor, Tensor)| x.f_linear(w, Some(bias));
        let split = |t: Tensor| t.f_reshape([b, tokens, s.heads, s.hidden / s.heads])?.f_transpose(1, 2);
        let h = ln(x, &self.ln1)?;
        let (q, k, v) = (split(lin(&h, &self.q)?)?, split(lin(&h, &self.k)?)?, split(lin(&h, &self.v)?)?);
        let attn = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, s.causal, None, false)?;
        let attn = attn.f_transpose(1, 2)?.f_reshape([b, tokens, s.hidden])?;
        let x = x.f_add(&lin(&attn, &self.out)?)?;
        let x = x.f_add(&lin(&s.act.apply(&lin(&ln(&x, &self.ln2)?, &self.fc1)?)?, &self.fc2)?)?;
        Ok((x, q, k))
    }
}

/// What one forward pass exposes.
pub struct VisionOutput {
    /// `layers + 1` tensors `[B, 1+N, D]`: the embeddings (after the pre-layernorm), then every layer.
    pub hidden_states: Vec<Tensor>,
    /// Attention over the patches averaged over heads, `[B, N]`: CLIP's last-layer CLS row, or SigLIP's probe
    /// attention (`None` for a SigLIP tower without a head).
    pub cls_attention: Option<Tensor>,
    /// Last layer keys averaged over heads, `[B, tokens, head_dim]` (tokens = 1+N for CLIP, N for SigLIP).
    pub keys: Tensor,
    /// CLIP: `post_layernorm` of the last CLS state; SigLIP: the head's output (`None` without a head), `[B, D]`.
    pub pooled: Option<Tensor>,
    /// SigLIP only: `post_layernorm` of the last hidden state, `[B, N, D]` (transformers' `last_hidden_state`).
    pub last_hidden_state: Tensor,
}

pub use crate::arch::SignalRequest;

/// One layer's hidden states and signals, from [`VisionTower::tap`].
pub struct Tap {
    /// Hidden states `[B, T, D]` after the tapped layer (T = 1+N with CLIP's CLS token, N for SigLIP).
    pub hidden: Tensor,
    /// `[B, T]` attention per token (see [`SignalRequest::attention`]); CLIP's CLS row has the CLS column's own
    /// share in column 0.
    pub attention: Option<Tensor>,
    /// `[B, T, head_dim]` keys of the tapped layer, mean over heads.
    pub keys: Option<Tensor>,
}

struct Head {
    probe: Tensor,
    in_proj: (Tensor, Tensor),
    out_proj: (Tensor, Tensor),
    ln: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

/// A loaded vision tower.
pub struct VisionTower {
    /// Its configuration.
    pub config: VisionConfig,
    /// CLIP or SigLIP.
    pub kind: TowerKind,
    class_embedding: Option<Tensor>,
    patch: (Tensor, Option<Tensor>),
    position: Tensor,
    pre_ln: Option<(Tensor, Tensor)>,
    post_ln: (Tensor, Tensor),
    layers: Vec<EncoderLayer>,
    head: Option<Head>,
    act: Activation,
}

impl VisionTower {
    /// Loads `config.json` + `model.safetensors` from `dir` onto `device`; finds the tower's prefix itself.
    pub fn load(dir: &Path, device: Device) -> Result<Self, ClipError> {
        Self::load_as(dir, device, Kind::Float)
    }

    /// As [`VisionTower::load`], computing in `dtype` (`Float`, `Half`, `BFloat16`); attention signals stay f32.
    pub fn load_as(dir: &Path, device: Device, dtype: Kind) -> Result<Self, ClipError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        // A full CLIP or LLaVA config nests the tower's keys.
        let section = json.get("vision_config").cloned().unwrap_or(json);
        let config: VisionConfig = serde_json::from_value(section)
            .map_err(|e| ClipError::Config { path: config_path.display().to_string(), reason: e.to_string() })?;
        let kind = if config.model_type.starts_with("siglip") { TowerKind::Siglip } else { TowerKind::Clip };
        let st = Checkpoint::open(dir)?;
        let prefix = [
            "",
            "vision_model.",
            "vision_tower.vision_model.",
            "vision_tower.",
            "model.vision_tower.vision_model.",
            "model.vision_tower.",
        ]
        .into_iter()
        .find(|p| st.contains(&format!("{p}embeddings.position_embedding.weight")))
        .unwrap_or("");
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let patches = (config.image_size / config.patch_size).pow(2);
        let weights = crate::weights::Weights::new(&st, prefix, device, dtype);
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ClipError> { Ok(weights.get(name, shape)?) };
        let pair = |name: &str, out: usize, inp: Option<usize>| -> Result<(Tensor, Tensor), ClipError> {
            let w = match inp {
                Some(i) => get(&format!("{name}.weight"), &[out, i])?,
                None => get(&format!("{name}.weight"), &[out])?,
            };
            Ok((w, get(&format!("{name}.bias"), &[out])?))
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(&weights, i, d, m))
            .collect::<Result<Vec<_>, ClipError>>()?;
        let clip = kind == TowerKind::Clip;
        let default_act = if clip { Activation::QuickGelu } else { Activation::GeluTanh };
        let act = Activation::parse(config.hidden_act.as_deref(), default_act)?;
        let patch_w = get("embeddings.patch_embedding.weight", &[d, 3, config.patch_size, config.patch_size])?;
        let head = if !clip && config.vision_use_head {
            Some(Head {
                probe: get("head.probe", &[1, 1, d])?,
                in_proj: (
                    get("head.attention.in_proj_weight", &[3 * d, d])?,
                    get("head.attention.in_proj_bias", &[3 * d])?,
                ),
                out_proj: pair("head.attention.out_proj", d, Some(d))?,
                ln: pair("head.layernorm", d, None)?,
                fc1: pair("head.mlp.fc1", m, Some(d))?,
                fc2: pair("head.mlp.fc2", d, Some(m))?,
            })
        } else {
            None
        };
        Ok(VisionTower {
            class_embedding: if clip { Some(get("embeddings.class_embedding", &[d])?) } else { None },
            patch: (patch_w, if clip { None } else { Some(get("embeddings.patch_embedding.bias", &[d])?) }),
            position: get("embeddings.position_embedding.weight", &[patches + usize::from(clip), d])?,
            pre_ln: if clip { Some(pair("pre_layrnorm", d, None)?) } else { None },
            post_ln: pair("post_layernorm", d, None)?,
            layers,
            head,
            act,
            kind,
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
        let mut x = self.embed(pixels)?;
        let mut hidden_states = vec![x.shallow_clone()];
        let tokens = x.size()[1];
        let mut cls_attention = None;
        let mut keys = None;
        for (i, l) in self.layers.iter().enumerate() {
            let (next, q, k) = self.block(l, &x)?;
            if i + 1 == self.layers.len() {
                if self.kind == TowerKind::Clip {
                    cls_attention =
                        Some(row_attention(&q.f_narrow(2, 0, 1)?, &k, head_dim)?.f_narrow(1, 1, tokens - 1)?);
                }
                keys = Some(k.f_mean_dim([1i64].as_slice(), false, Kind::Float)?);
            }
            x = next;
            hidden_states.push(x.shallow_clone());
        }
        let keys = match keys {
            Some(k) => k,
            None => Tensor::zeros([b, tokens, head_dim], (x.kind(), x.device())),
        };
        let (pooled, last_hidden_state) = match self.kind {
            TowerKind::Clip => (Some(ln(&x.f_select(1, 0)?, &self.post_ln)?), x.shallow_clone()),
            TowerKind::Siglip => {
                let out = ln(&x, &self.post_ln)?;
                let pooled = match &self.head {
                    Some(head) => {
                        let (pooled, probe) = self.head_attend(head, &out)?;
                        cls_attention = Some(probe);
                        Some(pooled)
                    }
                    None => None,
                };
                (pooled, out)
            }
        };
        Ok(VisionOutput { hidden_states, cls_attention, keys, pooled, last_hidden_state })
    }
}

impl VisionTower {
    /// Runs `pixels` `[B, 3, H, W]` up to `hidden_states[layer]` (0 = the embeddings, `i` = after block `i`), with
    /// the signals `request` asks for computed from the attention of the block that produced it (what transformers'
    /// `attentions[layer - 1]` holds). Blocks after `layer` are not run and no other layer's states are kept: this
    /// is the tap the pipeline uses (VisionZip's layer -2 attention and keys, the feature layer of LLaVA).
    ///
    /// Cost: the blocks up to `layer`; the mean received attention adds one `T x T` score matrix per image and head
    /// at that block, built one image at a time so memory stays `heads x T x T`.
    pub fn tap(&self, pixels: &Tensor, layer: usize, request: SignalRequest) -> Result<Tap, ClipError> {
        let _guard = tch::no_grad_guard();
        let c = &self.config;
        if layer > self.layers.len() {
            return Err(ClipError::Config {
                path: "config.json".into(),
                reason: format!(
                    "vision feature layer {layer} does not exist: the tower has {} layers",
                    self.layers.len()
                ),
            });
        }
        let head_dim = (c.hidden_size / c.num_attention_heads) as i64;
        let mut x = self.embed(pixels)?;
        let (mut attention, mut keys) = (None, None);
        for (i, l) in self.layers.iter().take(layer).enumerate() {
            let (next, q, k) = self.block(l, &x)?;
            if i + 1 == layer {
                if request.attention {
                    attention = Some(match self.kind {
                        TowerKind::Clip => row_attention(&q.f_narrow(2, 0, 1)?, &k, head_dim)?,
                        TowerKind::Siglip => received_attention(&q, &k, head_dim)?,
                    });
                }
                if request.keys {
                    keys = Some(k.f_mean_dim([1i64].as_slice(), false, Kind::Float)?);
                }
            }
            x = next;
        }
        Ok(Tap { hidden: x, attention, keys })
    }

    /// The hidden states `hidden_states[l]` for each `l` of `layers` (0 = the embeddings), in that order, running
    /// only the blocks up to the deepest one asked and keeping no other layer's states.
    pub fn hidden_at(&self, pixels: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>, ClipError> {
        let _guard = tch::no_grad_guard();
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest > self.layers.len() {
            return Err(ClipError::Config {
                path: "config.json".into(),
                reason: format!("layer {deepest} does not exist: the tower has {} layers", self.layers.len()),
            });
        }
        let mut x = self.embed(pixels)?;
        let mut kept: Vec<Option<Tensor>> = layers.iter().map(|&l| (l == 0).then(|| x.shallow_clone())).collect();
        for (i, l) in self.layers.iter().take(deepest).enumerate() {
            x = self.block(l, &x)?.0;
            for (slot, &want) in kept.iter_mut().zip(layers) {
                if want == i + 1 {
                    *slot = Some(x.shallow_clone());
                }
            }
        }
        Ok(kept.into_iter().map(|t| t.unwrap_or_else(|| x.shallow_clone())).collect())
    }

    /// `post_layernorm(x)` over the last dimension.
    pub fn post_layernorm(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let (w, b) = &self.post_ln;
        x.f_layer_norm([self.config.hidden_size as i64].as_slice(), Some(w), Some(b), self.config.layer_norm_eps, false)
    }

    /// SigLIP's attention-pooling head over `out` `[B, N, D]` (post-layernormed states): `[B, D]`, what
    /// `pooler_output` holds; `None` for a tower without a head.
    pub fn head_pool(&self, out: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
        self.head.as_ref().map(|h| self.head_attend(h, out).map(|(pooled, _)| pooled)).transpose()
    }

    /// SigLIP's head applied to every token alone, `[B, N, D]`: `h = out_proj(v(x_i))`, `h + mlp(layernorm(h))`.
    /// With all the probe's attention on one token this is what the head outputs, so the tokens land in the
    /// space of the pooled embedding (the pooled one is the head over their attention-weighted mean before the
    /// MLP). `None` without a head.
    pub fn head_per_token(&self, out: &Tensor) -> Result<Option<Tensor>, tch::TchError> {
        let Some(head) = &self.head else { return Ok(None) };
        let d = self.config.hidden_size as i64;
        let (w, bias) = &head.in_proj;
        let v = out.f_linear(&w.f_narrow(0, 2 * d, d)?, Some(&bias.f_narrow(0, 2 * d, d)?))?;
        let h = v.f_linear(&head.out_proj.0, Some(&head.out_proj.1))?;
        Ok(Some(h.f_add(&self.head_mlp(head, &h)?)?))
    }

    /// `mlp(layernorm(x))` of the pooling head.
    fn head_mlp(&self, head: &Head, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let d = self.config.hidden_size as i64;
        let lin = |x: &Tensor, (w, bias): &(Tensor, Tensor)| x.f_linear(w, Some(bias));
        let normed =
            x.f_layer_norm([d].as_slice(), Some(&head.ln.0), Some(&head.ln.1), self.config.layer_norm_eps, false)?;
        lin(&self.act(&lin(&normed, &head.fc1)?)?, &head.fc2)
    }

    /// The head's pooled output `[B, D]` and its probe attention averaged over heads `[B, N]`.
    fn head_attend(&self, head: &Head, out: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
        let c = &self.config;
        let (d, heads) = (c.hidden_size as i64, c.num_attention_heads as i64);
        let head_dim = d / heads;
        let (b, tokens) = (out.size()[0], out.size()[1]);
        let lin = |x: &Tensor, (w, bias): &(Tensor, Tensor)| x.f_linear(w, Some(bias));
        let split = |t: Tensor, len: i64| t.f_reshape([b, len, heads, head_dim])?.f_transpose(1, 2);
        let (w, bias) = &head.in_proj;
        let part = |n: i64| -> Result<(Tensor, Tensor), tch::TchError> {
            Ok((w.f_narrow(0, n * d, d)?, bias.f_narrow(0, n * d, d)?))
        };
        let probe = head.probe.f_expand([b, 1, d], false)?;
        let q = split(lin(&probe, &part(0)?)?, 1)?;
        let k = split(lin(out, &part(1)?)?, tokens)?;
        let v = split(lin(out, &part(2)?)?, tokens)?;
        let attention = row_attention(&q, &k, head_dim)?;
        let pooled = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
        let pooled = lin(&pooled.f_transpose(1, 2)?.f_reshape([b, 1, d])?, &head.out_proj)?;
        let pooled = pooled.f_add(&self.head_mlp(head, &pooled)?)?.f_select(1, 0)?;
        Ok((pooled, attention))
    }

    /// One encoder block on `x` `[B, T, D]` (see [`EncoderLayer::forward`]).
    fn block(&self, l: &EncoderLayer, x: &Tensor) -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
        l.forward(x, self.block_shape())
    }

    fn block_shape(&self) -> BlockShape {
        let c = &self.config;
        BlockShape {
            hidden: c.hidden_size as i64,
            heads: c.num_attention_heads as i64,
            eps: c.layer_norm_eps,
            act: self.act,
            causal: false,
        }
    }

    /// The embeddings `hidden_states[0]`: patches (and CLIP's class token) plus positions, CLIP's pre-layernorm.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor, tch::TchError> {
        let c = &self.config;
        let d = c.hidden_size as i64;
        let b = pixels.size()[0];
        let stride = c.patch_size as i64;
        let pixels = pixels.f_to_kind(self.patch.0.kind())?;
        let patches = pixels.f_conv2d(
            &self.patch.0,
            self.patch.1.as_ref(),
            [stride, stride].as_slice(),
            [0i64, 0].as_slice(),
            [1i64, 1].as_slice(),
            1,
        )?;
        let patches = patches.f_flatten(2, 3)?.f_transpose(1, 2)?; // [B, N, D]
        let tokens_in = match &self.class_embedding {
            Some(cls) => Tensor::f_cat(&[cls.f_reshape([1, 1, d])?.f_expand([b, 1, d], false)?, patches], 1)?,
            None => patches,
        };
        let x = tokens_in.f_add(&self.position.f_unsqueeze(0)?)?;
        match &self.pre_ln {
            Some((w, bias)) => x.f_layer_norm([d].as_slice(), Some(w), Some(bias), c.layer_norm_eps, false),
            None => Ok(x),
        }
    }

    /// The MLP activation (`hidden_act`, else the family's default).
    fn act(&self, h: &Tensor) -> Result<Tensor, tch::TchError> {
        self.act.apply(h)
    }
}

/// The attention each token receives, `softmax(Q Kᵀ / √d)` averaged over heads and queries: `[B, T]`. One image
/// at a time, so at most `heads x T x T` scores exist at once.
fn received_attention(q: &Tensor, k: &Tensor, head_dim: i64) -> Result<Tensor, tch::TchError> {
    let b = q.size()[0];
    let rows = (0..b)
        .map(|i| {
            let (qi, ki) = (q.f_narrow(0, i, 1)?, k.f_narrow(0, i, 1)?);
            let scores = qi.f_matmul(&ki.f_transpose(2, 3)?)?.f_div_scalar((head_dim as f64).sqrt())?;
            scores.f_softmax(-1, Kind::Float)?.f_mean_dim([1i64, 2].as_slice(), false, Kind::Float)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::f_cat(&rows, 0)
}

/// `softmax(q Kᵀ / √d)` for one query row per head, averaged over heads: `[B, tokens]`.
fn row_attention(q: &Tensor, k: &Tensor, head_dim: i64) -> Result<Tensor, tch::TchError> {
    let scores = q.f_matmul(&k.f_transpose(2, 3)?)?.f_div_scalar((head_dim as f64).sqrt())?;
    scores.f_softmax(-1, Kind::Float)?.f_squeeze_dim(2)?.f_mean_dim([1i64].as_slice(), false, Kind::Float)
}
