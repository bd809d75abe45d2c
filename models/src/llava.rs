//! LLaVA (transformers' `LlavaForConditionalGeneration`): a CLIP or SigLIP tower, the `mlp2x_gelu` projector and a
//! Llama/Qwen2 language model, with the image features written into the prompt at the image-token positions.
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
use crate::vision::{ClipError, VisionOutput, VisionTower};
use std::path::Path;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// Why a LLaVA model could not load or run.
#[derive(Debug, Error)]
pub enum LlavaError {
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
    #[error("libtorch: {0}")]
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

/// A loaded LLaVA model.
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
}

impl Llava {
    /// Loads a Hugging Face `llava` directory onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Self, LlavaError> {
        let path = dir.join("config.json");
        let bad = |reason: String| LlavaError::Config { path: path.display().to_string(), reason };
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        let image_token_id = json["image_token_id"]
            .as_i64()
            .or_else(|| json["image_token_index"].as_i64())
            .ok_or_else(|| bad("no image_token_id".into()))?;
        let feature_layer = json["vision_feature_layer"].as_i64().unwrap_or(-2);
        let keep_cls = json["vision_feature_select_strategy"].as_str() == Some("full");
        if let Some(act) = json["projector_hidden_act"].as_str() {
            if act != "gelu" {
                return Err(bad(format!("projector_hidden_act `{act}` is not supported (gelu)")));
            }
        }
        let vision = VisionTower::load(dir, device)?;
        let text = Llama::from_hf_dir(dir, device)?;
        let ck = Checkpoint::open(dir)?;
        let prefix = ["multi_modal_projector.", "model.multi_modal_projector."]
            .into_iter()
            .find(|p| ck.contains(&format!("{p}linear_1.weight")))
            .unwrap_or("multi_modal_projector.");
        let get = |name: &str| -> Result<Tensor, LlavaError> {
            let (v, shape) = ck.tensor_f32(&format!("{prefix}{name}"))?;
            let dims: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
            Ok(Tensor::from_slice(&v).f_reshape(dims.as_slice())?.f_to_device(device)?)
        };
        Ok(Llava {
            vision,
            text,
            linear_1: (get("linear_1.weight")?, get("linear_1.bias")?),
            linear_2: (get("linear_2.weight")?, get("linear_2.bias")?),
            image_token_id,
            feature_layer,
            keep_cls,
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

    /// Prompt embeddings `[1, S, D]` with `visual` `[N, D]` written at the image-token positions of `ids` `[1, S]`.
    pub fn merge(&self, ids: &Tensor, visual: &Tensor) -> Result<Tensor, LlavaError> {
        let embeds = self.text.embed(ids)?;
        let mask = ids.f_eq(self.image_token_id)?.f_reshape([-1])?;
        let positions = mask.f_nonzero()?.f_reshape([-1])?;
        let (placeholders, features) = (positions.size()[0] as usize, visual.size()[0] as usize);
        if placeholders != features {
            return Err(LlavaError::Placeholders { placeholders, features, token: self.image_token_id });
        }
        let row = embeds.f_select(0, 0)?.f_index_copy(0, &positions, &visual.f_to_kind(Kind::Float)?)?;
        Ok(row.f_unsqueeze(0)?)
    }

    /// One prefill of `ids` `[1, S]` with one image `pixels` `[1, 3, H, W]`; returns the last position's logits.
    pub fn forward(&self, ids: &Tensor, pixels: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlavaError> {
        let (visual, _) = self.image_features(pixels)?;
        let embeds = self.merge(ids, &visual.f_flatten(0, 1)?)?;
        Ok(self.text.forward_embeds(embeds, cache)?)
    }
}
