//! Dual image-text encoders on libtorch: transformers' `CLIPModel` and `SiglipModel`, both towers, as the
//! relevance providers of the query-aware samplers and pruners (`--relevance clip:MODEL` / `siglip:MODEL`).
//!
//! ```text
//! image  CLIP:   visual_projection(post_layernorm(h_L[:, 0]))            = get_image_features
//!        SigLIP: head(post_layernorm(h_L))                                = get_image_features
//! patch  CLIP:   visual_projection(post_layernorm(h_l[:, 1:]))           (CDPruner's clip_encoder.py, l = -2 there)
//!        SigLIP: g(post_layernorm(h_l)),  g(x) = y + mlp(ln(y)), y = out_proj(v(x))   [project]
//! text   CLIP:   text_projection(final_layer_norm(T(ids))[eos])          = get_text_features (causal T)
//!        SigLIP: head(final_layer_norm(T(ids))[-1])                       = get_text_features (bidirectional T)
//! score  cos(image, text)
//! ```
//!
//! - The towers reuse the CLIP/SigLIP encoder block of [`crate::vision`] (one implementation); the vision tower
//!   is [`VisionTower`] loaded from the `vision_model.` prefix of the full checkpoint.
//! - CLIP's pooled text position follows transformers: the first `eos_token_id`, or, for configs with the
//!   pre-2023 `eos_token_id = 2`, the largest id (`input_ids.argmax`).
//! - Text longer than `max_position_embeddings` (CLIP's 77, SigLIP's 64) is cut the way CDPruner cuts it: the ids
//!   with special tokens are split into rows of that length, each row is one text embedding (`[segments, E]`), and
//!   query-aware methods average over the rows. CLIP pads the last row with id 0 under the causal mask, which is
//!   exactly CDPruner's zero padding with attention mask 0 at every real position; SigLIP pads every row with its
//!   pad id and attends to it, as SigLIP is run (`padding="max_length"`, no mask), and pools the last position.
//! - Patch embeddings in the joint space \[project\]: CLIP's follow CDPruner (post-layernorm and the visual
//!   projection on the patch states). SigLIP has no projection: its pooling head maps the probe's attention-weighted
//!   mean of the values to the joint space, so each patch is passed through the head as if the probe attended to
//!   it alone (MaskCLIP's reading of an attention pool). ALGORITHMS.md names no SigLIP rule; this is the one
//!   that puts patches where `get_image_features` puts images.
//! - Complexity: one tower pass per image batch (the patch layer is kept on the way), `O(rows·P²·D)` per text.
//! - Not supported: SigLIP 2 (`siglip2`, NaFlex patch embeddings) is refused with a typed error.
//!
//! Proof: models/tests/dual_encoder_parity.rs against transformers 5.24 on tiny random checkpoints
//! (models/tests/fixtures/make_dual_encoder_fixtures.py): image, text and patch embeddings and scores within
//! 1e-5, identical token ids.

use crate::safetensors::{Checkpoint, SafetensorsError};
use crate::tokenizer::{TextTokenizer, TokenizerError};
use crate::vision::{Activation, BlockShape, ClipError, EncoderLayer, VisionTower};
use crate::weights::{WeightError, Weights};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Why a dual encoder could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum DualEncoderError {
    /// `config.json` is unreadable or does not describe a dual encoder of the asked family.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint has one tower only.
    #[error(
        "{path} is a {found} checkpoint: a relevance provider needs both the vision and the text tower ({wanted})"
    )]
    OneTower {
        /// The folder.
        path: PathBuf,
        /// What it holds (`model_type`).
        found: String,
        /// What is needed.
        wanted: &'static str,
    },
    /// From the vision tower.
    #[error(transparent)]
    Vision(#[from] ClipError),
    /// From the tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A weight is missing or mis-shaped.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From libtorch.
    #[error("libtorch: {}", crate::weights::brief(.0))]
    Torch(#[from] tch::TchError),
}

/// Which dual encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualKind {
    /// `CLIPModel`.
    Clip,
    /// `SiglipModel`.
    Siglip,
}

impl DualKind {
    /// The provider prefix (`clip`, `siglip`).
    pub fn name(self) -> &'static str {
        match self {
            DualKind::Clip => "clip",
            DualKind::Siglip => "siglip",
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            DualKind::Clip => "a CLIPModel checkpoint, model_type \"clip\"",
            DualKind::Siglip => "a SiglipModel checkpoint, model_type \"siglip\"",
        }
    }
}

/// The `text_config` keys both families use (transformers' names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DualTextConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Longest row of ids (CLIP 77, SigLIP 64).
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// MLP activation.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// CLIP: the id whose first occurrence is pooled (`2` selects the legacy argmax rule).
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    /// SigLIP: the id rows are padded with.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// SigLIP: the text head's output width (default: `hidden_size`).
    #[serde(default)]
    pub projection_size: Option<usize>,
}

fn default_eps() -> f64 {
    1e-5
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    model_type: String,
    text_config: Option<DualTextConfig>,
    vision_config: Option<serde_json::Value>,
    #[serde(default)]
    projection_dim: Option<usize>,
}

/// Where a text row's embedding is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// The first position holding this id (CLIP), position 0 when absent.
    FirstId(i64),
    /// The largest id (CLIP configs with the legacy `eos_token_id = 2`).
    ArgmaxId,
    /// The last position (SigLIP).
    Last,
}

struct TextTower {
    config: DualTextConfig,
    token: Tensor,
    position: Tensor,
    layers: Vec<EncoderLayer>,
    final_ln: (Tensor, Tensor),
    /// CLIP's `text_projection` (no bias) or SigLIP's `head`.
    head: (Tensor, Option<Tensor>),
    shape: BlockShape,
    pool: Pool,
    pad: i64,
}

/// What an image batch gives.
pub struct ImageEmbeddings {
    /// `[B, E]`, `get_image_features`.
    pub image: Tensor,
    /// `[B, N, E]` joint-space patch embeddings of the asked layer (see the module docs), when asked.
    pub patches: Option<Tensor>,
}

/// A loaded CLIP or SigLIP dual encoder with its tokenizer.
pub struct DualEncoder {
    /// CLIP or SigLIP.
    pub kind: DualKind,
    /// The folder it was loaded from.
    pub dir: PathBuf,
    vision: VisionTower,
    visual_projection: Option<Tensor>,
    text: TextTower,
    tokenizer: TextTokenizer,
    /// Width of the joint space.
    pub dim: usize,
}

impl DualEncoder {
    /// Loads `dir` (config.json, model.safetensors, tokenizer.json) as a `kind` dual encoder on `device`,
    /// computing in `dtype`; embeddings come out in f32. A vision-only or text-only checkpoint, or one of the
    /// other family, is a typed error naming what it is.
    pub fn load(dir: &Path, kind: DualKind, device: Device, dtype: Kind) -> Result<Self, DualEncoderError> {
        let path = dir.join("config.json");
        let config_error = |reason: String| DualEncoderError::Config { path: path.clone(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| config_error(e.to_string()))?;
        let file: ConfigFile = serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let found = file.model_type.as_str();
        match (kind, found) {
            (DualKind::Clip, "clip") | (DualKind::Siglip, "siglip") => {}
            (_, "siglip2") => {
                return Err(config_error(
                    "SigLIP 2 (model_type \"siglip2\", NaFlex patch embeddings) is not supported; give a SiglipModel \
                     or CLIPModel checkpoint"
                        .into(),
                ))
            }
            (_, t) if t.ends_with("_vision_model") || t.ends_with("_text_model") => {
                return Err(DualEncoderError::OneTower {
                    path: dir.to_path_buf(),
                    found: t.into(),
                    wanted: kind.wanted(),
                })
            }
            (_, "clip" | "siglip") => {
                return Err(config_error(format!(
                    "model_type is \"{found}\", not {}: use --relevance {found}:{}",
                    kind.name(),
                    dir.display()
                )))
            }
            _ => {
                return Err(config_error(format!(
                    "model_type {found:?} is not a dual encoder; {} is needed",
                    kind.wanted()
                )))
            }
        }
        let (Some(text_config), Some(_)) = (file.text_config, file.vision_config) else {
            let missing = if file.model_type.is_empty() { "text_config/vision_config" } else { "a tower's config" };
            return Err(config_error(format!("{missing} is missing: {} is needed", kind.wanted())));
        };
        let checkpoint = Checkpoint::open(dir)?;
        for (tower, probe) in [
            ("vision", "vision_model.embeddings.position_embedding.weight"),
            ("text", "text_model.embeddings.token_embedding.weight"),
        ] {
            if !checkpoint.contains(probe) {
                return Err(DualEncoderError::OneTower {
                    path: dir.to_path_buf(),
                    found: format!("{found} without its {tower} tower weights ({probe} is absent)"),
                    wanted: kind.wanted(),
                });
            }
        }
        let vision = VisionTower::load_as(dir, device, dtype)?;
        let weights = Weights::new(&checkpoint, "", device, dtype);
        let (dt, m) = (text_config.hidden_size, text_config.intermediate_size);
        let (dim, visual_projection) = match kind {
            DualKind::Clip => {
                let e = file.projection_dim.unwrap_or(512);
                (e, Some(weights.get("visual_projection.weight", &[e, vision.config.hidden_size])?))
            }
            DualKind::Siglip => (vision.config.hidden_size, None),
        };
        let tw = weights.pp("text_model");
        let head = match kind {
            DualKind::Clip => (weights.get("text_projection.weight", &[dim, dt])?, None),
            DualKind::Siglip => {
                let e = text_config.projection_size.unwrap_or(dt);
                if e != dim {
                    return Err(config_error(format!(
                        "text head width {e} differs from the image embedding width {dim}: the towers do not share a space"
                    )));
                }
                (tw.get("head.weight", &[e, dt])?, Some(tw.get("head.bias", &[e])?))
            }
        };
        let default_act = match kind {
            DualKind::Clip => Activation::QuickGelu,
            DualKind::Siglip => Activation::GeluTanh,
        };
        let shape = BlockShape {
            hidden: dt as i64,
            heads: text_config.num_attention_heads as i64,
            eps: text_config.layer_norm_eps,
            act: Activation::parse(text_config.hidden_act.as_deref(), default_act)?,
            causal: kind == DualKind::Clip,
        };
        let pool = match (kind, text_config.eos_token_id) {
            (DualKind::Siglip, _) => Pool::Last,
            (DualKind::Clip, Some(2)) => Pool::ArgmaxId,
            (DualKind::Clip, Some(id)) => Pool::FirstId(id),
            (DualKind::Clip, None) => Pool::FirstId(49407),
        };
        let text = TextTower {
            token: tw.get("embeddings.token_embedding.weight", &[text_config.vocab_size, dt])?,
            position: tw.get("embeddings.position_embedding.weight", &[text_config.max_position_embeddings, dt])?,
            layers: (0..text_config.num_hidden_layers)
                .map(|i| EncoderLayer::load(&tw, i, dt, m))
                .collect::<Result<Vec<_>, ClipError>>()?,
            final_ln: (tw.get("final_layer_norm.weight", &[dt])?, tw.get("final_layer_norm.bias", &[dt])?),
            head,
            shape,
            pool,
            pad: match kind {
                DualKind::Clip => 0,
                DualKind::Siglip => text_config.pad_token_id.unwrap_or(1),
            },
            config: text_config,
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?.unbounded()?;
        Ok(DualEncoder { kind, dir: dir.to_path_buf(), vision, visual_projection, text, tokenizer, dim })
    }

    /// The vision tower's input side in pixels (its `image_size`).
    pub fn image_size(&self) -> usize {
        self.vision.config.image_size
    }

    /// Patches per image (`(image_size / patch_size)²`).
    pub fn patches_per_image(&self) -> usize {
        (self.vision.config.image_size / self.vision.config.patch_size).pow(2)
    }

    /// Layers of the vision tower.
    pub fn vision_layers(&self) -> usize {
        self.vision.config.num_hidden_layers
    }

    /// The longest row of text ids one pass takes.
    pub fn text_positions(&self) -> usize {
        self.text.config.max_position_embeddings
    }

    /// Token ids of `text` with the checkpoint's special tokens, as transformers' tokenizer gives them.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DualEncoderError> {
        Ok(self.tokenizer.encode_with_special_tokens(text)?)
    }

    /// Text embeddings `[segments, E]` (f32) of `text`: one row per `max_position_embeddings` ids (see the module
    /// docs for the chunking).
    pub fn text_embeddings(&self, text: &str) -> Result<Tensor, DualEncoderError> {
        let ids = self.tokenize(text)?;
        self.text_embeddings_of_ids(&ids)
    }

    /// [`DualEncoder::text_embeddings`] from token ids.
    pub fn text_embeddings_of_ids(&self, ids: &[u32]) -> Result<Tensor, DualEncoderError> {
        let _guard = tch::no_grad_guard();
        let t = &self.text;
        let p = t.config.max_position_embeddings;
        let rows = ids.len().saturating_sub(1) / p + 1;
        let mut padded: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        padded.resize(rows * p, t.pad);
        let pooled_at: Vec<i64> = padded
            .chunks(p)
            .map(|row| match t.pool {
                Pool::Last => (p - 1) as i64,
                Pool::FirstId(id) => row.iter().position(|&v| v == id).unwrap_or(0) as i64,
                // torch's argmax returns the first of equal maxima.
                Pool::ArgmaxId => {
                    row.iter().enumerate().fold((0, i64::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
                        as i64
                }
            })
            .collect();
        let device = t.token.device();
        let (rows, p) = (rows as i64, p as i64);
        let ids = Tensor::from_slice(&padded).f_to_device(device)?;
        let mut x = t.token.f_index_select(0, &ids)?.f_reshape([rows, p, t.shape.hidden])?;
        x = x.f_add(&t.position.f_unsqueeze(0)?)?;
        for layer in &t.layers {
            x = layer.forward(&x, t.shape)?.0;
        }
        let (w, b) = &t.final_ln;
        let x = x.f_layer_norm([t.shape.hidden].as_slice(), Some(w), Some(b), t.shape.eps, false)?;
        let at = Tensor::from_slice(&pooled_at).f_to_device(device)?;
        let pooled = x.f_gather(1, &at.f_view([rows, 1, 1])?.f_expand([rows, 1, t.shape.hidden], false)?, false)?;
        let pooled = pooled.f_squeeze_dim(1)?;
        Ok(pooled.f_linear(&t.head.0, t.head.1.as_ref())?.f_to_kind(Kind::Float)?)
    }

    /// Image embeddings of preprocessed `pixels` `[B, 3, S, S]` (the checkpoint's image processor), and the
    /// joint-space patch embeddings of `hidden_states[patch_layer]` when asked (`-1` the last layer, `-2` the one
    /// before, as Python indexes `hidden_states`; `0` the embeddings).
    pub fn encode_images(
        &self,
        pixels: &Tensor,
        patch_layer: Option<i64>,
    ) -> Result<ImageEmbeddings, DualEncoderError> {
        let _guard = tch::no_grad_guard();
        let layers = self.vision.config.num_hidden_layers as i64;
        let patch_layer = match patch_layer {
            None => None,
            Some(l) if (-(layers + 1)..=layers).contains(&l) => Some(if l < 0 { layers + 1 + l } else { l } as usize),
            Some(l) => {
                return Err(DualEncoderError::Config {
                    path: self.dir.join("config.json"),
                    reason: format!("patch layer {l} does not exist: hidden_states has {} entries", layers + 1),
                })
            }
        };
        let mut wanted = vec![layers as usize];
        wanted.extend(patch_layer);
        let states = self.vision.hidden_at(pixels, &wanted)?;
        let last = &states[0];
        let (image, patches) = match self.kind {
            DualKind::Clip => {
                let proj = self.visual_projection.as_ref().ok_or_else(|| DualEncoderError::Config {
                    path: self.dir.join("config.json"),
                    reason: "visual_projection is missing".into(),
                })?;
                let image = self.vision.post_layernorm(&last.f_select(1, 0)?)?.f_linear::<Tensor>(proj, None)?;
                let patches = match states.get(1) {
                    Some(h) => {
                        let n = h.size()[1];
                        Some(self.vision.post_layernorm(&h.f_narrow(1, 1, n - 1)?)?.f_linear::<Tensor>(proj, None)?)
                    }
                    None => None,
                };
                (image, patches)
            }
            DualKind::Siglip => {
                let missing = || DualEncoderError::Config {
                    path: self.dir.join("config.json"),
                    reason: "vision_use_head is false: a SigLIP tower without its pooling head has no image embedding"
                        .into(),
                };
                let image = self.vision.head_pool(&self.vision.post_layernorm(last)?)?.ok_or_else(missing)?;
                let patches = match states.get(1) {
                    Some(h) => Some(self.vision.head_per_token(&self.vision.post_layernorm(h)?)?.ok_or_else(missing)?),
                    None => None,
                };
                (image, patches)
            }
        };
        Ok(ImageEmbeddings {
            image: image.f_to_kind(Kind::Float)?,
            patches: patches.map(|p| p.f_to_kind(Kind::Float)).transpose()?,
        })
    }
}

/// Cosine similarity of every row of `a` `[A, E]` with every row of `b` `[B, E]`: `[A, B]`.
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<Tensor, tch::TchError> {
    let norm = |t: &Tensor| -> Result<Tensor, tch::TchError> {
        t.f_div(&t.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?.f_clamp_min(1e-12)?)
    };
    norm(a)?.f_matmul(&norm(b)?.f_transpose(0, 1)?)
}
