//! Relevance providers, chosen with `--relevance`: where query-aware samplers and pruners get image-text relevance.
//!
//! | spec | what | used by |
//! |---|---|---|
//! | `clip:MODEL`, `siglip:MODEL` | a full `CLIPModel` / `SiglipModel` checkpoint (folder or Hugging Face id in the local cache): frame embeddings as `get_image_features`, the question as `get_text_features`, chunked as CDPruner chunks it | `sample --sampler f2c` (scores), `sample --sampler dcode` (D-CoDe's image embeddings) |
//! | `llm` | no second model: the VLM's projected visual tokens against the LLM's input embeddings of the question's tokens (OpenVINO GenAI's choice for CDPruner) | `query`, `cdpruner`, `mmr:importance=relevance` in `ask`/`compress`/`eval` |
//! | `R.npy` | one score per candidate frame, computed elsewhere | `sample --sampler f2c` |
//!
//! A frame's score is `mean_t cos(E_img(f), E_txt(Q)_t)` over the question's text rows (one row unless the
//! question is longer than the text tower's positions); for multiple-choice questions the caller passes the
//! question with its options (F2C's query). The dual encoders run on libtorch
//! ([`tokensieve_models::dual_encoder`]); frames go through the checkpoint's own `preprocessor_config.json`.

use std::path::PathBuf;

/// A parsed `--relevance` value.
#[derive(Debug, Clone, PartialEq)]
pub enum RelevanceSpec {
    /// The VLM's own embeddings.
    Llm,
    /// A dual encoder: `family` is `clip` or `siglip`, `model` a folder or a Hugging Face id.
    Dual {
        /// `clip` or `siglip`.
        family: &'static str,
        /// Folder or Hugging Face id, as given.
        model: String,
    },
    /// Per-candidate scores in a `.npy` file.
    Scores(PathBuf),
}

/// Why a `--relevance` value or provider is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RelevanceError {
    /// The value names no provider.
    #[error("--relevance {given:?}: {reason}")]
    Spec {
        /// The value.
        given: String,
        /// Why.
        reason: String,
    },
    /// The model could not be found.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// The dual encoder failed to load or run.
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Model(#[from] tokensieve_models::dual_encoder::DualEncoderError),
    /// libtorch.
    #[cfg(feature = "torch")]
    #[error("libtorch: {}", tokensieve_models::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// The image processor config.
    #[error("{path}: {reason}")]
    Processor {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RelevanceSpec {
    /// Parses `llm`, `clip:MODEL`, `siglip:MODEL` or a path ending in `.npy`.
    pub fn parse(given: &str) -> Result<Self, RelevanceError> {
        let spec = |reason: &str| RelevanceError::Spec { given: given.into(), reason: reason.into() };
        if given == "llm" {
            return Ok(RelevanceSpec::Llm);
        }
        for family in ["clip", "siglip"] {
            if let Some(model) = given.strip_prefix(family).and_then(|r| r.strip_prefix(':')) {
                if model.is_empty() {
                    return Err(spec("name the checkpoint after the colon (a folder or a Hugging Face id)"));
                }
                return Ok(RelevanceSpec::Dual { family, model: model.into() });
            }
        }
        if given.ends_with(".npy") {
            return Ok(RelevanceSpec::Scores(PathBuf::from(given)));
        }
        Err(spec("expected llm, clip:MODEL, siglip:MODEL or scores.npy"))
    }

    /// How the record names it.
    pub fn label(&self) -> String {
        match self {
            RelevanceSpec::Llm => "llm".into(),
            RelevanceSpec::Dual { family, model } => format!("{family}:{model}"),
            RelevanceSpec::Scores(p) => p.display().to_string(),
        }
    }
}

#[cfg(feature = "torch")]
pub use dual::DualProvider;

#[cfg(feature = "torch")]
mod dual {
    use super::{RelevanceError, RelevanceSpec};
    use tch::{Device, Kind, Tensor};
    use tokensieve_models::dual_encoder::{cosine, DualEncoder, DualKind};
    use tokensieve_video::preprocess::ImageProcessor;
    use tokensieve_video::samplers::{EmbedError, FrameEmbedder, FrameScorer};
    use tokensieve_video::Frame;

    /// A dual encoder with its image processor, as a frame embedder and a frame scorer.
    pub struct DualProvider {
        label: String,
        encoder: DualEncoder,
        processor: ImageProcessor,
        device: Device,
    }

    impl DualProvider {
        /// Loads the checkpoint a [`RelevanceSpec::Dual`] names on `device` (f32).
        pub fn load(spec: &RelevanceSpec, device: Device) -> Result<Self, RelevanceError> {
            let RelevanceSpec::Dual { family, model } = spec else {
                return Err(RelevanceError::Spec {
                    given: spec.label(),
                    reason: "is not a dual encoder (clip:MODEL or siglip:MODEL)".into(),
                });
            };
            let dir = crate::hub::resolve(model)?;
            let kind = if *family == "clip" { DualKind::Clip } else { DualKind::Siglip };
            let encoder = DualEncoder::load(&dir, kind, device, Kind::Float)?;
            let path = dir.join("preprocessor_config.json");
            let processor_error = |reason: String| RelevanceError::Processor { path: path.clone(), reason };
            let text = std::fs::read_to_string(&path).map_err(|e| processor_error(e.to_string()))?;
            let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| processor_error(e.to_string()))?;
            let processor = ImageProcessor::from_config(&config).map_err(|e| processor_error(e.to_string()))?;
            Ok(DualProvider { label: spec.label(), encoder, processor, device })
        }

        /// The loaded encoder.
        pub fn encoder(&self) -> &DualEncoder {
            &self.encoder
        }

        /// Image embeddings `[F, E]` of `frames`.
        pub fn image_embeddings(&self, frames: &[Frame]) -> Result<Tensor, RelevanceError> {
            let views = frames
                .iter()
                .map(|f| {
                    let p = self.processor.preprocess(&f.rgb, f.width as usize, f.height as usize);
                    Tensor::from_slice(&p.data).f_reshape([1, 3, p.height as i64, p.width as i64])
                })
                .collect::<Result<Vec<_>, _>>()?;
            let pixels = Tensor::f_cat(&views, 0)?.f_to_device(self.device)?;
            Ok(self.encoder.encode_images(&pixels, None)?.image)
        }

        /// `mean_t cos(E_img(f), E_txt(query)_t)` for every frame.
        pub fn frame_scores(&self, frames: &[Frame], query: &str) -> Result<Vec<f32>, RelevanceError> {
            let text = self.encoder.text_embeddings(query)?;
            let scores =
                cosine(&self.image_embeddings(frames)?, &text)?.f_mean_dim([1i64].as_slice(), false, Kind::Float)?;
            Ok(Vec::<f32>::try_from(scores.f_to_device(Device::Cpu)?)?)
        }

        fn wrap(&self, e: RelevanceError) -> EmbedError {
            EmbedError { embedder: self.label.clone(), source: Box::new(e) }
        }
    }

    impl FrameEmbedder for DualProvider {
        fn name(&self) -> String {
            self.label.clone()
        }

        fn embed(&self, frames: &[Frame]) -> Result<Vec<Vec<f32>>, EmbedError> {
            let e = self.image_embeddings(frames).map_err(|e| self.wrap(e))?;
            let flat = e.f_reshape([-1]).and_then(|e| Vec::<f32>::try_from(e.to_device(Device::Cpu)));
            let flat = flat.map_err(|e| self.wrap(e.into()))?;
            Ok(flat.chunks(self.encoder.dim).map(<[f32]>::to_vec).collect())
        }
    }

    impl FrameScorer for DualProvider {
        fn name(&self) -> String {
            self.label.clone()
        }

        fn scores(&self, frames: &[Frame], query: &str) -> Result<Vec<f32>, EmbedError> {
            self.frame_scores(frames, query).map_err(|e| self.wrap(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(RelevanceSpec::parse("llm").unwrap(), RelevanceSpec::Llm);
        assert_eq!(
            RelevanceSpec::parse("clip:openai/clip-vit-large-patch14-336").unwrap(),
            RelevanceSpec::Dual { family: "clip", model: "openai/clip-vit-large-patch14-336".into() }
        );
        assert_eq!(
            RelevanceSpec::parse("siglip:/m/so400m").unwrap(),
            RelevanceSpec::Dual { family: "siglip", model: "/m/so400m".into() }
        );
        assert_eq!(RelevanceSpec::parse("r.npy").unwrap(), RelevanceSpec::Scores("r.npy".into()));
        assert!(RelevanceSpec::parse("clip:").unwrap_err().to_string().contains("after the colon"));
        assert!(RelevanceSpec::parse("blip:x").unwrap_err().to_string().contains("expected llm, clip:MODEL"));
    }
}
