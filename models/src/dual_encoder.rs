//! Dual image-text encoders: transformers' `CLIPModel` and `SiglipModel`, both towers, as the relevance providers of
//! the query-aware samplers and pruners (`--relevance clip:MODEL` / `siglip:MODEL`). The configuration, tokenisation
//! and chunking ([`DualSpec`]) are shared; the towers run on libtorch (`DualEncoder`, `torch` feature) or on ONNX
//! Runtime from an export (`crate::onnx_dual_encoder`, `onnx` feature).
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
//!   is `crate::vision::VisionTower` (libtorch) loaded from the `vision_model.` prefix of the full checkpoint.
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
//! (models/tests/fixtures/make_dual_encoder_fixtures.py) and their exports, on both backends: image, text and patch
//! embeddings and scores within 1e-5, identical token ids.

use crate::safetensors::SafetensorsError;
use crate::tokenizer::{TextTokenizer, TokenizerError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[cfg(feature = "torch")]
pub use torch::{cosine, DualEncoder, ImageEmbeddings};

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
    /// From the tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From the vision tower (libtorch).
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Vision(#[from] crate::vision::ClipError),
    /// A weight is missing or mis-shaped (libtorch).
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    /// From libtorch.
    #[cfg(feature = "torch")]
    #[error("libtorch: {}", crate::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// From ONNX Runtime (the graph file is named).
    #[cfg(feature = "onnx")]
    #[error(transparent)]
    Onnx(#[from] crate::onnx_session::OnnxError),
}

/// Whether `dir` is a dual-encoder ONNX export (`models/export/export_dual_onnx.py`: `onnx/vision_model.onnx`)
/// rather than a checkpoint.
pub fn is_onnx_export(dir: &Path) -> bool {
    dir.join("onnx").join("vision_model.onnx").is_file()
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
    text_config: Option<DualTextConfig>,
    vision_config: Option<VisionGeometry>,
    #[serde(default)]
    projection_dim: Option<usize>,
}

/// The `vision_config` keys every backend needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VisionGeometry {
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Width.
    pub hidden_size: usize,
}

/// A dual encoder's `config.json` as every backend reads it, checked against the asked family.
#[derive(Debug, Clone, PartialEq)]
pub struct DualSpec {
    /// CLIP or SigLIP.
    pub kind: DualKind,
    /// The folder.
    pub dir: PathBuf,
    /// The text tower.
    pub text: DualTextConfig,
    /// The vision tower's geometry.
    pub vision: VisionGeometry,
    /// Width of the joint space (CLIP's `projection_dim`, SigLIP's vision width).
    pub dim: usize,
    pool: Pool,
    pad: i64,
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

/// Ids cut into rows of `max_position_embeddings` and padded (CDPruner's chunking), with the pooled position of
/// each row: what a text tower runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRows {
    /// `rows x positions` ids, row-major.
    pub ids: Vec<i64>,
    /// Rows.
    pub rows: usize,
    /// Positions per row.
    pub positions: usize,
    /// The position each row's embedding is read at.
    pub pooled_at: Vec<i64>,
}

impl DualSpec {
    /// Reads `dir/config.json` as a `kind` dual encoder. A vision-only or text-only checkpoint, or one of the other
    /// family, is a typed error naming what it is.
    pub fn read(dir: &Path, kind: DualKind) -> Result<Self, DualEncoderError> {
        let path = dir.join("config.json");
        let config_error = |reason: String| DualEncoderError::Config { path: path.clone(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| config_error(e.to_string()))?;
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let found = raw["model_type"].as_str().unwrap_or_default().to_string();
        match (kind, found.as_str()) {
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
        let file: ConfigFile = serde_json::from_value(raw).map_err(|e| config_error(e.to_string()))?;
        let (Some(text), Some(vision)) = (file.text_config, file.vision_config) else {
            return Err(config_error(format!("text_config or vision_config is missing: {} is needed", kind.wanted())));
        };
        let dim = match kind {
            DualKind::Clip => file.projection_dim.unwrap_or(512),
            DualKind::Siglip => vision.hidden_size,
        };
        if kind == DualKind::Siglip && text.projection_size.unwrap_or(text.hidden_size) != dim {
            return Err(config_error(format!(
                "text head width {} differs from the image embedding width {dim}: the towers do not share a space",
                text.projection_size.unwrap_or(text.hidden_size)
            )));
        }
        let pool = match (kind, text.eos_token_id) {
            (DualKind::Siglip, _) => Pool::Last,
            (DualKind::Clip, Some(2)) => Pool::ArgmaxId,
            (DualKind::Clip, Some(id)) => Pool::FirstId(id),
            (DualKind::Clip, None) => Pool::FirstId(49407),
        };
        let pad = match kind {
            DualKind::Clip => 0,
            DualKind::Siglip => text.pad_token_id.unwrap_or(1),
        };
        Ok(DualSpec { kind, dir: dir.to_path_buf(), text, vision, dim, pool, pad })
    }

    /// The checkpoint's tokenizer (`tokenizer.json`), without any truncation or padding it carries.
    pub fn tokenizer(&self) -> Result<TextTokenizer, DualEncoderError> {
        Ok(TextTokenizer::from_file(&self.dir.join("tokenizer.json"))?.unbounded()?)
    }

    /// Patches per image side.
    pub fn grid_side(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    /// `hidden_states` index of a Python-style `layer` (`-1` the last), or a typed error.
    pub fn hidden_index(&self, layer: i64) -> Result<usize, DualEncoderError> {
        let layers = self.vision.num_hidden_layers as i64;
        if (-(layers + 1)..=layers).contains(&layer) {
            Ok(if layer < 0 { layers + 1 + layer } else { layer } as usize)
        } else {
            Err(DualEncoderError::Config {
                path: self.dir.join("config.json"),
                reason: format!("patch layer {layer} does not exist: hidden_states has {} entries", layers + 1),
            })
        }
    }

    /// `ids` (special tokens added) cut into rows of `max_position_embeddings`, padded (see the module docs), with
    /// each row's pooled position.
    pub fn text_rows(&self, ids: &[u32]) -> TextRows {
        let p = self.text.max_position_embeddings;
        let rows = ids.len().saturating_sub(1) / p + 1;
        let mut padded: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        padded.resize(rows * p, self.pad);
        let pooled_at = padded
            .chunks(p)
            .map(|row| match self.pool {
                Pool::Last => (p - 1) as i64,
                Pool::FirstId(id) => row.iter().position(|&v| v == id).unwrap_or(0) as i64,
                // torch's argmax returns the first of equal maxima.
                Pool::ArgmaxId => {
                    row.iter().enumerate().fold((0, i64::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
                        as i64
                }
            })
            .collect();
        TextRows { ids: padded, rows, positions: p, pooled_at }
    }
}

#[cfg(feature = "torch")]
mod torch {
    use super::{DualEncoderError, DualKind, DualSpec};
    use crate::safetensors::Checkpoint;
    use crate::tokenizer::TextTokenizer;
    use crate::vision::{Activation, BlockShape, ClipError, EncoderLayer, VisionTower};
    use crate::weights::Weights;
    use std::path::Path;
    use tch::{Device, Kind, Tensor};

    struct TextTower {
        token: Tensor,
        position: Tensor,
        layers: Vec<EncoderLayer>,
        final_ln: (Tensor, Tensor),
        /// CLIP's `text_projection` (no bias) or SigLIP's `head`.
        head: (Tensor, Option<Tensor>),
        shape: BlockShape,
    }

    /// What an image batch gives.
    pub struct ImageEmbeddings {
        /// `[B, E]`, `get_image_features`.
        pub image: Tensor,
        /// `[B, N, E]` joint-space patch embeddings of the asked layer (see the module docs), when asked.
        pub patches: Option<Tensor>,
    }

    /// A loaded CLIP or SigLIP dual encoder with its tokenizer, on libtorch.
    pub struct DualEncoder {
        /// The configuration.
        pub spec: DualSpec,
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
            let spec = DualSpec::read(dir, kind)?;
            let checkpoint = Checkpoint::open(dir)?;
            for (tower, probe) in [
                ("vision", "vision_model.embeddings.position_embedding.weight"),
                ("text", "text_model.embeddings.token_embedding.weight"),
            ] {
                if !checkpoint.contains(probe) {
                    return Err(DualEncoderError::OneTower {
                        path: dir.to_path_buf(),
                        found: format!(
                            "{} checkpoint without its {tower} tower weights ({probe} is absent)",
                            kind.name()
                        ),
                        wanted: kind.wanted(),
                    });
                }
            }
            let vision = VisionTower::load_as(dir, device, dtype)?;
            let weights = Weights::new(&checkpoint, "", device, dtype);
            let t = &spec.text;
            let (dt, m, dim) = (t.hidden_size, t.intermediate_size, spec.dim);
            let visual_projection = match kind {
                DualKind::Clip => Some(weights.get("visual_projection.weight", &[dim, vision.config.hidden_size])?),
                DualKind::Siglip => None,
            };
            let tw = weights.pp("text_model");
            let head = match kind {
                DualKind::Clip => (weights.get("text_projection.weight", &[dim, dt])?, None),
                DualKind::Siglip => (tw.get("head.weight", &[dim, dt])?, Some(tw.get("head.bias", &[dim])?)),
            };
            let default_act = match kind {
                DualKind::Clip => Activation::QuickGelu,
                DualKind::Siglip => Activation::GeluTanh,
            };
            let shape = BlockShape {
                hidden: dt as i64,
                heads: t.num_attention_heads as i64,
                eps: t.layer_norm_eps,
                act: Activation::parse(t.hidden_act.as_deref(), default_act)?,
                causal: kind == DualKind::Clip,
            };
            let text = TextTower {
                token: tw.get("embeddings.token_embedding.weight", &[t.vocab_size, dt])?,
                position: tw.get("embeddings.position_embedding.weight", &[t.max_position_embeddings, dt])?,
                layers: (0..t.num_hidden_layers)
                    .map(|i| EncoderLayer::load(&tw, i, dt, m))
                    .collect::<Result<Vec<_>, ClipError>>()?,
                final_ln: (tw.get("final_layer_norm.weight", &[dt])?, tw.get("final_layer_norm.bias", &[dt])?),
                head,
                shape,
            };
            let tokenizer = spec.tokenizer()?;
            Ok(DualEncoder { spec, vision, visual_projection, text, tokenizer, dim })
        }

        /// The vision tower's input side in pixels (its `image_size`).
        pub fn image_size(&self) -> usize {
            self.spec.vision.image_size
        }

        /// The longest row of text ids one pass takes.
        pub fn text_positions(&self) -> usize {
            self.spec.text.max_position_embeddings
        }

        /// Token ids of `text` with the checkpoint's special tokens, as transformers' tokenizer gives them.
        pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DualEncoderError> {
            Ok(self.tokenizer.encode_with_special_tokens(text)?)
        }

        /// Text embeddings `[segments, E]` (f32) of `text`: one row per `max_position_embeddings` ids (see the
        /// module docs for the chunking).
        pub fn text_embeddings(&self, text: &str) -> Result<Tensor, DualEncoderError> {
            let ids = self.tokenize(text)?;
            self.text_embeddings_of_ids(&ids)
        }

        /// [`DualEncoder::text_embeddings`] from token ids.
        pub fn text_embeddings_of_ids(&self, ids: &[u32]) -> Result<Tensor, DualEncoderError> {
            let _guard = tch::no_grad_guard();
            let (t, rows) = (&self.text, self.spec.text_rows(ids));
            let device = t.token.device();
            let (r, p) = (rows.rows as i64, rows.positions as i64);
            let ids = Tensor::from_slice(&rows.ids).f_to_device(device)?;
            let mut x = t.token.f_index_select(0, &ids)?.f_reshape([r, p, t.shape.hidden])?;
            x = x.f_add(&t.position.f_unsqueeze(0)?)?;
            for layer in &t.layers {
                x = layer.forward(&x, t.shape)?.0;
            }
            let (w, b) = &t.final_ln;
            let x = x.f_layer_norm([t.shape.hidden].as_slice(), Some(w), Some(b), t.shape.eps, false)?;
            let at = Tensor::from_slice(&rows.pooled_at).f_to_device(device)?;
            let index = at.f_view([r, 1, 1])?.f_expand([r, 1, t.shape.hidden], false)?;
            let pooled = x.f_gather(1, &index, false)?.f_squeeze_dim(1)?;
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
            let patch_layer = patch_layer.map(|l| self.spec.hidden_index(l)).transpose()?;
            let mut wanted = vec![self.spec.vision.num_hidden_layers];
            wanted.extend(patch_layer);
            let states = self.vision.hidden_at(pixels, &wanted)?;
            let last = &states[0];
            let missing = |reason: &str| DualEncoderError::Config {
                path: self.spec.dir.join("config.json"),
                reason: reason.into(),
            };
            let (image, patches) = match &self.visual_projection {
                Some(proj) => {
                    let image = self.vision.post_layernorm(&last.f_select(1, 0)?)?.f_linear::<Tensor>(proj, None)?;
                    let patches = match states.get(1) {
                        Some(h) => {
                            let n = h.size()[1];
                            let normed = self.vision.post_layernorm(&h.f_narrow(1, 1, n - 1)?)?;
                            Some(normed.f_linear::<Tensor>(proj, None)?)
                        }
                        None => None,
                    };
                    (image, patches)
                }
                None => {
                    let headless = "vision_use_head is false: a SigLIP tower without its pooling head has no image \
                                    embedding";
                    let image =
                        self.vision.head_pool(&self.vision.post_layernorm(last)?)?.ok_or_else(|| missing(headless))?;
                    let patches = match states.get(1) {
                        Some(h) => Some(
                            self.vision
                                .head_per_token(&self.vision.post_layernorm(h)?)?
                                .ok_or_else(|| missing(headless))?,
                        ),
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
}
