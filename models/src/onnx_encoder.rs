//! The `onnx` backend's vision encoder: an ONNX graph mapping pixels `[B, 3, S, S]` to visual tokens `[B, N, D]`,
//! run with ONNX Runtime (the library setup takes out of the PyPI wheel, loaded at run time). It reads the
//! `vision_encoder.onnx` that `models/export/export_onnx.py` writes (outputs `image_features`, `attention` and `keys`
//! at the feature layer, the signals attention-based pruners read) or any user encoder whose first output is
//! the `[B, N, D]` tokens.
//!
//! The session is built once (intra-op threads, memory-pattern planning and the graph optimisation level are the
//! settings that matter on small machines) and reused; pixels are handed to ONNX Runtime as a view of the caller's
//! slice, without a copy. Cost: one graph run, O(B·N·D·layers) like the tower itself.

use crate::onnx_session::{build_session, float_input, take, Array, OnnxError, OnnxOptions};
use ort::session::Session;
use std::path::{Path, PathBuf};

/// What the encoder returned.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutput {
    /// Visual tokens `[B, N, D]` (the first output, or `image_features`).
    pub features: Array,
    /// Attention per token `[B, N]`: the `attention` output (the export's feature-layer signal: CLS row, or the mean
    /// attention received for towers without CLS), or an older export's `cls_attention`.
    pub cls_attention: Option<Array>,
    /// Keys averaged over heads `[B, N, d]` at the feature layer, when the graph has a `keys` output.
    pub keys: Option<Array>,
}

/// A loaded ONNX vision encoder.
pub struct OnnxVisionEncoder {
    session: Session,
    path: PathBuf,
    input: String,
    features: String,
    batched: bool,
}

impl OnnxVisionEncoder {
    /// Loads `path` with `options`, after checking that the ONNX Runtime library can be loaded.
    pub fn load(path: &Path, options: &OnnxOptions) -> Result<Self, OnnxError> {
        let session = build_session(path, options)?;
        let fail = |e: &str| OnnxError::Ort { path: path.to_path_buf(), reason: e.to_string() };
        let input =
            session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| fail("the graph has no input"))?;
        let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let features = names
            .iter()
            .find(|n| *n == "image_features")
            .or_else(|| names.first())
            .cloned()
            .ok_or_else(|| fail("the graph has no output"))?;
        // A two-dimensional token output ([N, D]) means one image per run.
        let batched = session.outputs().iter().find(|o| o.name() == features).is_none_or(|o| match o.dtype() {
            ort::value::ValueType::Tensor { shape, .. } => shape.len() != 2,
            _ => true,
        });
        Ok(OnnxVisionEncoder { session, path: path.to_path_buf(), input, features, batched })
    }

    /// Whether one run encodes a batch (`[B, N, D]` tokens); `false` for encoders returning `[N, D]` for one image.
    pub fn batched(&self) -> bool {
        self.batched
    }

    /// Encodes `batch` preprocessed images of `side x side` (`pixels` is `[batch, 3, side, side]`, row-major).
    pub fn encode(&mut self, pixels: &[f32], batch: usize, side: usize) -> Result<EncoderOutput, OnnxError> {
        let path = self.path.clone();
        let fail = |e: &dyn std::fmt::Display| OnnxError::Ort { path: path.clone(), reason: e.to_string() };
        if pixels.len() != batch * 3 * side * side {
            return Err(fail(&format!("{} pixel values for {batch} images of 3 x {side} x {side}", pixels.len())));
        }
        let view = float_input(&self.session, &self.input, &[batch, 3, side, side], pixels, &path)?;
        let outputs = self.session.run(vec![(self.input.as_str(), view)]).map_err(|e| fail(&e))?;
        let mut features = take(&outputs, &self.features, &path)?.ok_or_else(|| OnnxError::Output {
            path: path.clone(),
            output: self.features.clone(),
            reason: "missing".into(),
        })?;
        // A user encoder may return `[N, D]` for a single image.
        if features.shape.len() == 2 && batch == 1 {
            features.shape.insert(0, 1);
        }
        if features.shape.len() != 3 || features.shape[0] != batch {
            return Err(OnnxError::Output {
                path: path.clone(),
                output: self.features.clone(),
                reason: format!("shape {:?}, expected [{batch}, N, D]", features.shape),
            });
        }
        Ok(EncoderOutput {
            features,
            cls_attention: match take(&outputs, "attention", &path)? {
                Some(a) => Some(a),
                None => take(&outputs, "cls_attention", &path)?,
            },
            keys: take(&outputs, "keys", &path)?,
        })
    }
}
