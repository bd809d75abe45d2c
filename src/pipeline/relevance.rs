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

#[cfg(any(feature = "torch", feature = "onnx"))]
pub use dual::DualProvider;

#[cfg(any(feature = "torch", feature = "onnx"))]
mod dual {
    use super::{PatchRelevance, PixelScale, RelevanceError, RelevanceSpec};
    use ndarray::{Array2, Array3};
    use std::sync::Mutex;
    use tokensieve_models::dual_encoder::{DualKind, DualSpec};
    use tokensieve_video::preprocess::{ImageProcessor, Pixels};
    use tokensieve_video::samplers::{EmbedError, FrameEmbedder, FrameScorer};
    use tokensieve_video::Frame;

    /// The model behind a provider: the checkpoint on libtorch, or its ONNX export (a folder holding
    /// `onnx/vision_model.onnx`, from `models/export/export_dual_onnx.py`). Only the towers differ; pixels, pooling
    /// and scores are computed here, once for both.
    enum Backend {
        #[cfg(feature = "torch")]
        Torch(Box<tokensieve_models::dual_encoder::DualEncoder>, tch::Device),
        #[cfg(feature = "onnx")]
        Onnx(Box<tokensieve_models::onnx_dual_encoder::OnnxDualEncoder>),
    }

    impl Backend {
        fn spec(&self) -> &DualSpec {
            match self {
                #[cfg(feature = "torch")]
                Backend::Torch(e, _) => &e.spec,
                #[cfg(feature = "onnx")]
                Backend::Onnx(e) => &e.spec,
            }
        }

        /// Text embeddings `[rows, E]`.
        fn text(&mut self, question: &str) -> Result<Array2<f32>, RelevanceError> {
            match self {
                #[cfg(feature = "torch")]
                Backend::Torch(e, _) => tensor_2d(&e.text_embeddings(question)?),
                #[cfg(feature = "onnx")]
                Backend::Onnx(e) => Ok(e.text_embeddings(question)?),
            }
        }

        /// Image embeddings `[B, E]` of `[B, 3, S, S]` pixels and the patch embeddings `[B, N, E]` of `layer`.
        fn images(
            &mut self,
            pixels: &[f32],
            batch: usize,
            layer: Option<i64>,
        ) -> Result<(Array2<f32>, Option<Array3<f32>>), RelevanceError> {
            match self {
                #[cfg(feature = "torch")]
                Backend::Torch(e, device) => {
                    let side = e.image_size() as i64;
                    let t = tch::Tensor::from_slice(pixels).f_view([batch as i64, 3, side, side])?;
                    let out = e.encode_images(&t.f_to_device(*device)?, layer)?;
                    let patches = match &out.patches {
                        Some(p) => {
                            let (n, d) = (p.size()[1] as usize, p.size()[2] as usize);
                            let flat = tensor_2d(&p.f_reshape([-1, d as i64])?)?;
                            Some(Array3::from_shape_vec((batch, n, d), flat.into_raw_vec_and_offset().0).map_err(
                                |e| RelevanceError::Shape { provider: "dual encoder".into(), reason: e.to_string() },
                            )?)
                        }
                        None => None,
                    };
                    Ok((tensor_2d(&out.image)?, patches))
                }
                #[cfg(feature = "onnx")]
                Backend::Onnx(e) => Ok(e.encode_images(pixels, batch, layer)?),
            }
        }
    }

    /// `[rows, cols]` tensor to an array.
    #[cfg(feature = "torch")]
    fn tensor_2d(t: &tch::Tensor) -> Result<Array2<f32>, RelevanceError> {
        let (rows, cols) = (t.size()[0] as usize, t.size()[1] as usize);
        let t = t.f_to_kind(tch::Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_reshape([-1])?;
        Array2::from_shape_vec((rows, cols), Vec::<f32>::try_from(t)?)
            .map_err(|e| RelevanceError::Shape { provider: "dual encoder".into(), reason: e.to_string() })
    }

    /// A dual encoder with its image processor, as a frame embedder, a frame scorer and the engine's
    /// [`PatchRelevance`].
    pub struct DualProvider {
        label: String,
        /// Behind a lock so one provider can serve the engine from several threads (libtorch tensors and ONNX
        /// sessions are not `Sync`); calls are whole forward passes, so the lock is never contended inside one.
        backend: Mutex<Backend>,
        processor: ImageProcessor,
        side: usize,
        grid: usize,
        dim: usize,
    }

    impl DualProvider {
        /// Loads the checkpoint a [`RelevanceSpec::Dual`] names: an ONNX export folder on ONNX Runtime, otherwise
        /// the safetensors checkpoint on libtorch (on `device`, f32).
        pub fn load(
            spec: &RelevanceSpec,
            #[cfg(feature = "torch")] device: tch::Device,
        ) -> Result<Self, RelevanceError> {
            let RelevanceSpec::Dual { family, model } = spec else {
                return Err(RelevanceError::Spec {
                    given: spec.label(),
                    reason: "is not a dual encoder (clip:MODEL or siglip:MODEL)".into(),
                });
            };
            let dir = crate::hub::resolve(model)?;
            let kind = if *family == "clip" { DualKind::Clip } else { DualKind::Siglip };
            let backend = load_backend(
                &dir,
                kind,
                #[cfg(feature = "torch")]
                device,
            )?;
            let path = dir.join("preprocessor_config.json");
            let processor_error = |reason: String| RelevanceError::Processor { path: path.clone(), reason };
            let text = std::fs::read_to_string(&path).map_err(|e| processor_error(e.to_string()))?;
            let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| processor_error(e.to_string()))?;
            let processor = ImageProcessor::from_config(&config).map_err(|e| processor_error(e.to_string()))?;
            let (side, grid, dim) = (backend.spec().vision.image_size, backend.spec().grid_side(), backend.spec().dim);
            Ok(DualProvider { label: spec.label(), backend: Mutex::new(backend), processor, side, grid, dim })
        }

        fn backend(&self) -> std::sync::MutexGuard<'_, Backend> {
            // A panic inside a forward pass leaves nothing half-written that a later call reads.
            self.backend.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Image embeddings `[F, E]` of `frames` through the checkpoint's own image processor.
        pub fn image_embeddings(&self, frames: &[Frame]) -> Result<Array2<f32>, RelevanceError> {
            let pixels: Vec<f32> = frames
                .iter()
                .flat_map(|f| self.processor.preprocess(&f.rgb, f.width as usize, f.height as usize).data)
                .collect();
            Ok(self.backend().images(&pixels, frames.len(), None)?.0)
        }

        /// `mean_t cos(E_img(f), E_txt(query)_t)` for every frame.
        pub fn frame_scores(&self, frames: &[Frame], query: &str) -> Result<Vec<f32>, RelevanceError> {
            let text = unit_rows(self.backend().text(query)?);
            let images = unit_rows(self.image_embeddings(frames)?);
            Ok(images.dot(&text.t()).mean_axis(ndarray::Axis(1)).map(|m| m.to_vec()).unwrap_or_default())
        }

        fn wrap(&self, e: RelevanceError) -> EmbedError {
            EmbedError { embedder: self.label.clone(), source: Box::new(e) }
        }
    }

    fn load_backend(
        dir: &std::path::Path,
        kind: DualKind,
        #[cfg(feature = "torch")] device: tch::Device,
    ) -> Result<Backend, RelevanceError> {
        if tokensieve_models::dual_encoder::is_onnx_export(dir) {
            #[cfg(feature = "onnx")]
            return Ok(Backend::Onnx(Box::new(tokensieve_models::onnx_dual_encoder::OnnxDualEncoder::load(
                dir,
                kind,
                &Default::default(),
            )?)));
            #[cfg(not(feature = "onnx"))]
            return Err(RelevanceError::Model(tokensieve_models::dual_encoder::DualEncoderError::Config {
                path: dir.to_path_buf(),
                reason: "an ONNX export, and this build has no ONNX Runtime backend: give the checkpoint folder".into(),
            }));
        }
        #[cfg(feature = "torch")]
        return Ok(Backend::Torch(
            Box::new(tokensieve_models::dual_encoder::DualEncoder::load(dir, kind, device, tch::Kind::Float)?),
            device,
        ));
        #[cfg(not(feature = "torch"))]
        Err(RelevanceError::Model(tokensieve_models::dual_encoder::DualEncoderError::Config {
            path: dir.to_path_buf(),
            reason: "this build runs dual encoders on ONNX Runtime only: give an export folder \
                     (models/export/export_dual_onnx.py)"
                .into(),
        }))
    }

    /// Rows scaled to unit length (zero rows stay zero).
    fn unit_rows(mut m: Array2<f32>) -> Array2<f32> {
        for mut row in m.rows_mut() {
            let n = row.dot(&row).sqrt().max(1e-12);
            row /= n;
        }
        m
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
            self.backend().text(question)
        }

        /// Each view is brought back to `0..1`, normalised as the checkpoint's own processor normalises, resized
        /// (bilinear, antialiased, as torch's `interpolate(antialias=True)`) to its square input when the sizes
        /// differ \[project\]: the same picture the VLM saw, so each patch covers the region its token covers
        /// (LLaVA-1.5 with CLIP ViT-L/14-336, CDPruner's setting, needs no resize and no pooling). The patch grid
        /// is then average-pooled (as `adaptive_avg_pool2d`) onto the token grid.
        fn patches(
            &self,
            views: &[&Pixels],
            scale: PixelScale,
            (rows, cols): (usize, usize),
            layer: i64,
        ) -> Result<Array2<f32>, RelevanceError> {
            let (mean, std) = self.processor.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
            let rescale = self.processor.rescale.unwrap_or(1.0);
            // p' = ((p·std + mean) / rescale · rescale' − mean') / std', one affine map per channel.
            let affine: Vec<(f32, f32)> = (0..3)
                .map(|c| {
                    let mul = scale.std[c] / scale.rescale * rescale / std[c];
                    let add = (scale.mean[c] / scale.rescale * rescale - mean[c]) / std[c];
                    (mul as f32, add as f32)
                })
                .collect();
            let side = self.side;
            let mut pixels = Vec::with_capacity(views.len() * 3 * side * side);
            for p in views {
                for (c, &(mul, add)) in affine.iter().enumerate() {
                    let channel = p.data[c * p.height * p.width..(c + 1) * p.height * p.width].iter();
                    let renormed = channel.map(|v| v * mul + add);
                    if (p.height, p.width) == (side, side) {
                        pixels.extend(renormed);
                    } else {
                        pixels.extend(resize_aa(&renormed.collect::<Vec<_>>(), p.height, p.width, side, side));
                    }
                }
            }
            let patches = self.backend().images(&pixels, views.len(), Some(layer))?.1.ok_or_else(|| {
                RelevanceError::Shape { provider: self.label.clone(), reason: "no patch embeddings".into() }
            })?;
            let g = self.grid;
            if patches.shape()[1] != g * g {
                return Err(RelevanceError::Shape {
                    provider: self.label.clone(),
                    reason: format!("{} patches are not its {g} x {g} grid", patches.shape()[1]),
                });
            }
            let mut out = Array2::zeros((views.len() * rows * cols, self.dim));
            let bins = |i: usize, n: usize, of: usize| (i * of / n)..((i + 1) * of).div_ceil(n);
            for (v, view) in patches.outer_iter().enumerate() {
                for r in 0..rows {
                    for c in 0..cols {
                        let mut cell = out.row_mut((v * rows + r) * cols + c);
                        let (ys, xs) = (bins(r, rows, g), bins(c, cols, g));
                        let count = (ys.len() * xs.len()) as f32;
                        for y in ys {
                            for x in xs.clone() {
                                cell.scaled_add(1.0 / count, &view.row(y * g + x));
                            }
                        }
                    }
                }
            }
            Ok(out)
        }
    }

    /// A `h x w` plane resized to `oh x ow` with the antialiased bilinear (triangle) filter PyTorch's
    /// `interpolate(mode="bilinear", antialias=True, align_corners=False)` and Pillow use: the filter widens by the
    /// scale when shrinking; separable, weights normalised per output. Unchanged when the size is.
    pub(crate) fn resize_aa(plane: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
        if (h, w) == (oh, ow) {
            return plane.to_vec();
        }
        let taps = |input: usize, output: usize| -> Vec<(usize, Vec<f32>)> {
            let scale = input as f64 / output as f64;
            let support = scale.max(1.0);
            let inv = 1.0 / scale.max(1.0);
            (0..output)
                .map(|i| {
                    let centre = scale * (i as f64 + 0.5);
                    let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
                    let hi = ((centre + support + 0.5).floor() as usize).min(input);
                    let weights: Vec<f64> =
                        (lo..hi).map(|j| (1.0 - ((j as f64 - centre + 0.5) * inv).abs()).max(0.0)).collect();
                    let total: f64 = weights.iter().sum();
                    (lo, weights.iter().map(|v| (v / total.max(1e-12)) as f32).collect())
                })
                .collect()
        };
        let (across, down) = (taps(w, ow), taps(h, oh));
        let mut wide = vec![0f32; h * ow];
        for y in 0..h {
            for (x, (lo, ws)) in across.iter().enumerate() {
                wide[y * ow + x] = ws.iter().enumerate().map(|(k, wt)| wt * plane[y * w + lo + k]).sum();
            }
        }
        let mut out = vec![0f32; oh * ow];
        for (y, (lo, ws)) in down.iter().enumerate() {
            for x in 0..ow {
                out[y * ow + x] = ws.iter().enumerate().map(|(k, wt)| wt * wide[(lo + k) * ow + x]).sum();
            }
        }
        out
    }

    impl FrameEmbedder for DualProvider {
        fn name(&self) -> String {
            self.label.clone()
        }

        fn embed(&self, frames: &[Frame]) -> Result<Vec<Vec<f32>>, EmbedError> {
            let e = self.image_embeddings(frames).map_err(|e| self.wrap(e))?;
            Ok(e.rows().into_iter().map(|r| r.to_vec()).collect())
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

    #[cfg(all(test, feature = "torch"))]
    mod tests {
        #[test]
        fn the_host_resize_is_torchs_antialiased_bilinear() {
            for (h, w, oh, ow) in [(37, 53, 32, 32), (24, 24, 32, 32), (64, 48, 16, 20)] {
                let plane: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
                let ours = super::resize_aa(&plane, h, w, oh, ow);
                let t = tch::Tensor::from_slice(&plane).view([1, 1, h as i64, w as i64]);
                let theirs = t.internal_upsample_bilinear2d_aa([oh as i64, ow as i64].as_slice(), false, None, None);
                let theirs = Vec::<f32>::try_from(theirs.reshape([-1])).unwrap();
                let d = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(d < 1e-5, "{h}x{w} -> {oh}x{ow}: {d}");
            }
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
