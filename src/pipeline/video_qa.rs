//! Question answering over a video, images or camera views with a LLaVA or LLaVA-OneVision model: frames -> image
//! processor -> vision tower + projector -> pre-LLM pruner chain -> prompt -> decoder (optionally pruning inside it)
//! -> answer, with the record of every stage.
//!
//! Choices [project]:
//! - Budget: resolved once against all visual tokens (`k`), and every pre-LLM stage of the chain keeps at most `k`
//!   (a stage whose input already fits is the identity); the last stage's output is what the decoder sees.
//! - Prompt: the checkpoint's chat template when `tokenizer_config.json` has one, else LLaVA-1.5's
//!   `USER: <image>\n{question} ASSISTANT:`; `<image>` expands to one placeholder per kept visual token, so the
//!   spliced sequence is numbered contiguously, as the LLaVA-style reference code of the pre-LLM methods does
//!   (ALGORITHMS.md §1.5). In-decoder pruning keeps original position ids.
//! - In-decoder pruning on the visual span (OneVision newlines included), with original position ids: FastV's rule
//!   at layer `K` on the last prompt token's attention (`fastv:layer=K,ratio=R`), PyramidDrop's stages
//!   (`pdrop:layers=8/16/24,lambda=0.5`), or ToDRE stage 2 at its check layer on the text tokens' rows
//!   (`todre-stage2:tau=0.1`). The rows are recomputed for the queries the rule reads, at that layer only.
//! - LLaVA-OneVision: a video's frames are pooled 2x2 first (the pruners see the pooled tokens, frame by frame) and
//!   its one newline token follows the kept tokens; several images keep a newline after each image's survivors; a
//!   single image's any-resolution sequence (base view, tile map with row newlines) is pruned as one flat set.
//!   Newlines are not counted as visual tokens in the record (they are in `prefill_tokens`).

use crate::pipeline::flops::{prefill_macs, DecoderShape};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tokensieve_models::chat_template::ChatTemplate;
use tokensieve_models::llama::{KvCache, LayerDrop, PositionMode, QueryRows};
use tokensieve_models::llava::Llava;
use tokensieve_models::sampling::{stop_at, Sampling, TokenPicker};
use tokensieve_models::tokenizer::TextTokenizer;
use tokensieve_pruners::in_decoder::{todre_stage2, InDecoder};
use tokensieve_pruners::{prune, Backend, Budget, Layout, Method, Pruner, TchBackend, TokenSet};
use tokensieve_video::preprocess::anyres::AnyRes;
use tokensieve_video::preprocess::ImageProcessor;
use tokensieve_video::Frame;

/// What can go wrong answering a question.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The model could not load or run.
    #[error(transparent)]
    Model(#[from] tokensieve_models::llava::LlavaError),
    /// The language model failed.
    #[error(transparent)]
    Decoder(#[from] tokensieve_models::llama::LlamaError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] tokensieve_models::tokenizer::TokenizerError),
    /// A pruner failed (the method is named).
    #[error("{method}: {source}")]
    Prune {
        /// The method.
        method: &'static str,
        /// Its error.
        source: tokensieve_pruners::PruneError,
    },
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A configuration file is missing or unusable.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The prompt's placeholders do not fit the visual input.
    #[error("prompt: {0}")]
    Prompt(String),
    /// The image processor and the tower disagree on the input size.
    #[error("the image processor gives {got}x{got_h}, the tower takes {side}x{side}")]
    InputSize {
        /// Processor output width.
        got: usize,
        /// Processor output height.
        got_h: usize,
        /// Tower input side.
        side: usize,
    },
}

fn pruning(method: &'static str) -> impl Fn(tokensieve_pruners::PruneError) -> QaError {
    move |source| QaError::Prune { method, source }
}

/// Settings of one question.
pub struct QaOptions {
    /// Pre-LLM pruners, applied in order.
    pub pruners: Vec<Method>,
    /// Visual tokens to keep (all frames together).
    pub budget: Budget,
    /// In-decoder pruning (FastV, PyramidDrop, ToDRE stage 2), if any.
    pub in_llm: Option<InDecoder>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Greedy (the default) or seeded temperature/top-p sampling.
    pub sampling: Sampling,
    /// Generation stops before the first of these strings (besides the end-of-sequence tokens).
    pub stop: Vec<String>,
}

impl QaOptions {
    /// No pruning, greedy, `max_new_tokens` at most.
    pub fn new(max_new_tokens: usize) -> Self {
        QaOptions {
            pruners: Vec::new(),
            budget: Budget::Ratio(1.0),
            in_llm: None,
            max_new_tokens,
            sampling: Sampling::default(),
            stop: Vec::new(),
        }
    }
}

/// What happened while answering.
#[derive(Debug, Clone, Serialize)]
pub struct QaRecord {
    /// Timestamps of the frames used.
    pub frames: Vec<f64>,
    /// `(stage, visual tokens after it)`, starting with the encoder's output.
    pub visual_tokens: Vec<(String, usize)>,
    /// Tokens of the prompt sent to the decoder.
    pub prefill_tokens: usize,
    /// Tokens each decoder layer saw in the prefill (shorter after an in-decoder drop).
    pub tokens_per_layer: Vec<usize>,
    /// Milliseconds per stage: preprocess, encode (tower + projector), prune, prefill, generate (the tokens after
    /// the first). Video decoding happens before and is in the pipeline's record.
    pub stage_ms: BTreeMap<String, f64>,
    /// Time to first token: preprocess + encode + prune + prefill + first pick.
    pub ttft_ms: f64,
    /// KV-cache bytes after generation.
    pub kv_bytes: usize,
    /// Prefill MACs with FastV's formula.
    pub llm_macs_fastv: f64,
    /// Prefill MACs with the SwiGLU/GQA-correct formula.
    pub llm_macs_swiglu: f64,
    /// Tokens generated.
    pub generated_tokens: usize,
}

/// What the frames given to [`VideoQa::ask`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MediaKind {
    /// Frames sampled from one video (OneVision pools them and puts them under `<video>`).
    Video,
    /// Separate images: camera views, clip stills or one photo (OneVision: one image goes through any-resolution
    /// tiling, several get their base view and a newline each).
    Images,
}

/// Where the newline embedding goes among the visual tokens (OneVision only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Newline {
    /// Nowhere (LLaVA-1.5), or already inside the tokens (any-resolution packing).
    None,
    /// After every image's kept tokens.
    PerUnit,
    /// Once after all frames (video).
    End,
}

/// The tower's output as the pruners and the prompt see it.
struct Encoded {
    /// `[tokens, D]` in unit order.
    features: Tensor,
    layout: Option<Layout>,
    cls_attention: Option<Tensor>,
    /// `(units, tokens per unit)`: frames or images.
    units: (usize, usize),
    newline: Newline,
    /// Placeholder token id and its text.
    placeholder: (i64, &'static str),
}

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

    /// Answers `question` about `frames` (a video's frames or separate images, see [`MediaKind`]).
    pub fn ask(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        question: &str,
        opts: &QaOptions,
    ) -> Result<(String, QaRecord), QaError> {
        self.ask_with_system(frames, kind, None, question, opts)
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

    /// Preprocesses frames to the tower's square input, in parallel (six 1600x900 cameras take most of the time to
    /// first token otherwise): `[F, 3, S, S]` on the model's device.
    fn square_batch(&self, frames: &[Frame]) -> Result<Tensor, QaError> {
        let side = self.model.vision.config.image_size;
        let processor = &self.processor;
        let processed: Vec<_> =
            frames.par_iter().map(|f| processor.preprocess(&f.rgb, f.width as usize, f.height as usize)).collect();
        let mut pixels = Vec::with_capacity(frames.len() * 3 * side * side);
        for p in processed {
            if (p.width, p.height) != (side, side) {
                return Err(QaError::InputSize { got: p.width, got_h: p.height, side });
            }
            pixels.extend(p.data);
        }
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
        let grid_of = |n: i64| {
            let g = (n as f64).sqrt() as usize;
            (g * g == n as usize).then_some(g)
        };
        let Some(ov) = &self.model.onevision else {
            // LLaVA-1.5: every frame is one image of g x g tokens, all under one `<image>` span.
            let (visual, out) = self.model.image_features(&pixels(frames)?)?;
            let (f, n, d) = visual.size3()?;
            return Ok(Encoded {
                features: visual.reshape([f * n, d]),
                layout: grid_of(n).map(|g| Layout::frames(f as usize, g, g)),
                cls_attention: out.cls_attention.map(|a| a.reshape([-1])),
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
                    layout: grid_of(n).map(|g| Layout::frames(f as usize, g, g)),
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
                    layout: grid_of(n).map(|g| Layout::Grid { views: i as usize, frames: 1, height: g, width: g }),
                    cls_attention: out.cls_attention.map(|a| a.reshape([-1])),
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
                // Kept indices are ascending, so each unit's survivors are one contiguous run.
                let mut pieces = Vec::with_capacity(2 * enc.units.0);
                let mut start = 0usize;
                for unit in 0..enc.units.0 {
                    let end = start + origin[start..].iter().take_while(|&&o| o / enc.units.1 == unit).count();
                    if end > start {
                        pieces.push(kept.narrow(0, start as i64, (end - start) as i64));
                    }
                    pieces.push(newline.shallow_clone());
                    start = end;
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
        let text = match (&self.template, raw) {
            (Some(t), false) => {
                let content =
                    if prompt.contains(placeholder) { prompt.to_string() } else { format!("{placeholder}\n{prompt}") };
                t.render(&serde_json::json!([{"role": "user", "content": content}]), true)
                    .map_err(|e| QaError::Config { path: "chat_template".into(), reason: e.to_string() })?
            }
            _ => prompt.to_string(),
        };
        let n = visual.size()[0] as usize;
        let per_unit = enc.units.1 + usize::from(enc.newline == Newline::PerUnit);
        let expanded = crate::pipeline::prompt::expand_placeholders(&text, placeholder, n, enc.units.0, per_unit)
            .map_err(QaError::Prompt)?;
        let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
        let ids_t = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device);
        let embeds = self.model.merge_at(&ids_t, &[(placeholder_id, &visual)])?;
        let logits = self.model.text.forward_embeds(embeds, &mut KvCache::default())?;
        Ok(Prefilled { logits, prompt_tokens: ids.len(), visual, cls_attention: enc.cls_attention })
    }

    /// Answers `question` about `frames` after a system prompt (a system turn with a chat template; the text
    /// before `USER:` in LLaVA-1.5's plain format, where its default system line goes).
    pub fn ask_with_system(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
    ) -> Result<(String, QaRecord), QaError> {
        self.ask_streaming(frames, kind, system, question, opts, &mut |_| true)
    }

    /// As [`VideoQa::ask_with_system`], handing each piece of new text to `on_text` as it is generated (tokens can
    /// split characters, so a piece is what the new token adds to the decoded answer); `on_text` returning `false`
    /// stops generation.
    pub fn ask_streaming(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        let mut stage_ms = BTreeMap::new();
        let mut clock = Instant::now();
        let mut lap = |name: &str| {
            let ms = clock.elapsed().as_secs_f64() * 1e3;
            stage_ms.insert(name.to_string(), ms);
            clock = Instant::now();
            ms
        };
        let mut preprocess_ms = 0.0;
        let mut enc = self.encode(frames, kind, &mut preprocess_ms)?;
        enc.features = enc.features.to_kind(Kind::Float);
        let mut ttft = lap("encode");
        let backend = TchBackend::new(self.device);
        let total = enc.features.size()[0] as usize;
        let mut features = enc.features.shallow_clone();
        let mut tokens = TokenSet::new(&backend, features.shallow_clone()).map_err(pruning("encoder output"))?;
        if let Some(layout) = enc.layout {
            tokens = tokens.with_layout(layout).map_err(pruning("layout"))?;
        }
        if let Some(a) = &enc.cls_attention {
            tokens = tokens.with_cls_attention(Vec::try_from(a)?).map_err(pruning("cls attention"))?;
        }
        let k = opts.budget.resolve(total).map_err(pruning("budget"))?.k;
        let mut visual_tokens = vec![("encoder".to_string(), total)];
        let mut origin: Vec<usize> = (0..total).collect();
        for method in &opts.pruners {
            let s = prune(&backend, method, &tokens, Budget::Keep(k)).map_err(pruning(method.name()))?;
            features = match &s.merged {
                Some(m) => m.shallow_clone(),
                None => backend.gather_rows(tokens.features(), &s.kept).map_err(pruning(method.name()))?,
            };
            origin = s.kept.iter().map(|&i| origin[i]).collect();
            let attention = tokens.cls_attention().map(|a| s.kept.iter().map(|&i| a[i]).collect::<Vec<f32>>());
            tokens = TokenSet::new(&backend, features.shallow_clone()).map_err(pruning(method.name()))?;
            if let Some(a) = attention {
                tokens = tokens.with_cls_attention(a).map_err(pruning(method.name()))?;
            }
            visual_tokens.push((method.name().to_string(), s.kept.len()));
        }
        let features = self.with_newlines(features, &origin, &enc)?;
        ttft += lap("prune");
        let kept = backend.shape(&features).0;
        let (placeholder_id, placeholder) = enc.placeholder;
        let prompt = match &self.template {
            Some(t) => {
                let mut turns = Vec::new();
                if let Some(s) = system {
                    turns.push(serde_json::json!({"role": "system", "content": s}));
                }
                turns.push(serde_json::json!({"role": "user", "content": format!("{placeholder}\n{question}")}));
                t.render(&serde_json::Value::Array(turns), true)
                    .map_err(|e| QaError::Config { path: "chat_template".into(), reason: e.to_string() })?
            }
            None => match system {
                Some(s) => format!("{s} USER: {placeholder}\n{question} ASSISTANT:"),
                None => format!("USER: {placeholder}\n{question} ASSISTANT:"),
            },
        };
        let expanded = prompt.replacen(placeholder, &vec![placeholder; kept].join(" "), 1);
        let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
        let ids_t = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device);
        let embeds = self.model.merge_at(&ids_t, &[(placeholder_id, &features)])?;
        let span_start = ids.iter().position(|&t| t == placeholder_id).unwrap_or(0);
        let span = span_start..span_start + kept;
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
                let logits = self.model.text.forward_embeds_with(embeds, &mut cache, Some(drop))?;
                for (l, t) in tokens_per_layer.iter_mut().enumerate() {
                    *t = cache.layer_len(l) as usize;
                }
                logits
            }
            None => self.model.text.forward_embeds(embeds, &mut cache)?,
        };
        let mut picker = TokenPicker::new(opts.sampling);
        let mut next = picker.next(&logits)?;
        ttft += lap("prefill");
        let mut generated = Vec::new();
        let mut shown = String::new();
        let mut cut = None;
        let stop: Vec<i64> = self.tokenizer.eos.iter().map(|&t| t as i64).collect();
        while generated.len() < opts.max_new_tokens && !stop.contains(&next) {
            generated.push(next as u32);
            let text = self.tokenizer.decode(&generated)?;
            // A stop string ends the answer where it starts; only text before it is ever shown.
            let end = stop_at(&text, &opts.stop);
            let visible = &text[..end.unwrap_or(text.len())];
            if let Some(delta) = visible.strip_prefix(shown.as_str()).filter(|d| !d.is_empty()) {
                if !on_text(delta) {
                    break;
                }
                shown = visible.to_string();
            }
            if end.is_some() {
                cut = end;
                break;
            }
            let step = Tensor::from_slice(&[next]).unsqueeze(0).to_device(self.device);
            next = picker.next(&self.model.text.forward(&step, &mut cache)?)?;
        }
        lap("generate");
        let shape = DecoderShape {
            hidden: self.model.text.config.hidden,
            ffn: self.model.text.ffn_size(),
            layers,
            heads: self.model.text.config.heads,
            kv_heads: self.model.text.config.kv_heads,
        };
        let (fastv, swiglu) = prefill_macs(&shape, &tokens_per_layer);
        let mut answer = self.tokenizer.decode(&generated)?;
        if let Some(end) = cut {
            answer.truncate(end);
        }
        // The tower's time is what `encode` took after the pixels were ready.
        let encode_total = stage_ms.get("encode").copied().unwrap_or(0.0);
        stage_ms.insert("preprocess".into(), preprocess_ms);
        stage_ms.insert("encode".into(), (encode_total - preprocess_ms).max(0.0));
        let record = QaRecord {
            frames: frames.iter().map(|f| f.timestamp).collect(),
            visual_tokens,
            prefill_tokens: ids.len(),
            tokens_per_layer,
            stage_ms,
            ttft_ms: ttft,
            kv_bytes: cache.bytes(),
            llm_macs_fastv: fastv,
            llm_macs_swiglu: swiglu,
            generated_tokens: generated.len(),
        };
        Ok((answer, record))
    }
}
