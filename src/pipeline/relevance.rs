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

use ndarray::Array2;
use std::path::PathBuf;
use tokensieve_video::preprocess::Pixels;

/// How a VLM's image processor normalised its pixels, so another model can see the same picture:
/// `p = (x · rescale − mean) / std` per channel, `x` in `0..=255`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelScale {
    /// The rescale factor (1/255 when the processor rescales, 1 when it does not).
    pub rescale: f64,
    /// Per-channel mean (0 without normalisation).
    pub mean: [f64; 3],
    /// Per-channel std (1 without normalisation).
    pub std: [f64; 3],
}

/// A relevance provider as the engine uses it in `ask`/`eval`: the question's text embeddings, and the visual tokens
/// embedded in the same space where their regions are. Implemented by `DualProvider` (libtorch).
pub trait PatchRelevance: Send + Sync {
    /// How the record names it (`clip:/models/clip`).
    fn label(&self) -> String;
    /// The same model as a frame scorer (F2C's relevance, `--sampler f2c`).
    fn scorer(&self) -> &dyn tokensieve_video::samplers::FrameScorer;
    /// The same model as a frame embedder (D-CoDe's image embeddings, `--sampler dcode`).
    fn embedder(&self) -> &dyn tokensieve_video::samplers::FrameEmbedder;
    /// The question's text embeddings `[rows, E]` (one row per `max_position_embeddings` ids).
    fn text(&self, question: &str) -> Result<Array2<f32>, RelevanceError>;
    /// Joint-space patch embeddings of `views` (a VLM's preprocessed pixels, normalised as `scale` says), from
    /// `hidden_states[layer]` (Python indexing), each view's patch grid averaged onto a `grid` = `(rows, cols)`
    /// token grid: `[views · rows · cols, E]`, view-major and row-major as the VLM lays out its tokens.
    fn patches(
        &self,
        views: &[&Pixels],
        scale: PixelScale,
        grid: (usize, usize),
        layer: i64,
    ) -> Result<Array2<f32>, RelevanceError>;
}

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
    /// The embeddings do not fit the visual tokens.
    #[error("{provider}: {reason}")]
    Shape {
        /// The provider.
        provider: String,
        /// What does not fit.
        reason: String,
    },
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
    use super::{PatchRelevance, PixelScale, RelevanceError, RelevanceSpec};
    use ndarray::Array2;
    use std::sync::Mutex;
    use tch::{Device, Kind, Tensor};
    use tokensieve_models::dual_encoder::{cosine, DualEncoder, DualKind};
    use tokensieve_video::preprocess::ImageProcessor;
    use tokensieve_video::preprocess::Pixels;
    use tokensieve_video::samplers::{EmbedError, FrameEmbedder, FrameScorer};
    use tokensieve_video::Frame;

    /// A dual encoder with its image processor, as a frame embedder and a frame scorer.
    pub struct DualProvider {
        label: String,
        /// Behind a lock so one provider can serve the engine from several threads (libtorch tensors are `Send`,
        /// not `Sync`); calls are whole forward passes, so the lock is never contended inside one.
        encoder: Mutex<DualEncoder>,
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
            Ok(DualProvider { label: spec.label(), encoder: Mutex::new(encoder), processor, device })
        }

        fn encoder(&self) -> std::sync::MutexGuard<'_, DualEncoder> {
            // A panic inside a forward pass leaves nothing half-written that a later call reads.
            self.encoder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            Ok(self.encoder().encode_images(&pixels, None)?.image)
        }

        /// `mean_t cos(E_img(f), E_txt(query)_t)` for every frame.
        pub fn frame_scores(&self, frames: &[Frame], query: &str) -> Result<Vec<f32>, RelevanceError> {
            let text = self.encoder().text_embeddings(query)?;
            let scores =
                cosine(&self.image_embeddings(frames)?, &text)?.f_mean_dim([1i64].as_slice(), false, Kind::Float)?;
            Ok(Vec::<f32>::try_from(scores.f_to_device(Device::Cpu)?)?)
        }

        fn wrap(&self, e: RelevanceError) -> EmbedError {
            EmbedError { embedder: self.label.clone(), source: Box::new(e) }
        }
    }

    /// `[rows, cols]` f32 tensor to an array.
    fn array(t: &Tensor) -> Result<Array2<f32>, RelevanceError> {
        let (rows, cols) = (t.size()[0] as usize, t.size()[1] as usize);
        let flat = Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_reshape([-1])?)?;
        Array2::from_shape_vec((rows, cols), flat)
            .map_err(|e| RelevanceError::Shape { provider: "dual encoder".into(), reason: e.to_string() })
    }

    impl PatchRelevance for DualProvider {
        fn label(&self) -> String {
            self.label.clone()
        }

        fn scorer(&self) -> &dyn FrameScorer {
            self
        }

        fn embedder(&self) -> &dyn FrameEmbedder {
            self
        }

        fn text(&self, question: &str) -> Result<Array2<f32>, RelevanceError> {
            array(&self.encoder().text_embeddings(question)?)
        }

        /// Each view is brought back to `0..1`, normalised as the checkpoint's own processor normalises, resized
        /// (bilinear, antialiased) to its square input when the sizes differ \[project\]: the same picture the VLM
        /// saw, so each patch covers the region its token covers (LLaVA-1.5 with CLIP ViT-L/14-336, CDPruner's
        /// setting, needs no resize and no pooling). The patch grid is then average-pooled (adaptively) onto the
        /// token grid.
        fn patches(
            &self,
            views: &[&Pixels],
            scale: PixelScale,
            (rows, cols): (usize, usize),
            layer: i64,
        ) -> Result<Array2<f32>, RelevanceError> {
            let _guard = tch::no_grad_guard();
            let encoder = self.encoder();
            let side = encoder.image_size() as i64;
            let (mean, std) = self.processor.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
            let rescale = self.processor.rescale.unwrap_or(1.0);
            // p' = ((p·std + mean) / rescale · rescale' − mean') / std', folded into one affine map per channel.
            let (mul, add): (Vec<f32>, Vec<f32>) = (0..3)
                .map(|c| {
                    let to_pixel = scale.std[c] / scale.rescale;
                    let offset = scale.mean[c] / scale.rescale;
                    let mul = to_pixel * rescale / std[c];
                    (mul as f32, ((offset * rescale - mean[c]) / std[c]) as f32)
                })
                .unzip();
            let device = self.device;
            let mul = Tensor::from_slice(&mul).f_view([1, 3, 1, 1])?.f_to_device(device)?;
            let add = Tensor::from_slice(&add).f_view([1, 3, 1, 1])?.f_to_device(device)?;
            let batch = views
                .iter()
                .map(|p| {
                    let t = Tensor::from_slice(&p.data).f_view([1, 3, p.height as i64, p.width as i64])?;
                    let t = t.f_to_device(device)?.f_mul(&mul)?.f_add(&add)?;
                    if (p.height as i64, p.width as i64) == (side, side) {
                        Ok(t)
                    } else {
                        t.f_internal_upsample_bilinear2d_aa([side, side].as_slice(), false, None, None)
                    }
                })
                .collect::<Result<Vec<_>, tch::TchError>>()?;
            let pixels = Tensor::f_cat(&batch, 0)?;
            let patches = encoder.encode_images(&pixels, Some(layer))?.patches.ok_or_else(|| {
                RelevanceError::Shape { provider: self.label.clone(), reason: "no patch embeddings".into() }
            })?;
            let (b, n, e) = (patches.size()[0], patches.size()[1], patches.size()[2]);
            let g = (n as f64).sqrt() as i64;
            if g * g != n {
                return Err(RelevanceError::Shape {
                    provider: self.label.clone(),
                    reason: format!("{n} patches are not a square grid"),
                });
            }
            let grid = patches.f_view([b, g, g, e])?.f_permute([0, 3, 1, 2])?;
            let pooled = grid.f_adaptive_avg_pool2d([rows as i64, cols as i64].as_slice())?;
            array(&pooled.f_permute([0, 2, 3, 1])?.f_reshape([-1, e])?)
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
            let dim = self.encoder().dim;
            Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect())
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
