//! The dual image-text encoders ([`crate::dual_encoder`]) on ONNX Runtime, from an export folder written by
//! `models/export/export_dual_onnx.py`: `onnx/vision_model.onnx` (pixels -> image embeddings and the joint-space
//! patch embeddings of the last two layers) and `onnx/text_model.onnx` (rows of ids -> every position's projected
//! state). Tokenisation, chunking and the pooled position are [`DualSpec`]'s, shared with the libtorch backend, so
//! both give the same embeddings (models/tests/onnx_parity.rs checks them against transformers' within 1e-5).
//!
//! The export holds the patch embeddings of `hidden_states[-1]` and `[-2]` only (the layers the query-aware methods
//! read); another layer is a typed error.

use crate::dual_encoder::{DualEncoderError, DualKind, DualSpec};
use crate::onnx_session::{build_session, float_input, take, OnnxError, OnnxOptions};
use crate::tokenizer::TextTokenizer;
use ndarray::{Array2, Array3};
use ort::session::Session;
use std::path::{Path, PathBuf};

/// An exported CLIP or SigLIP dual encoder.
pub struct OnnxDualEncoder {
    /// The configuration.
    pub spec: DualSpec,
    tokenizer: TextTokenizer,
    vision: (Session, PathBuf),
    text: (Session, PathBuf),
}

fn missing(path: &Path, output: &str) -> OnnxError {
    OnnxError::Output { path: path.to_path_buf(), output: output.into(), reason: "missing".into() }
}

fn shaped<Sh: ndarray::ShapeBuilder>(
    a: crate::onnx_session::Array,
    shape: Sh,
    path: &Path,
    output: &str,
) -> Result<ndarray::Array<f32, Sh::Dim>, OnnxError> {
    let found = a.shape.clone();
    ndarray::Array::from_shape_vec(shape, a.data).map_err(|e| OnnxError::Output {
        path: path.to_path_buf(),
        output: output.into(),
        reason: format!("shape {found:?}: {e}"),
    })
}

impl OnnxDualEncoder {
    /// Loads the export folder `dir` as a `kind` dual encoder.
    pub fn load(dir: &Path, kind: DualKind, options: &OnnxOptions) -> Result<Self, DualEncoderError> {
        let spec = DualSpec::read(dir, kind)?;
        let tokenizer = spec.tokenizer()?;
        let open = |name: &str| -> Result<(Session, PathBuf), DualEncoderError> {
            let path = dir.join("onnx").join(name);
            Ok((build_session(&path, options)?, path))
        };
        Ok(OnnxDualEncoder { tokenizer, vision: open("vision_model.onnx")?, text: open("text_model.onnx")?, spec })
    }

    /// Token ids of `text` with the checkpoint's special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DualEncoderError> {
        Ok(self.tokenizer.encode_with_special_tokens(text)?)
    }

    /// Text embeddings `[rows, E]` of `text` (chunked as [`DualSpec::text_rows`] cuts it).
    pub fn text_embeddings(&mut self, text: &str) -> Result<Array2<f32>, DualEncoderError> {
        let rows = self.spec.text_rows(&self.tokenize(text)?);
        let (session, path) = &mut self.text;
        let fail = |e: ort::Error| OnnxError::Ort { path: path.clone(), reason: e.to_string() };
        let ids = ort::value::TensorRef::from_array_view(([rows.rows as i64, rows.positions as i64], &rows.ids[..]))
            .map_err(fail)?;
        let outputs = session.run(ort::inputs!["input_ids" => ids]).map_err(fail)?;
        let states = take(&outputs, "text_embeds", path)?.ok_or_else(|| missing(path, "text_embeds"))?;
        let dim = self.spec.dim;
        let states: Array3<f32> = shaped(states, (rows.rows, rows.positions, dim), path, "text_embeds")?;
        let mut out = Array2::zeros((rows.rows, dim));
        for (r, &at) in rows.pooled_at.iter().enumerate() {
            out.row_mut(r).assign(&states.slice(ndarray::s![r, at as usize, ..]));
        }
        Ok(out)
    }

    /// Image embeddings `[B, E]` of `batch` preprocessed images (`pixels` `[B, 3, S, S]`), and the patch
    /// embeddings `[B, N, E]` of `hidden_states[patch_layer]` when asked (`-1` or `-2`).
    pub fn encode_images(
        &mut self,
        pixels: &[f32],
        batch: usize,
        patch_layer: Option<i64>,
    ) -> Result<(Array2<f32>, Option<Array3<f32>>), DualEncoderError> {
        let layers = self.spec.vision.num_hidden_layers;
        let output = match patch_layer.map(|l| self.spec.hidden_index(l)).transpose()? {
            None => None,
            Some(l) if l == layers => Some("patch_embeds_last"),
            Some(l) if l + 1 == layers => Some("patch_embeds_penultimate"),
            Some(_) => {
                return Err(DualEncoderError::Config {
                    path: self.vision.1.clone(),
                    reason: format!(
                        "the export holds the patch embeddings of layers -1 and -2 only, not {}",
                        patch_layer.unwrap_or_default()
                    ),
                })
            }
        };
        let side = self.spec.vision.image_size;
        let (session, path) = &mut self.vision;
        if pixels.len() != batch * 3 * side * side {
            return Err(OnnxError::Ort {
                path: path.clone(),
                reason: format!("{} pixel values for {batch} images of 3 x {side} x {side}", pixels.len()),
            }
            .into());
        }
        let view = float_input(session, "pixel_values", &[batch, 3, side, side], pixels, path)?;
        let outputs = session
            .run(vec![("pixel_values", view)])
            .map_err(|e| OnnxError::Ort { path: path.clone(), reason: e.to_string() })?;
        let dim = self.spec.dim;
        let image = take(&outputs, "image_embeds", path)?.ok_or_else(|| missing(path, "image_embeds"))?;
        let image = shaped(image, (batch, dim), path, "image_embeds")?;
        let patches = match output {
            Some(name) => {
                let p = take(&outputs, name, path)?.ok_or_else(|| missing(path, name))?;
                let n = self.spec.grid_side().pow(2);
                Some(shaped(p, (batch, n, dim), path, name)?)
            }
            None => None,
        };
        Ok((image, patches))
    }
}
