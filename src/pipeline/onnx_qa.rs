//! Question answering on the `onnx` backend: the same flow as [`super::video_qa::VideoQa`] (frames -> image
//! processor -> vision encoder -> pre-LLM pruner chain -> prompt -> decoder -> answer, with the same record), with
//! the tensors run by ONNX Runtime on an export in the community (Transformers.js) layout that
//! `models/export/export_onnx.py` writes: `config.json`, tokenizer and processor files, and `onnx/vision_encoder`,
//! `onnx/embed_tokens`, `onnx/decoder_model_merged` in the chosen precision (`_fp16`, `_quantized`, ... suffixes).
//! No libtorch is involved: the pruners run on the host ([`CpuBackend`]), OneVision's pooling and tile packing use
//! the host implementations in `tokensieve_models::onevision`, which the torch backend uses as well.
//!
//! Choices \[project\]:
//! - Everything backend-independent (pruner chain, budget, prompt, generation loop, record) is shared with the
//!   torch engine through [`super::qa`], so on the same checkpoint the two backends give the same answers.
//! - After pruning the prompt is rebuilt with one placeholder per kept token, and `inputs_embeds`, `attention_mask`
//!   and `position_ids` are built together from it: the mask covers the kept sequence, and by default kept tokens
//!   keep their original position ids (with gaps), as in the torch backend ([`super::qa::Positions`], ALGORITHMS.md
//!   §1.5); `contiguous` renumbers the pruned prompt.
//! - In-decoder pruning (FastV, PyramidDrop, ToDRE stage 2) needs a layer's attention rows, which the merged decoder
//!   graph does not expose; asking for it is an error ([`OnnxQa::check_options`]), never silently ignored.
//! - Sessions are built once at load and reused for every question; the encoder and decoder sit behind mutexes
//!   because an ONNX Runtime run needs exclusive access, so one `OnnxQa` answers one question at a time.

use super::custom_encoder::frame_tokens;
use super::qa::{
    generate, inspection_prompt, prompt_positions, prune_chain, question_prompt, span_offsets, square_pixels,
    square_side, unit_runs, Encoded, Measured, MediaKind, Newline, QaError, QaOptions, QaRecord, StageClock,
};
use crate::pipeline::flops::DecoderShape;
use ndarray::Array2;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokensieve_models::chat_template::ChatTemplate;
use tokensieve_models::onevision::{pack_image, pool_video, Views};
use tokensieve_models::onnx_decoder::{OnnxDecoder, OnnxKvCache};
use tokensieve_models::onnx_encoder::{EncoderOutput, OnnxVisionEncoder};
use tokensieve_models::onnx_session::{Array, OnnxOptions, Precision};
use tokensieve_models::sampling::TokenPicker;
use tokensieve_models::tokenizer::TextTokenizer;
use tokensieve_models::vlm_config::VlmConfig;
use tokensieve_pruners::{CpuBackend, Layout, PruneError};
use tokensieve_video::preprocess::anyres::AnyRes;
use tokensieve_video::preprocess::ImageProcessor;
use tokensieve_video::Frame;

/// What [`OnnxQa::prefill`] produced.
pub struct OnnxPrefilled {
    /// Logits of the last position `[V]`.
    pub logits: Vec<f32>,
    /// Tokens of the expanded prompt.
    pub prompt_tokens: usize,
    /// Visual tokens as placed in the prompt `[N, D]` (OneVision newlines included).
    pub visual: Array2<f32>,
    /// The encoder's CLS attention over the patches, flattened over frames (CLIP exports).
    pub cls_attention: Option<Vec<f32>>,
}

/// A loaded ONNX export of a `llava` / `llava_onevision` model with its tokenizer, processor and chat template.
pub struct OnnxQa {
    encoder: Mutex<OnnxVisionEncoder>,
    decoder: Mutex<OnnxDecoder>,
    tokenizer: TextTokenizer,
    processor: ImageProcessor,
    template: Option<ChatTemplate>,
    config: VlmConfig,
    /// OneVision's newline embedding `[D]` (from `onnx/export.json`).
    newline: Option<Vec<f32>>,
    shape: DecoderShape,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another question cannot leave a session half-updated: ONNX Runtime state lives in the run.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OnnxQa {
    /// Loads an export folder (`config.json`, `tokenizer.json`, `preprocessor_config.json`, `onnx/`) in `precision`,
    /// building every session once with `options`.
    pub fn load(dir: &Path, precision: Precision, options: &OnnxOptions) -> Result<Self, QaError> {
        let config_err = |name: &str, reason: String| QaError::Config { path: display(&dir.join(name)), reason };
        let read = |name: &str| -> Result<serde_json::Value, QaError> {
            let text = std::fs::read_to_string(dir.join(name)).map_err(|e| config_err(name, e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| config_err(name, e.to_string()))
        };
        let json = read("config.json")?;
        let config = VlmConfig::from_json(&json).map_err(|r| config_err("config.json", r))?;
        let text = json.get("text_config").unwrap_or(&json);
        let int = |key: &str| {
            text[key].as_u64().map(|v| v as usize).ok_or_else(|| config_err("config.json", format!("no `{key}`")))
        };
        let heads = int("num_attention_heads")?;
        let shape = DecoderShape {
            hidden: int("hidden_size")?,
            ffn: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: text["num_key_value_heads"].as_u64().map_or(heads, |v| v as usize),
        };
        let newline = match &config.onevision {
            Some(_) => {
                let info = read("onnx/export.json")?;
                let values = info["image_newline"].as_array().ok_or_else(|| {
                    config_err("onnx/export.json", "a llava_onevision export needs `image_newline`".into())
                })?;
                Some(values.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
            }
            None => None,
        };
        let processor = ImageProcessor::from_config(&read("preprocessor_config.json")?)
            .map_err(|e| config_err("preprocessor_config.json", e.to_string()))?;
        let template = ChatTemplate::from_hf_dir(dir).map_err(|reason| config_err("tokenizer_config.json", reason))?;
        let onnx = dir.join("onnx");
        Ok(OnnxQa {
            encoder: Mutex::new(OnnxVisionEncoder::load(&onnx.join(precision.file("vision_encoder")), options)?),
            decoder: Mutex::new(OnnxDecoder::load(&onnx, precision, options)?),
            tokenizer: TextTokenizer::from_hf_dir(dir)?,
            processor,
            template,
            config,
            newline,
            shape,
        })
    }

    /// Checks settings against this backend: in-decoder pruning needs attention rows the merged decoder graph does
    /// not return, so it is refused here.
    pub fn check_options(&self, opts: &QaOptions) -> Result<(), PruneError> {
        match &opts.in_llm {
            Some(m) => Err(PruneError::Param {
                method: m.name().into(),
                param: "backend".into(),
                reason: "in-decoder pruning is not supported on the onnx backend (the merged decoder graph does not \
                         return attention rows); use --backend torch"
                    .into(),
            }),
            None => Ok(()),
        }
    }

    /// The image processor the frames go through.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The visual tokens of `frames` before pruning (see [`crate::pipeline::engine::Engine`]).
    pub fn visual_tokens(&self, frames: &[Frame], kind: MediaKind) -> Result<super::qa::VisualTokens, QaError> {
        let enc = self.encode(frames, kind, &mut 0.0)?;
        Ok(super::qa::VisualTokens {
            features: enc.features,
            layout: enc.layout,
            cls_attention: enc.cls_attention,
            units: enc.units,
        })
    }

    fn tower(&self, pixels: &[f32], batch: usize) -> Result<EncoderOutput, QaError> {
        Ok(locked(&self.encoder).encode(pixels, batch, self.config.image_size)?)
    }

    /// Runs the encoder (and OneVision's pooling or packing) and says how the visual tokens are laid out;
    /// `preprocess_ms` receives the time spent turning frames into pixels.
    fn encode(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        preprocess_ms: &mut f64,
    ) -> Result<Encoded<Array2<f32>>, QaError> {
        let clock = Instant::now();
        let side = self.config.image_size;
        let mut square = |frames: &[Frame]| -> Result<EncoderOutput, QaError> {
            let pixels = square_pixels(&self.processor, frames, side);
            *preprocess_ms = clock.elapsed().as_secs_f64() * 1e3;
            self.tower(&pixels?, frames.len())
        };
        let matrix = |rows: Vec<f32>, d: usize| {
            Array2::from_shape_vec((rows.len() / d.max(1), d), rows)
                .map_err(|e| QaError::Config { path: "vision encoder output".into(), reason: e.to_string() })
        };
        let image = (self.config.image_token_id, "<image>");
        let Some(ov) = &self.config.onevision else {
            // LLaVA-1.5: every frame is one image of g x g tokens, all under one `<image>` span.
            let tokens = frame_tokens(square(frames)?)?;
            return Ok(Encoded {
                features: tokens.features,
                layout: tokens.layout,
                cls_attention: tokens.cls_attention,
                units: tokens.units,
                newline: Newline::None,
                placeholder: image,
            });
        };
        let newline = self.newline.as_deref().unwrap_or_default();
        let layout_err = |reason: String| QaError::Config { path: "visual tokens".into(), reason };
        match (kind, frames.len()) {
            (MediaKind::Video, _) => {
                let out = square(frames)?;
                let (f, d) = (out.features.shape[0], out.features.shape[2]);
                let pooled = pool_video(views(&out.features)).map_err(layout_err)?;
                let n = pooled.len() / (f * d).max(1);
                Ok(Encoded {
                    features: matrix(pooled, d)?,
                    layout: square_side(n).map(|g| Layout::frames(f, g, g)),
                    cls_attention: None,
                    units: (f, n),
                    newline: Newline::End,
                    placeholder: (ov.video_token_id, "<video>"),
                })
            }
            (MediaKind::Images, 1) => {
                let f = &frames[0];
                let anyres = AnyRes { pinpoints: ov.pinpoints.clone(), tile: side };
                let (tiles, grid) = anyres.tiles(&self.processor, &f.rgb, f.width as usize, f.height as usize);
                let batch = tiles.len();
                let pixels: Vec<f32> = tiles.into_iter().flat_map(|p| p.data).collect();
                *preprocess_ms = clock.elapsed().as_secs_f64() * 1e3;
                let out = self.tower(&pixels, batch)?;
                let d = out.features.shape[2];
                let size = (f.height as usize, f.width as usize);
                let (packed, n) =
                    pack_image(views(&out.features), size, grid, ov.max_patches, newline).map_err(layout_err)?;
                // The packed sequence (base view, tile map, row newlines) is pruned as one flat set.
                Ok(Encoded {
                    features: matrix(packed, d)?,
                    layout: None,
                    cls_attention: None,
                    units: (1, n),
                    newline: Newline::None,
                    placeholder: image,
                })
            }
            (MediaKind::Images, _) => {
                let out = square(frames)?;
                let (i, n, d) = (out.features.shape[0], out.features.shape[1], out.features.shape[2]);
                Ok(Encoded {
                    features: matrix(out.features.data, d)?,
                    layout: square_side(n).map(|g| Layout::Grid { views: i, frames: 1, height: g, width: g }),
                    cls_attention: out.cls_attention.map(|a| a.data),
                    units: (i, n),
                    newline: Newline::PerUnit,
                    placeholder: image,
                })
            }
        }
    }

    /// The kept rows with OneVision's newline embeddings put back where the unpruned model has them.
    fn with_newlines(
        &self,
        kept: Array2<f32>,
        origin: &[usize],
        enc: &Encoded<Array2<f32>>,
    ) -> Result<Array2<f32>, QaError> {
        let (Some(newline), false) = (&self.newline, enc.newline == Newline::None) else { return Ok(kept) };
        let bad = |reason: String| QaError::Config { path: "onnx/export.json".into(), reason };
        let row = ndarray::ArrayView2::from_shape((1, kept.ncols()), newline.as_slice()).map_err(|_| {
            bad(format!("image_newline has {} values, the visual tokens {}", newline.len(), kept.ncols()))
        })?;
        let mut parts = Vec::with_capacity(2 * enc.units.0 + 1);
        if enc.newline == Newline::End {
            parts.extend([kept.view(), row]);
        } else {
            for run in unit_runs(origin, enc.units.0, enc.units.1) {
                parts.push(kept.slice(ndarray::s![run, ..]));
                parts.push(row);
            }
        }
        ndarray::concatenate(ndarray::Axis(0), &parts).map_err(|e| bad(e.to_string()))
    }

    /// Token ids of `prompt` and their embeddings `[1, S, D]` with the rows of `placeholder_id` replaced, in order,
    /// by `visual`.
    fn embed_with(
        &self,
        prompt: &str,
        placeholder_id: i64,
        visual: &Array2<f32>,
    ) -> Result<(Vec<i64>, Array), QaError> {
        let ids: Vec<i64> = self.tokenizer.encode(prompt)?.iter().map(|&t| t as i64).collect();
        let mut embeds = locked(&self.decoder).embed(&ids)?;
        let d = embeds.shape[2];
        let slots: Vec<usize> = ids.iter().enumerate().filter(|(_, &t)| t == placeholder_id).map(|(p, _)| p).collect();
        if slots.len() != visual.nrows() || visual.ncols() != d {
            return Err(QaError::Prompt(format!(
                "{} placeholder tokens of width {d} for {} visual tokens of width {}",
                slots.len(),
                visual.nrows(),
                visual.ncols()
            )));
        }
        for (row, p) in visual.rows().into_iter().zip(slots) {
            for (dst, src) in embeds.data[p * d..(p + 1) * d].iter_mut().zip(row) {
                *dst = *src;
            }
        }
        Ok((ids, embeds))
    }

    /// One prefill without pruning, for inspection and parity checks (`tokensieve forward --backend onnx`); the
    /// prompt is handled as in [`super::video_qa::VideoQa::prefill`].
    pub fn prefill(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        prompt: &str,
        raw: bool,
    ) -> Result<OnnxPrefilled, QaError> {
        let mut preprocess_ms = 0.0;
        let mut enc = self.encode(frames, kind, &mut preprocess_ms)?;
        let origin: Vec<usize> = (0..enc.features.nrows()).collect();
        let features = std::mem::take(&mut enc.features);
        let visual = self.with_newlines(features, &origin, &enc)?;
        let (placeholder_id, placeholder) = enc.placeholder;
        let per_unit = enc.units.1 + usize::from(enc.newline == Newline::PerUnit);
        let expanded = inspection_prompt(
            self.template.as_ref(),
            prompt,
            raw,
            placeholder,
            visual.nrows(),
            (enc.units.0, per_unit),
        )?;
        let (ids, embeds) = self.embed_with(&expanded, placeholder_id, &visual)?;
        let logits = locked(&self.decoder).forward(&embeds, &mut OnnxKvCache::default())?;
        Ok(OnnxPrefilled { logits, prompt_tokens: ids.len(), visual, cls_attention: enc.cls_attention })
    }

    /// Answers `question` about `frames` after an optional system prompt, handing each new piece of the answer to
    /// `on_text` (`false` stops), as [`super::video_qa::VideoQa::ask_streaming`] does.
    pub fn ask_streaming(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        if let Some(m) = &opts.in_llm {
            self.check_options(opts).map_err(super::qa::pruning(m.name()))?;
        }
        let mut clock = StageClock::start();
        let mut preprocess_ms = 0.0;
        let mut enc = self.encode(frames, kind, &mut preprocess_ms)?;
        let mut ttft = clock.lap("encode");
        let features = std::mem::take(&mut enc.features);
        let chained = prune_chain(&CpuBackend, features, enc.layout, enc.cls_attention.take(), opts)?;
        let features = self.with_newlines(chained.features, &chained.origin, &enc)?;
        ttft += clock.lap("prune");
        let (placeholder_id, placeholder) = enc.placeholder;
        let prompt = question_prompt(self.template.as_ref(), system, placeholder, question)?;
        let expanded = prompt.replacen(placeholder, &vec![placeholder; features.nrows()].join(" "), 1);
        let (ids, embeds) = self.embed_with(&expanded, placeholder_id, &features)?;
        let span_start = ids.iter().position(|&t| t == placeholder_id).unwrap_or(0);
        let (offsets, unpruned) = span_offsets(&chained.origin, enc.units, enc.newline);
        let positions = prompt_positions(opts.positions, ids.len(), span_start, &offsets, unpruned);
        let mut decoder = locked(&self.decoder);
        let mut cache = OnnxKvCache::default();
        let logits = decoder.forward_at(&embeds, Some(&positions), &mut cache)?;
        let mut picker = TokenPicker::new(opts.sampling);
        let first = picker.pick_or_argmax(&logits) as i64;
        ttft += clock.lap("prefill");
        let mut step = |token: i64| -> Result<i64, QaError> {
            let embeds = decoder.embed(&[token])?;
            Ok(picker.pick_or_argmax(&decoder.forward(&embeds, &mut cache)?) as i64)
        };
        let generated = generate(&self.tokenizer, opts, first, &mut step, on_text)?;
        clock.lap("generate");
        let record = Measured {
            frames,
            visual_tokens: chained.visual_tokens,
            prefill_tokens: ids.len(),
            tokens_per_layer: vec![ids.len(); self.shape.layers],
            clock,
            preprocess_ms,
            ttft_ms: ttft,
            kv_bytes: cache.bytes(),
            shape: self.shape,
            generated: &generated,
        }
        .record();
        Ok((generated.answer, record))
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The encoder's `[B, N, D]` output as OneVision layout views.
fn views(a: &Array) -> Views<'_> {
    Views { data: &a.data, views: a.shape[0], tokens: a.shape[1], dim: a.shape[2] }
}
