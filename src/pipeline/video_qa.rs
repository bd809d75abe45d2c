//! Question answering over a video, images or camera views with a LLaVA or LLaVA-OneVision model: frames -> image
//! processor -> vision tower + projector -> pre-LLM pruner chain -> prompt -> decoder (optionally pruning inside it)
//! -> answer, with the record of every stage.
//!
//! Choices \[project\]:
//! - Budget: resolved once against all visual tokens (`k`), and every pre-LLM stage of the chain keeps at most `k`
//!   (a stage whose input already fits is the identity); the last stage's output is what the decoder sees.
//! - Prompt: the checkpoint's chat template when `tokenizer_config.json` has one, else LLaVA-1.5's
//!   `USER: <image>\n{question} ASSISTANT:`; `<image>` expands to one placeholder per kept visual token. Position ids
//!   follow [`super::qa::Positions`] (ALGORITHMS.md §1.5): by default kept tokens keep their original ids, with gaps,
//!   and the text after them keeps its own; `contiguous` renumbers the pruned prompt as LLaVA-style reference code
//!   splicing a shortened encoder output does.
//! - In-decoder pruning on the visual span (OneVision newlines included), with original position ids: FastV's rule
//!   at layer `K` on the last prompt token's attention (`fastv:layer=K,ratio=R`), PyramidDrop's stages
//!   (`pdrop:layers=8/16/24,lambda=0.5`), or ToDRE stage 2 at its check layer on the text tokens' rows
//!   (`todre-stage2:tau=0.1`). The rows are recomputed for the queries the rule reads, at that layer only.
//! - LLaVA-OneVision: a video's frames are pooled 2x2 first (the pruners see the pooled tokens, frame by frame) and
//!   its one newline token follows the kept tokens; several images keep a newline after each image's survivors; a
//!   single image's any-resolution sequence (base view, tile map with row newlines) is pruned as one flat set.
//!   Newlines are not counted as visual tokens in the record (they are in `prefill_tokens`).

use super::qa::{
    generate, inspection_prompt, prompt_positions, prune_chain, pruning, question_prompt, span_offsets, square_pixels,
    square_side, unit_runs, Measured, Newline, StageClock,
};
use crate::pipeline::flops::DecoderShape;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tokensieve_models::chat_template::ChatTemplate;
use tokensieve_models::llama::{KvCache, LayerDrop, PositionMode, QueryRows};
use tokensieve_models::llava::Llava;
use tokensieve_models::sampling::TokenPicker;
use tokensieve_models::tokenizer::TextTokenizer;
use tokensieve_pruners::in_decoder::{todre_stage2, InDecoder};
use tokensieve_pruners::{Backend, Layout, TchBackend};
use tokensieve_video::preprocess::anyres::AnyRes;
use tokensieve_video::preprocess::ImageProcessor;
use tokensieve_video::Frame;

pub use super::qa::{MediaKind, QaError, QaOptions, QaRecord};

type Encoded = super::qa::Encoded<Tensor>;

/// What [`VideoQa::prefill`] produced.
pub struct Prefilled {
    /// Logits of the last position `[1, V]`.
    pub logits: Tensor,
    /// Tokens of the expanded prompt.
    pub prompt_tokens: usize,
    /// Visual tokens as placed in the prompt `[N, D]` (OneVision newlines included).
    pub visual: Tensor,
    /// The tower's CLS (or SigLIP probe) attention over the patches, flattened over frames.
    pub cls_attention: Option<Tensor>,
}

/// A loaded LLaVA model with its tokenizer, image processor and chat template.
pub struct VideoQa {
    model: Llava,
    tokenizer: TextTokenizer,
    processor: ImageProcessor,
    template: Option<ChatTemplate>,
    device: Device,
}

impl VideoQa {
    /// Loads a Hugging Face `llava` directory (config, weights, tokenizer.json, preprocessor_config.json).
    pub fn load(dir: &Path, device: Device) -> Result<Self, QaError> {
        Self::load_as(dir, device, Kind::Float)
    }

    /// As [`VideoQa::load`], computing the tower and decoder in `dtype` (`Float`, `Half`, `BFloat16`); the pruners
    /// always see f32 features.
    pub fn load_as(dir: &Path, device: Device, dtype: Kind) -> Result<Self, QaError> {
        let model = Llava::load_as(dir, device, dtype)?;
        let tokenizer = TextTokenizer::from_hf_dir(dir)?;
        let config =
            |name: &str, reason: String| QaError::Config { path: dir.join(name).display().to_string(), reason };
        let read = |name: &str| -> Result<serde_json::Value, QaError> {
            let text = std::fs::read_to_string(dir.join(name)).map_err(|e| config(name, e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| config(name, e.to_string()))
        };
        let processor = ImageProcessor::from_config(&read("preprocessor_config.json")?)
            .map_err(|e| config("preprocessor_config.json", e.to_string()))?;
        let template = ChatTemplate::from_hf_dir(dir).map_err(|reason| QaError::Config {
            path: dir.join("tokenizer_config.json").display().to_string(),
            reason,
        })?;
        Ok(VideoQa { model, tokenizer, processor, template, device })
    }

    /// The image processor the frames go through.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The visual tokens of `frames` before pruning, copied to the host (see [`crate::pipeline::engine::Engine`]).
    pub fn visual_tokens(&self, frames: &[Frame], kind: MediaKind) -> Result<super::qa::VisualTokens, QaError> {
        let enc = self.encode(frames, kind, &mut 0.0)?;
        let (n, d) = enc.features.size2()?;
        let data: Vec<f32> = Vec::try_from(enc.features.to_kind(Kind::Float).reshape([-1]))?;
        let features = ndarray::Array2::from_shape_vec((n as usize, d as usize), data)
            .map_err(|e| QaError::Config { path: "visual tokens".into(), reason: e.to_string() })?;
        Ok(super::qa::VisualTokens { features, layout: enc.layout, cls_attention: enc.cls_attention, units: enc.units })
    }

    /// Checks settings that depend on the model (in-decoder drop layers exist in this decoder).
    pub fn check_options(&self, opts: &QaOptions) -> Result<(), tokensieve_pruners::PruneError> {
        let layers = self.model.text.config.layers;
        if let Some(m) = &opts.in_llm {
            if let Some(l) = m.drop_layers(layers).into_iter().find(|&l| l >= layers) {
                return Err(tokensieve_pruners::PruneError::Param {
                    method: m.name().into(),
                    param: "layer".into(),
                    reason: format!("{l} does not exist: this decoder has {layers} layers"),
                });
            }
        }
        Ok(())
    }

    /// Preprocesses frames to the tower's square input: `[F, 3, S, S]` on the model's device.
    fn square_batch(&self, frames: &[Frame]) -> Result<Tensor, QaError> {
        let side = self.model.vision.config.image_size;
        let pixels = square_pixels(&self.processor, frames, side)?;
        Ok(Tensor::from_slice(&pixels)
            .reshape([frames.len() as i64, 3, side as i64, side as i64])
            .to_device(self.device))
    }

    /// Runs the tower and projector, and says how the visual tokens are laid out for the pruners and the prompt;
    /// `preprocess_ms` receives the time spent turning frames into pixel tensors.
    fn encode(&self, frames: &[Frame], kind: MediaKind, preprocess_ms: &mut f64) -> Result<Encoded, QaError> {
        let clock = Instant::now();
        let mut pixels = |frames: &[Frame]| -> Result<Tensor, QaError> {
            let batch = self.square_batch(frames);
            *preprocess_ms = clock.elapsed().as_secs_f64() * 1e3;
            batch
        };
        let Some(ov) = &self.model.onevision else {
            // LLaVA-1.5: every frame is one image of g x g tokens, all under one `<image>` span.
            let (visual, out) = self.model.image_features(&pixels(frames)?)?;
            let (f, n, d) = visual.size3()?;
            return Ok(Encoded {
                features: visual.reshape([f * n, d]),
                layout: square_side(n as usize).map(|g| Layout::frames(f as usize, g, g)),
                cls_attention: out.cls_attention.map(|a| Vec::try_from(a.reshape([-1]))).transpose()?,
                units: (f as usize, n as usize),
                newline: Newline::None,
                placeholder: (self.model.image_token_id, "<image>"),
            });
        };
        let image = (self.model.image_token_id, "<image>");
        match (kind, frames.len()) {
            (MediaKind::Video, _) => {
                let (pooled, _) = self.model.video_features(&pixels(frames)?)?;
                let (f, n, d) = pooled.size3()?;
                Ok(Encoded {
                    features: pooled.reshape([f * n, d]),
                    layout: square_side(n as usize).map(|g| Layout::frames(f as usize, g, g)),
                    cls_attention: None,
                    units: (f as usize, n as usize),
                    newline: Newline::End,
                    placeholder: (ov.video_token_id, "<video>"),
                })
            }
            (MediaKind::Images, 1) => {
                let f = &frames[0];
                let anyres = AnyRes { pinpoints: ov.pinpoints.clone(), tile: self.model.vision.config.image_size };
                let (views, grid) = anyres.tiles(&self.processor, &f.rgb, f.width as usize, f.height as usize);
                let side = anyres.tile as i64;
                let data: Vec<f32> = views.into_iter().flat_map(|p| p.data).collect();
                let batch = Tensor::from_slice(&data).reshape([-1, 3, side, side]).to_device(self.device);
                *preprocess_ms = clock.elapsed().as_secs_f64() * 1e3;
                let (packed, _) =
                    self.model.anyres_image_features(&batch, f.height as usize, f.width as usize, grid)?;
                let n = packed.size()[0] as usize;
                // The packed sequence (base view, tile map, row newlines) is pruned as one flat set.
                Ok(Encoded {
                    features: packed,
                    layout: None,
                    cls_attention: None,
                    units: (1, n),
                    newline: Newline::None,
                    placeholder: image,
                })
            }
            (MediaKind::Images, _) => {
                let (visual, out) = self.model.image_features(&pixels(frames)?)?;
                let (i, n, d) = visual.size3()?;
                Ok(Encoded {
                    features: visual.reshape([i * n, d]),
                    layout: square_side(n as usize).map(|g| Layout::Grid {
                        views: i as usize,
                        frames: 1,
                        height: g,
                        width: g,
                    }),
                    cls_attention: out.cls_attention.map(|a| Vec::try_from(a.reshape([-1]))).transpose()?,
                    units: (i as usize, n as usize),
                    newline: Newline::PerUnit,
                    placeholder: image,
                })
            }
        }
    }

    /// The kept tokens with OneVision's newline embeddings put back where the unpruned model has them.
    fn with_newlines(&self, kept: Tensor, origin: &[usize], enc: &Encoded) -> Result<Tensor, QaError> {
        let Some(ov) = &self.model.onevision else { return Ok(kept) };
        let newline = ov.newline.reshape([1, -1]).to_kind(kept.kind());
        Ok(match enc.newline {
            Newline::None => kept,
            Newline::End => Tensor::f_cat(&[kept, newline], 0)?,
            Newline::PerUnit => {
                let mut pieces = Vec::with_capacity(2 * enc.units.0);
                for run in unit_runs(origin, enc.units.0, enc.units.1) {
                    if !run.is_empty() {
                        pieces.push(kept.narrow(0, run.start as i64, run.len() as i64));
                    }
                    pieces.push(newline.shallow_clone());
                }
                Tensor::f_cat(&pieces, 0)?
            }
        })
    }

    /// One prefill without pruning, for inspection and parity checks (`tokensieve forward`): the last position's
    /// logits, the visual tokens as the decoder receives them (OneVision newlines included) and the tower's CLS
    /// attention. With a chat template and `raw = false` the prompt is one user turn (a placeholder is added in front
    /// when the prompt has none); otherwise it is used verbatim. Each placeholder expands as transformers' processor
    /// expands it: one placeholder takes every visual token; as many `<image>` as images take one image each.
    pub fn prefill(&self, frames: &[Frame], kind: MediaKind, prompt: &str, raw: bool) -> Result<Prefilled, QaError> {
        let mut preprocess_ms = 0.0;
        let enc = self.encode(frames, kind, &mut preprocess_ms)?;
        let total = enc.features.size()[0] as usize;
        let origin: Vec<usize> = (0..total).collect();
        let visual = self.with_newlines(enc.features.shallow_clone(), &origin, &enc)?;
        let (placeholder_id, placeholder) = enc.placeholder;
        let n = visual.size()[0] as usize;
        let per_unit = enc.units.1 + usize::from(enc.newline == Newline::PerUnit);
        let expanded = inspection_prompt(self.template.as_ref(), prompt, raw, placeholder, n, (enc.units.0, per_unit))?;
        let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
        let ids_t = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device);
        let embeds = self.model.merge_at(&ids_t, &[(placeholder_id, &visual)])?;
        let logits = self.model.text.forward_embeds(embeds, &mut KvCache::default())?;
        let cls_attention = enc.cls_attention.map(|a| Tensor::from_slice(&a));
        Ok(Prefilled { logits, prompt_tokens: ids.len(), visual, cls_attention })
    }

    /// Answers `question` about `frames` (a video's frames or separate images, see [`MediaKind`]) after an optional
    /// system prompt (a system turn with a chat template; the text before `USER:` in LLaVA-1.5's plain format, where
    /// its default system line goes), handing each piece of new text to `on_text` as it is generated (tokens can
    /// split characters, so a piece is what the new token adds to the decoded answer); `on_text` returning `false`
    /// stops generation. [`crate::pipeline::engine::Engine::ask`] is the short form.
    pub fn ask_streaming(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        let mut clock = StageClock::start();
        let mut preprocess_ms = 0.0;
        let enc = self.encode(frames, kind, &mut preprocess_ms)?;
        let mut ttft = clock.lap("encode");
        let backend = TchBackend::new(self.device);
        let chained =
            prune_chain(&backend, enc.features.to_kind(Kind::Float), enc.layout, enc.cls_attention.clone(), opts)?;
        let features = self.with_newlines(chained.features, &chained.origin, &enc)?;
        ttft += clock.lap("prune");
        let kept = backend.shape(&features).0;
        let (placeholder_id, placeholder) = enc.placeholder;
        let prompt = question_prompt(self.template.as_ref(), system, placeholder, question)?;
        let expanded = prompt.replacen(placeholder, &vec![placeholder; kept].join(" "), 1);
        let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
        let ids_t = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device);
        let embeds = self.model.merge_at(&ids_t, &[(placeholder_id, &features)])?;
        let span_start = ids.iter().position(|&t| t == placeholder_id).unwrap_or(0);
        let span = span_start..span_start + kept;
        let (offsets, unpruned) = span_offsets(&chained.origin, enc.units, enc.newline);
        let positions = prompt_positions(opts.positions, ids.len(), span_start, &offsets, unpruned);
        let layers = self.model.text.config.layers;
        let mut tokens_per_layer = vec![ids.len(); layers];
        let mut cache = KvCache::default();
        let logits = match &opts.in_llm {
            Some(method) => {
                self.check_options(opts).map_err(pruning(method.name()))?;
                let drop_layers = method.drop_layers(layers);
                let original = span.len();
                // A rule that cannot decide (a row that does not cover the span) keeps every token.
                let mut select = |stage: usize, rows: &[Vec<f32>], span: Range<usize>| -> Vec<usize> {
                    let keep_all: Vec<usize> = (0..span.len()).collect();
                    match method {
                        InDecoder::FastV(f) => rows.last().and_then(|r| f.select(r, span).ok()),
                        InDecoder::PyramidDrop(p) => rows.last().and_then(|r| p.select(stage, original, r, span).ok()),
                        InDecoder::TodreStage2 { tau, .. } => {
                            let text = span.end..rows.first().map_or(span.end, Vec::len);
                            todre_stage2::test(rows, &[], span.clone(), text, *tau).ok().map(|t| {
                                if t.drop_visual {
                                    Vec::new()
                                } else {
                                    keep_all.clone()
                                }
                            })
                        }
                    }
                    .unwrap_or(keep_all)
                };
                let rows = match method {
                    InDecoder::TodreStage2 { .. } => QueryRows::AfterSpan,
                    _ => QueryRows::Last,
                };
                let drop = LayerDrop {
                    layers: drop_layers,
                    span: span.clone(),
                    rows,
                    select: &mut select,
                    positions: PositionMode::Original,
                };
                let logits = self.model.text.forward_embeds_at(embeds, &positions, &mut cache, Some(drop))?;
                for (l, t) in tokens_per_layer.iter_mut().enumerate() {
                    *t = cache.layer_len(l) as usize;
                }
                logits
            }
            None => self.model.text.forward_embeds_at(embeds, &positions, &mut cache, None)?,
        };
        let mut picker = TokenPicker::new(opts.sampling);
        let first = picker.next(&logits)?;
        ttft += clock.lap("prefill");
        let mut step = |token: i64| -> Result<i64, QaError> {
            let step = Tensor::from_slice(&[token]).unsqueeze(0).to_device(self.device);
            Ok(picker.next(&self.model.text.forward(&step, &mut cache)?)?)
        };
        let generated = generate(&self.tokenizer, opts, first, &mut step, on_text)?;
        clock.lap("generate");
        let shape = DecoderShape {
            hidden: self.model.text.config.hidden,
            ffn: self.model.text.ffn_size(),
            layers,
            heads: self.model.text.config.heads,
            kv_heads: self.model.text.config.kv_heads,
        };
        let record = Measured {
            frames,
            visual_tokens: chained.visual_tokens,
            prefill_tokens: ids.len(),
            tokens_per_layer,
            clock,
            preprocess_ms,
            ttft_ms: ttft,
            kv_bytes: cache.bytes(),
            shape,
            generated: &generated,
        }
        .record();
        Ok((generated.answer, record))
    }
}
