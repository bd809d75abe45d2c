//! [`CustomEncoder`]: a vision encoder the user brings as an `.onnx` file (any graph mapping preprocessed pixels
//! `[B, 3, S, S]` to patch tokens `[B, N, D]`, or `[1, 3, S, S]` to `[N, D]`), with the Hugging Face image processor
//! settings it was trained with. Its tokens go to the same pruners as a model's (`tokensieve compress --backend onnx
//! --model encoder.onnx --processor preprocessor_config.json`); a `attention` (or `cls_attention`) output `[B, N]`,
//! when the graph has one, feeds the attention-based pruners.
//!
//! Choices \[project\]: frames are encoded in one batch when the graph returns `[B, N, D]`, one by one when it returns
//! `[N, D]`; `N` tokens per frame form a square grid layout when `N` is a square (needed by the spatial pruners and
//! the `compress` picture), otherwise a flat set.

use super::qa::{square_pixels, square_side, Newline, QaError, VisualTokens};
use ndarray::Array2;
use std::path::Path;
use std::sync::Mutex;
use tokensieve_models::onnx_encoder::{EncoderOutput, OnnxVisionEncoder};
use tokensieve_models::onnx_session::OnnxOptions;
use tokensieve_pruners::Layout;
use tokensieve_video::preprocess::ImageProcessor;
use tokensieve_video::Frame;

/// A user's ONNX vision encoder with its image processor.
pub struct CustomEncoder {
    encoder: Mutex<OnnxVisionEncoder>,
    processor: ImageProcessor,
}

/// Frame tokens `[F·N, D]` from an encoder output `[F, N, D]`, with the grid layout when `N` is a square and the
/// CLS attention when the graph returns it.
pub(crate) fn frame_tokens(out: EncoderOutput) -> Result<VisualTokens, QaError> {
    let (f, n, d) = (out.features.shape[0], out.features.shape[1], out.features.shape[2]);
    let features = Array2::from_shape_vec((f * n, d), out.features.data)
        .map_err(|e| QaError::Config { path: "vision encoder output".into(), reason: e.to_string() })?;
    Ok(VisualTokens {
        features,
        attention: out.cls_attention.map(|a| a.data),
        keys: None,
        layout: square_side(n).map(|g| Layout::frames(f, g, g)),
        units: (f, n),
        newline: Newline::None,
        placeholder: (-1, ""),
        anyres: None,
        deepstack: None,
        ragged: None,
    })
}

impl CustomEncoder {
    /// Loads the encoder graph `model` and the processor settings `processor_config` (a `preprocessor_config.json`).
    pub fn load(model: &Path, processor_config: &Path, options: &OnnxOptions) -> Result<Self, QaError> {
        let config = |reason: String| QaError::Config { path: processor_config.display().to_string(), reason };
        let text = std::fs::read_to_string(processor_config).map_err(|e| config(e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| config(e.to_string()))?;
        let processor = ImageProcessor::from_config(&json).map_err(|e| config(e.to_string()))?;
        Ok(CustomEncoder { encoder: Mutex::new(OnnxVisionEncoder::load(model, options)?), processor })
    }

    /// The image processor the frames go through.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The patch tokens of `frames`, frame after frame.
    pub fn visual_tokens(&self, frames: &[Frame]) -> Result<VisualTokens, QaError> {
        let Some(first) = frames.first() else {
            return Err(QaError::Config { path: "frames".into(), reason: "no frame to encode".into() });
        };
        let side = self.processor.preprocess(&first.rgb, first.width as usize, first.height as usize).width;
        let pixels = square_pixels(&self.processor, frames, side)?;
        let mut encoder = self.encoder.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if encoder.batched() {
            return frame_tokens(encoder.encode(&pixels, frames.len(), side)?);
        }
        let per_frame = 3 * side * side;
        let mut outs = Vec::with_capacity(frames.len());
        for chunk in pixels.chunks(per_frame) {
            outs.push(encoder.encode(chunk, 1, side)?);
        }
        let mut all = outs.remove(0);
        for out in outs {
            all.features.shape[0] += 1;
            all.features.data.extend(out.features.data);
            if let (Some(a), Some(b)) = (all.cls_attention.as_mut(), out.cls_attention) {
                a.shape[0] += 1;
                a.data.extend(b.data);
            }
        }
        frame_tokens(all)
    }
}
