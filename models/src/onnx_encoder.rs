//! The `onnx` backend's vision encoder: an ONNX graph mapping pixels `[B, 3, S, S]` to visual tokens `[B, N, D]`,
//! run with ONNX Runtime (the library setup takes out of the PyPI wheel, loaded at run time). It reads the
//! `vision_encoder.onnx` that `models/export/export_onnx.py` writes (outputs `image_features`, `attention` and `keys`
//! at the feature layer, the signals attention-based pruners read) or any user encoder whose first output is
//! the `[B, N, D]` tokens.
//!
//! Qwen-VL exports (`models/export/qwen_onnx.py`) take native-resolution patches instead: one temporal patch per run
//! (every temporal patch is its own attention sequence, so this is exact and bounds the graph's memory by one
//! frame), with the grid inputs transformers computes in Python loops (rotary ids, the window batches, Qwen3-VL's
//! position-table taps) computed here by [`crate::qwen_grid`], the same code the libtorch tower uses
//! ([`OnnxVisionEncoder::encode_grid`]).
//!
//! The session is built once (intra-op threads, memory-pattern planning and the graph optimisation level are the
//! settings that matter on small machines) and reused; pixels are handed to ONNX Runtime as a view of the caller's
//! slice, without a copy. Cost: one graph run, O(B·N·D·layers) like the tower itself.

use crate::onnx_session::{build_session, float_input, take, Array, OnnxError, OnnxOptions};
use crate::qwen_grid::{interpolation_taps, patch_positions, QwenVisionConfig, Windows};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};
use std::borrow::Cow;
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

/// What a native-resolution (Qwen-VL) encoder returned for one grid of `t` temporal patches, merged tokens in
/// (temporal patch, row, col) order.
#[derive(Debug, Clone, PartialEq)]
pub struct GridOutput {
    /// `[t · tokens, dim]` merged tokens.
    pub features: Vec<f32>,
    /// Merged tokens per temporal patch.
    pub tokens: usize,
    /// Their width.
    pub dim: usize,
    /// `[t · tokens]` attention each merged token receives in the last full-attention block (pooled over its
    /// patches).
    pub attention: Option<Vec<f32>>,
    /// `[t · tokens, key_dim]` keys of that block (mean over heads, pooled) and `key_dim`.
    pub keys: Option<(Vec<f32>, usize)>,
    /// Qwen3-VL's DeepStack planes `[t · tokens, levels x dim]` (each token's levels side by side) and `levels`.
    pub deepstack: Option<(Vec<f32>, usize)>,
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

    /// Whether the graph takes native-resolution patches with grid inputs (a Qwen-VL export) rather than square
    /// pixels.
    pub fn takes_grid(&self) -> bool {
        self.session.inputs().iter().any(|i| i.name() == "position_ids")
    }

    /// Encodes the patches `[t·h·w, patch_values]` of a `(t, h, w)` grid in the processor's order, one temporal
    /// patch per run, with the grid inputs the export names (`window_*` for Qwen2.5-VL, `interp_*` for Qwen3-VL).
    pub fn encode_grid(
        &mut self,
        patches: &[f32],
        grid: [usize; 3],
        config: &QwenVisionConfig,
    ) -> Result<GridOutput, OnnxError> {
        let path = self.path.clone();
        let fail = |e: &dyn std::fmt::Display| OnnxError::Ort { path: path.clone(), reason: e.to_string() };
        let [t, h, w] = grid;
        let (m, values) = (config.spatial_merge_size.max(1), config.patch_values());
        let p = h * w;
        if t == 0 || h == 0 || w == 0 || h % m != 0 || w % m != 0 || patches.len() != t * p * values {
            return Err(fail(&format!(
                "{} patch values for grid {grid:?} of {values}-value patches (height and width multiples of {m})",
                patches.len()
            )));
        }
        let has = |name: &str| self.session.inputs().iter().any(|i| i.name() == name);
        let (windowed, learned) = (has("window_index"), has("interp_indices"));
        let (mh, mw, unit) = (h / m, w / m, m * m);
        let n = mh * mw;
        let positions = patch_positions(h, w, m);
        let windows = windowed.then(|| Windows::new(mh, mw, config.window_side(mh, mw), unit));
        let real = windows.as_ref().map(Windows::real_rows);
        let reverse = windows.as_ref().map(Windows::reverse);
        let taps = learned
            .then(|| {
                let entries = config.num_position_embeddings.unwrap_or(2304);
                let side = (entries as f64).sqrt().round() as usize;
                (side * side == entries)
                    .then(|| interpolation_taps(h, w, side, m))
                    .ok_or_else(|| fail(&format!("vision_config.num_position_embeddings {entries} is not a square")))
            })
            .transpose()?;
        let (mut features, mut attention, mut keys, mut deepstack) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut dim, mut key_dim, mut levels) = (0, 0, 0);
        for f in 0..t {
            let frame = &patches[f * p * values..(f + 1) * p * values];
            let ids = |name, shape, data| index_input(name, shape, data, &path);
            let mut inputs = vec![
                (
                    Cow::Borrowed("pixel_values"),
                    float_input(&self.session, "pixel_values", &[p, values], frame, &path)?,
                ),
                ids("position_ids", vec![p as i64, 2], &positions)?,
            ];
            if let (Some(win), Some(real), Some(reverse)) = (&windows, &real, &reverse) {
                let (count, width) = (win.count as i64, win.width as i64);
                inputs.push(ids("window_index", vec![n as i64], &win.order)?);
                inputs.push(ids("reverse_index", vec![n as i64], reverse)?);
                inputs.push(ids("window_rows", vec![count, width], &win.gather)?);
                let valid = Tensor::from_array(([count, width], win.valid.clone())).map_err(|e| fail(&e))?;
                inputs.push((Cow::Borrowed("window_valid"), valid.into()));
                inputs.push(ids("real_rows", vec![p as i64], real)?);
            }
            if let Some((index, weight)) = &taps {
                inputs.push(ids("interp_indices", vec![p as i64, 4], index)?);
                let weight = float_input(&self.session, "interp_weights", &[p, 4], weight, &path)?;
                inputs.push((Cow::Borrowed("interp_weights"), weight));
            }
            let outputs = self.session.run(inputs).map_err(|e| fail(&e))?;
            let output = |name: &str| -> Result<Array, OnnxError> {
                take(&outputs, name, &path)?.ok_or_else(|| OnnxError::Output {
                    path: path.clone(),
                    output: name.into(),
                    reason: "missing".into(),
                })
            };
            let shaped = |name: &str, a: &Array, want: &[usize]| -> Result<(), OnnxError> {
                (a.shape == want).then_some(()).ok_or_else(|| OnnxError::Output {
                    path: path.clone(),
                    output: name.into(),
                    reason: format!("shape {:?}, expected {want:?} for a {h} x {w} patch frame", a.shape),
                })
            };
            let tokens = output("image_features")?;
            dim = tokens.shape.get(1).copied().unwrap_or(0);
            shaped("image_features", &tokens, &[n, dim])?;
            features.extend(tokens.data);
            let a = output("attention")?;
            shaped("attention", &a, &[n])?;
            attention.extend(a.data);
            let k = output("keys")?;
            key_dim = k.shape.get(1).copied().unwrap_or(0);
            shaped("keys", &k, &[n, key_dim])?;
            keys.extend(k.data);
            if let Some(planes) = take(&outputs, "deepstack", &path)? {
                levels = planes.shape.first().copied().unwrap_or(0);
                shaped("deepstack", &planes, &[levels, n, dim])?;
                // [levels, n, D] -> each token's levels side by side.
                for token in 0..n {
                    for level in 0..levels {
                        let at = (level * n + token) * dim;
                        deepstack.extend_from_slice(&planes.data[at..at + dim]);
                    }
                }
            }
        }
        Ok(GridOutput {
            features,
            tokens: n,
            dim,
            attention: Some(attention),
            keys: Some((keys, key_dim)),
            deepstack: (levels > 0).then_some((deepstack, levels)),
        })
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

/// An `i64` graph input viewing `data` (no copy).
fn index_input<'v>(
    name: &'static str,
    shape: Vec<i64>,
    data: &'v [i64],
    path: &Path,
) -> Result<(Cow<'static, str>, SessionInputValue<'v>), OnnxError> {
    let view = TensorRef::from_array_view((shape, data))
        .map_err(|e| OnnxError::Ort { path: path.to_path_buf(), reason: format!("input `{name}`: {e}") })?;
    Ok((Cow::Borrowed(name), view.into()))
}
