//! LLaVA (transformers' `LlavaForConditionalGeneration`) and LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`):
//! a CLIP or SigLIP tower, the `mlp2x_gelu` projector and a Llama/Qwen2 language model, with the visual features
//! written into the prompt at the image- (or video-) token positions. OneVision adds the `image_newline` embedding,
//! any-resolution tiles and pooled video frames; their layout is in [`crate::onevision`].
//!
//! ```text
//! features = tower(pixels).hidden_states[vision_feature_layer]     (default −2, the penultimate layer)
//!            [:, 1:] when vision_feature_select_strategy = "default" (CLS dropped), whole when "full"
//! visual   = linear_2(gelu(linear_1(features)))                      (exact erf GELU)
//! embeds   = embed(ids) with the rows where ids == image_token_id replaced, in order, by the visual tokens
//! ```
//!
//! The number of image-token placeholders must equal the number of visual tokens (as transformers requires); the
//! visual tokens are where the pruners cut (see `tokensieve-pruners`). Position ids are the sequence positions.

use crate::llama::{KvCache, Llama, LlamaError};
use crate::safetensors::{Checkpoint, SafetensorsError};
use crate::vision::{ClipError, SignalRequest, VisionOutput, VisionTower};
use crate::weights::Weights;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// Why a LLaVA model could not load or run.
#[derive(Debug, Error)]
pub enum LlavaError {
    /// A weight is missing or does not fit the configuration.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    /// From the vision tower.
    #[error(transparent)]
    Vision(#[from] ClipError),
    /// From the language model.
    #[error(transparent)]
    Text(#[from] LlamaError),
    /// From the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// From libtorch.
    #[error("libtorch: {}", crate::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// The prompt's placeholders do not match the visual tokens.
    #[error("the prompt has {placeholders} image tokens (id {token}) but the image gives {features} visual tokens")]
    Placeholders {
        /// Placeholders found.
        placeholders: usize,
        /// Visual tokens.
        features: usize,
        /// The image token id.
        token: i64,
    },
    /// config.json problem.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The visual tokens of a batch of views with their signals, from [`Llava::encode_views`].
pub struct VisualTap {
    /// `[B, N, D_text]` after the projector.
    pub features: Tensor,
    /// `[B, N]` attention per token at the feature layer (CLS row for CLIP, mean received for SigLIP), f32.
    pub attention: Option<Tensor>,
    /// `[B, N, head_dim]` keys at the feature layer, mean over heads, f32.
    pub keys: Option<Tensor>,
}

/// What `llava_onevision` adds to LLaVA.
pub struct OneVision {
    /// The newline embedding `[D]` ending every row of tile features, each multi-image view and each video.
    pub newline: Tensor,
    /// Any-resolution grid pinpoints `(height, width)` in pixels.
    pub pinpoints: Vec<(usize, usize)>,
    /// `anyres_max_<N>`: the tile map is shrunk to about N tiles' worth of tokens.
    pub max_patches: usize,
    /// Id of the video placeholder token.
    pub video_token_id: i64,
}

/// A loaded LLaVA or LLaVA-OneVision model.
pub struct Llava {
    /// The vision tower.
    pub vision: VisionTower,
    /// The language model.
    pub text: Llama,
    linear_1: (Tensor, Tensor),
    linear_2: (Tensor, Tensor),
    /// Id of the image placeholder token.
    pub image_token_id: i64,
    feature_layer: i64,
    keep_cls: bool,
    /// `Some` for `llava_onevision` checkpoints.
    pub onevision: Option<OneVision>,
}

impl Llava {
    /// Loads a Hugging Face `llava` or `llava_onevision` directory onto `device`, computing in f32.
    pub fn load(dir: &Path, device: Device) -> Result<Self, LlavaError> {
        Self::load_as(dir, device, Kind::Float)
    }

    /// As [`Llava::load`], computing in `dtype` (`Float`, `Half`, `BFloat16`; half precision halves memory and time
    /// on CUDA and on CPUs with half-precision instructions, [`crate::runtime::cpu_computes`]; elsewhere it is
    /// emulated and slower than f32). Logits and attention signals come back as f32.
    pub fn load_as(dir: &Path, device: Device, dtype: Kind) -> Result<Self, LlavaError> {
        let path = dir.join("config.json");
        let bad = |reason: String| LlavaError::Config { path: path.display().to_string(), reason };
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        let config = crate::vlm_config::VlmConfig::from_json(&json).map_err(bad)?;
        let vision = VisionTower::load_as(dir, device, dtype)?;
        let text = Llama::from_hf_dir_as(dir, device, dtype)?;
        let ck = Checkpoint::open(dir)?;
        let prefix = ["multi_modal_projector.", "model.multi_modal_projector."]
            .into_iter()
            .find(|p| ck.contains(&format!("{p}linear_1.weight")))
            .unwrap_or("multi_modal_projector.");
        let (d_vision, d_text) = (vision.config.hidden_size, text.config.hidden);
        let root = Weights::new(&ck, "", device, dtype);
        let projector = root.pp(prefix.trim_end_matches('.'));
        let linear = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), LlavaError> {
            Ok((
                projector.get(&format!("{name}.weight"), &[out, inp])?,
                projector.get(&format!("{name}.bias"), &[out])?,
            ))
        };
        let onevision = match config.onevision {
            Some(ov) => {
                let newline = ["image_newline", "model.image_newline"]
                    .into_iter()
                    .find(|n| ck.contains(n))
                    .ok_or_else(|| bad("llava_onevision checkpoint without image_newline".into()))?;
                Some(OneVision {
                    newline: root.get(newline, &[d_text])?,
                    pinpoints: ov.pinpoints,
                    max_patches: ov.max_patches,
                    video_token_id: ov.video_token_id,
                })
            }
            None => None,
        };
        Ok(Llava {
            vision,
            text,
            linear_1: linear("linear_1", d_text, d_vision)?,
            linear_2: linear("linear_2", d_text, d_text)?,
            image_token_id: config.image_token_id,
            feature_layer: config.feature_layer,
            keep_cls: config.keep_cls,
            onevision,
        })
    }

    /// Visual tokens `[B, N, D_text]` of preprocessed `pixels`, with the tower's outputs (for the pruners' signals).
    pub fn image_features(&self, pixels: &Tensor) -> Result<(Tensor, VisionOutput), LlavaError> {
        let _guard = tch::no_grad_guard();
        let out = self.vision.forward(pixels)?;
        let n = out.hidden_states.len() as i64;
        let layer = if self.feature_layer < 0 { n + self.feature_layer } else { self.feature_layer };
        let h = &out.hidden_states[layer.clamp(0, n - 1) as usize];
        let h = if self.keep_cls || self.vision.kind == crate::vision::TowerKind::Siglip {
            h.shallow_clone()
        } else {
            h.f_narrow(1, 1, h.size()[1] - 1)?
        };
        let x = h.f_linear(&self.linear_1.0, Some(&self.linear_1.1))?.f_gelu("none")?;
        Ok((x.f_linear(&self.linear_2.0, Some(&self.linear_2.1))?, out))
    }

    /// Visual tokens `[B, N, D_text]` of preprocessed `pixels` `[B, 3, S, S]` with the signals `request` asks for,
    /// all taken at the feature layer (`vision_feature_layer`, -2 by default, where LLaVA-based methods such as
    /// VisionZip, VisPruner and PruMerge+ read them): attention `[B, N]` and keys `[B, N, head_dim]`, aligned with
    /// the tokens (CLIP's CLS row and column are dropped with the CLS token under the `default` strategy). Only the
    /// tower blocks up to that layer run.
    pub fn encode_views(&self, pixels: &Tensor, request: SignalRequest) -> Result<VisualTap, LlavaError> {
        let _guard = tch::no_grad_guard();
        let n = self.vision.config.num_hidden_layers as i64 + 1;
        let layer = if self.feature_layer < 0 { n + self.feature_layer } else { self.feature_layer };
        if !(0..n).contains(&layer) {
            return Err(LlavaError::Config {
                path: "config.json".into(),
                reason: format!("vision_feature_layer {} is outside the tower's {n} hidden states", self.feature_layer),
            });
        }
        let tap = self.vision.tap(pixels, layer as usize, request)?;
        // CLIP under the `default` strategy drops the CLS token, and with it the CLS column of every signal.
        let skip = i64::from(self.vision.kind == crate::vision::TowerKind::Clip && !self.keep_cls);
        let tokens = tap.hidden.size()[1] - skip;
        let h = tap.hidden.f_narrow(1, skip, tokens)?;
        let x = h.f_linear(&self.linear_1.0, Some(&self.linear_1.1))?.f_gelu("none")?;
        Ok(VisualTap {
            features: x.f_linear(&self.linear_2.0, Some(&self.linear_2.1))?,
            attention: tap.attention.map(|a| a.f_narrow(1, skip, tokens)).transpose()?,
            keys: tap.keys.map(|k| k.f_narrow(1, skip, tokens)).transpose()?,
        })
    }

    /// Prompt embeddings `[1, S, D]` with `visual` `[N, D]` written at the image-token positions of `ids` `[1, S]`.
    pub fn merge(&self, ids: &Tensor, visual: &Tensor) -> Result<Tensor, LlavaError> {
        self.merge_at(ids, &[(self.image_token_id, visual)])
    }

    /// Prompt embeddings with each `(placeholder id, tokens [N, D])` written, in order, at that id's positions.
    pub fn merge_at(&self, ids: &Tensor, parts: &[(i64, &Tensor)]) -> Result<Tensor, LlavaError> {
        merge_at(&self.text, ids, parts)
    }

    fn onevision(&self) -> Result<&OneVision, LlavaError> {
        self.onevision.as_ref().ok_or_else(|| LlavaError::Config {
            path: "config.json".into(),
            reason: "any-resolution images and pooled video need a llava_onevision checkpoint".into(),
        })
    }

    /// OneVision: the tokens `[N, D]` of one any-resolution image of `height x width` from its processed views
    /// `[1 + rows·cols, 3, S, S]` (base view first, tiles row by row, as the processor cut them on a `grid` of
    /// `(rows, cols)`), with the tower's outputs.
    pub fn anyres_image_features(
        &self,
        views: &Tensor,
        height: usize,
        width: usize,
        grid: (usize, usize),
    ) -> Result<(Tensor, VisionOutput), LlavaError> {
        let ov = self.onevision()?;
        let (features, out) = self.image_features(views)?;
        let newline: Vec<f32> = Vec::try_from(ov.newline.f_to_kind(Kind::Float)?)?;
        let packed = on_host(&features, |v| {
            crate::onevision::pack_image(v, (height, width), grid, ov.max_patches, &newline).map(|p| p.0)
        })?;
        Ok((packed.f_reshape([-1, features.size()[2]])?, out))
    }

    /// OneVision: the tokens of several images in one prompt (base views `[I, 3, S, S]`, no tiles): each view's
    /// `g²` tokens and a newline.
    pub fn multi_image_features(&self, views: &Tensor) -> Result<(Tensor, VisionOutput), LlavaError> {
        let ov = self.onevision()?;
        let (features, out) = self.image_features(views)?;
        let (i, _, d) = features.size3()?;
        let newline = ov.newline.f_reshape([1, 1, d])?.f_to_kind(features.kind())?.f_expand([i, 1, d], false)?;
        Ok((Tensor::f_cat(&[features, newline], 1)?.f_reshape([-1, d])?, out))
    }

    /// OneVision: pooled video tokens `[F, ceil(g/2)², D]` of frames `[F, 3, S, S]` (the newline that follows them
    /// in the prompt is [`OneVision::newline`]), with the tower's outputs.
    pub fn video_features(&self, frames: &Tensor) -> Result<(Tensor, VisionOutput), LlavaError> {
        self.onevision()?;
        let (features, out) = self.image_features(frames)?;
        let (f, _, d) = features.size3()?;
        let pooled = on_host(&features, crate::onevision::pool_video)?;
        Ok((pooled.f_reshape([f, -1, d])?, out))
    }

    /// One prefill of `ids` `[1, S]` with one image `pixels` `[1, 3, H, W]`; returns the last position's logits.
    pub fn forward(&self, ids: &Tensor, pixels: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlavaError> {
        let (visual, _) = self.image_features(pixels)?;
        let embeds = self.merge(ids, &visual.f_flatten(0, 1)?)?;
        Ok(self.text.forward_embeds(embeds, cache)?)
    }
}

/// Prompt embeddings `[1, S, D]` of `ids` `[1, S]` from `text`'s embedding table, with each `(placeholder id,
/// tokens [N, D])` written, in order, at that id's positions; the placeholder count must equal the tokens'.
pub fn merge_at(text: &Llama, ids: &Tensor, parts: &[(i64, &Tensor)]) -> Result<Tensor, LlavaError> {
    let mut row = text.embed(ids)?.f_select(0, 0)?;
    for &(token, visual) in parts {
        let positions = ids.f_eq(token)?.f_reshape([-1])?.f_nonzero()?.f_reshape([-1])?;
        let (placeholders, features) = (positions.size()[0] as usize, visual.size()[0] as usize);
        if placeholders != features {
            return Err(LlavaError::Placeholders { placeholders, features, token });
        }
        row = row.f_index_copy(0, &positions, &visual.f_to_kind(row.kind())?)?;
    }
    Ok(row.f_unsqueeze(0)?)
}

/// Runs a OneVision layout step (`crate::onevision`, shared with the ONNX backend so both backends pack the same
/// way) on a host copy of `features` `[V, N, D]`, and returns its rows on the features' device and dtype. The copy
/// is a few MB per question, small next to the tower's work.
fn on_host(
    features: &Tensor,
    step: impl FnOnce(crate::onevision::Views<'_>) -> Result<Vec<f32>, String>,
) -> Result<Tensor, LlavaError> {
    let (views, tokens, dim) = features.size3()?;
    let host: Vec<f32> = Vec::try_from(features.f_to_kind(Kind::Float)?.f_reshape([-1])?)?;
    let rows = step(crate::onevision::Views {
        data: &host,
        views: views as usize,
        tokens: tokens as usize,
        dim: dim as usize,
    })
    .map_err(|reason| LlavaError::Config { path: "visual tokens".into(), reason })?;
    Ok(Tensor::from_slice(&rows).f_to_kind(features.kind())?.f_to_device(features.device())?)
}
