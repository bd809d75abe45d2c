//! [`Engine`]: the one question-answering engine, written once for every backend and model family:
//! frames -> views (the family's plan, the checkpoint's image processor) -> vision side (tower + projector, with the
//! signals the chosen pruners read) -> the family's arrangement (pooling, packing, newlines) -> pre-LLM pruner chain
//! -> prompt with one placeholder per kept token -> position ids -> language side (prefill, optionally pruning
//! inside the decoder) -> streaming generation -> the record of every stage.
//!
//! The backends differ only below [`super::model::VisionSide`] and [`super::model::LanguageSide`]: libtorch
//! ([`super::torch_model`], CUDA when present) and ONNX Runtime ([`super::onnx_model`], an export folder). Everything
//! that answers questions (the [`super::builder::Pipeline`], `ask`, `bench`, `compress`, `eval`) goes through it, so
//! every command runs on both backends with the same options and the same record.
//!
//! Choices \[project\]:
//! - Budget: resolved once against all visual tokens (`k`), and every pre-LLM stage of the chain keeps at most `k`
//!   (a stage whose input already fits is the identity); the last stage's output is what the decoder sees.
//! - Signals: the tower computes only what the chain's methods read ([`tokensieve_pruners::Pruner::uses`]), at the
//!   family's feature layer (LLaVA's -2, where VisionZip, VisPruner and PruMerge+ read theirs; OneVision's last
//!   SigLIP layer, where FastVID and HoliTom read theirs). Attention and keys follow the kept rows through the chain;
//!   a merged token carries its representative's.
//! - Query: methods that read query embeddings (`query`, `cdpruner`) get the LLM input embeddings of the question's
//!   tokens, in the space of the projected visual tokens (the `llm` provider, OpenVINO GenAI's choice for
//!   CDPruner), or with a dual encoder (`QaOptions::relevance`, `--relevance clip:MODEL`) its text embeddings of
//!   the question and, as the tokens' query space, its patch embeddings of the pixels the VLM saw, collected batch
//!   by batch during encoding (`QuerySpace`); methods that read relevance but not the query
//!   (`mmr:importance=relevance`) get each token's mean cosine to those rows
//!   (`tokensieve_pruners::methods::query::question_relevance`); the record notes the source.
//! - What a selection returns beyond indices reaches the decoder and the record: merged features replace the kept
//!   rows, extra tokens (PruMerge+) follow the kept tokens of the span (before a trailing newline), every note is
//!   recorded as `method: note`.
//! - Prompt: the checkpoint's chat template when `tokenizer_config.json` has one, else LLaVA-1.5's
//!   `USER: <image>\n{question} ASSISTANT:`; the placeholder expands to one token per kept visual row. Position ids
//!   follow [`super::qa::Positions`] (ALGORITHMS.md §1.5).
//! - In-decoder pruning on the visual span (newlines included), with original position ids, by the rule the
//!   pruners crate chooses ([`tokensieve_pruners::in_decoder::InDecoder`]); a backend that cannot run a rule says so.
//! - Newlines are not counted as visual tokens in the record (they are in `prefill_tokens`).

use super::frames::{FrameSlice, FrameSource};
use super::model::{DropPlan, LanguageSide, VisionSide};
use super::qa::{
    generate, inspection_prompt, prompt_positions, prune_chain, pruning, question_prompt, span_offsets, square_views,
    unit_runs, Chained, Measured, MediaKind, Newline, QaError, QaOptions, QaRecord, QueryInput, StageClock,
};
use super::relevance::{PatchRelevance, PixelScale};
use ndarray::{Array2, ArrayView2};
use serde::Deserialize;
use std::path::Path;
use std::time::Instant;
use tokensieve_models::arch::{
    family_for, AnyResCut, Family, PromptSpans, SignalRequest, TowerOutput, ViewBatch, ViewPlan,
};
use tokensieve_models::chat_template::ChatTemplate;
#[cfg(feature = "onnx")]
use tokensieve_models::onnx_session::{OnnxOptions, Precision};
use tokensieve_models::positions::PositionIds;
use tokensieve_models::sampling::TokenPicker;
use tokensieve_models::tokenizer::TextTokenizer;
use tokensieve_pruners::{PruneError, Pruner, Signal};
use tokensieve_video::preprocess::anyres::AnyRes;
use tokensieve_video::preprocess::{ImageProcessor, Pixels};
use tokensieve_video::Frame;

pub use super::qa::VisualTokens;

/// Whether a method of the chain reads the question (query embeddings, or relevance the chain computes from them).
fn reads_query(opts: &QaOptions) -> bool {
    opts.pruners.iter().any(|m| m.uses().contains(&Signal::Query) || m.reads_relevance())
}

/// The visual tokens' rows in a dual encoder's space, collected batch by batch while the frames are encoded (the
/// pixels are gone afterwards): the same pixels the VLM saw, through the provider (see
/// [`super::relevance::PatchRelevance::patches`]).
///
/// The layer \[project where the method is silent\]: CDPruner's official code takes the CLIP tower's layer −2
/// (`mm_vision_select_layer`), so a chain with `cdpruner` uses −2; `query` (LaVida, no public code) and MMR's
/// relevance use the last layer, where the joint space is trained.
pub(crate) struct QuerySpace<'a> {
    provider: &'a dyn PatchRelevance,
    layer: i64,
    rows: Vec<Array2<f32>>,
}

impl<'a> QuerySpace<'a> {
    fn new(provider: &'a dyn PatchRelevance, methods: &[tokensieve_pruners::Method]) -> Self {
        let layer = if methods.iter().any(|m| m.name() == "cdpruner") { -2 } else { -1 };
        QuerySpace { provider, layer, rows: Vec::new() }
    }

    /// Square views, one per arranged unit (video frames, several images, one LLaVA-1.5 image).
    fn add_square(&mut self, views: &[Pixels], next: &VisualTokens, processor: &ImageProcessor) -> Result<(), QaError> {
        let grid = match next.layout {
            Some(tokensieve_pruners::Layout::Grid { height, width, .. }) if next.units.0 == views.len() => {
                (height, width)
            }
            _ => {
                return Err(QaError::Unsupported {
                    setting: format!("--relevance {}", self.provider.label()),
                    reason: format!(
                        "{} views arranged as {} units without one grid each; use --relevance llm",
                        views.len(),
                        next.units.0
                    ),
                })
            }
        };
        let refs: Vec<&Pixels> = views.iter().collect();
        self.rows.push(self.provider.patches(&refs, scale_of(processor), grid, self.layer)?);
        Ok(())
    }

    /// Native-resolution frames of one size: each unit is `temporal` consecutive frames (Qwen-VL's temporal
    /// patches, 1 for images) on one merged `grid`; a unit's row is the mean of its frames' rows.
    fn add_patches(
        &mut self,
        frames: &[&Pixels],
        grid: (usize, usize),
        temporal: usize,
        processor: &ImageProcessor,
    ) -> Result<(), QaError> {
        let per_frame = self.provider.patches(frames, scale_of(processor), grid, self.layer)?;
        let cells = grid.0 * grid.1;
        if temporal <= 1 {
            self.rows.push(per_frame);
            return Ok(());
        }
        let units = frames.len().div_ceil(temporal);
        let mut out = Array2::zeros((units * cells, per_frame.ncols()));
        for u in 0..units {
            let members = (u * temporal..((u + 1) * temporal).min(frames.len())).collect::<Vec<_>>();
            for &f in &members {
                let rows = per_frame.slice(ndarray::s![f * cells..(f + 1) * cells, ..]);
                let mut slot = out.slice_mut(ndarray::s![u * cells..(u + 1) * cells, ..]);
                slot.scaled_add(1.0 / members.len() as f32, &rows);
            }
        }
        self.rows.push(out);
        Ok(())
    }

    /// The chain's query: the question's text embeddings and the collected rows.
    fn finish(self, question: &str) -> Result<QueryInput, QaError> {
        let views: Vec<_> = self.rows.iter().map(|r| r.view()).collect();
        let space = ndarray::concatenate(ndarray::Axis(0), &views)
            .map_err(|e| QaError::Config { path: "query space".into(), reason: e.to_string() })?;
        Ok(QueryInput {
            rows: self.provider.text(question)?,
            space: Some(space),
            source: format!(
                "the question's {0} text embeddings, against the tokens' {0} layer {1} patch embeddings",
                self.provider.label(),
                self.layer
            ),
        })
    }
}

/// How `processor` normalised its pixels.
fn scale_of(processor: &ImageProcessor) -> PixelScale {
    let (mean, std) = processor.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    PixelScale { rescale: processor.rescale.unwrap_or(1.0), mean, std }
}

/// Which backend to load a model on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineChoice {
    /// libtorch on `device`, computing in `dtype` (a Hugging Face `llava` / `llava_onevision` directory).
    #[cfg(feature = "torch")]
    Torch {
        /// Where the tensors live.
        device: tch::Device,
        /// Compute dtype of tower and decoder; `None` picks it from the checkpoint
        /// ([`tokensieve_models::runtime::auto_dtype`]: the stored dtype where the device computes it natively, as
        /// transformers' `dtype="auto"`, else f32).
        dtype: Option<tch::Kind>,
        /// How the decoder's linear weights are held ([`tokensieve_models::linear`]; int8 only on the CPU).
        weights: tokensieve_models::linear::DecoderWeights,
    },
    /// ONNX Runtime on an export folder (`models/export/export_onnx.py`), in `precision`.
    #[cfg(feature = "onnx")]
    Onnx {
        /// Which graph files to load.
        precision: Precision,
        /// Session settings.
        options: OnnxOptions,
    },
}

/// Where the pruner chain runs: on the host (ndarray), or on the torch engine's device.
#[derive(Debug, Clone, Copy)]
enum PruneOn {
    #[cfg(feature = "onnx")]
    Host,
    #[cfg(feature = "torch")]
    Torch(tch::Device),
}

/// A loaded vision-language model on one of the backends.
pub struct Engine {
    vision: Box<dyn VisionSide>,
    language: Box<dyn LanguageSide>,
    family: Box<dyn Family>,
    tokenizer: TextTokenizer,
    processor: ImageProcessor,
    /// `video_preprocessor_config.json`'s processor, for the frames of a video when the checkpoint has one (Qwen-VL
    /// resizes video frames to other pixel bounds than images).
    video_processor: Option<ImageProcessor>,
    template: Option<ChatTemplate>,
    prune_on: PruneOn,
    /// Views per tower batch ([`Engine::set_encode_batch`]).
    encode_batch: usize,
    /// The batch that fits [`ENCODE_MEMORY`] ([`TowerShape::view_bytes`]): the default.
    auto_batch: usize,
    /// The backend as loaded ([`Engine::backend`]).
    backend: String,
}

/// What the tower's activations take is bounded by this when the batch size is not given: 256 MiB. Larger batches
/// were slower too on the CPU (demo model, 128 frames: 7.1 s to encode in batches of 93 views, 4.1 s in batches of
/// 8; SigLIP-so400m, 16 frames: 63.8 s in one batch, 56.4 s in batches of 4).
pub const ENCODE_MEMORY: usize = 256 << 20;

/// Frames per tower batch for native-resolution towers (Qwen-VL), rounded up to whole temporal patches.
pub const PATCH_FRAMES: usize = 16;

/// The `vision_config` keys (transformers' names) that size the tower's work per view.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct TowerShape {
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
}

impl TowerShape {
    /// Peak bytes one view costs inside a block, as f32: the states, q, k, v and the attention output
    /// (`5·T·D`), the MLP's hidden layer (`T·M`), and one `T x T` score matrix per head (what the signal
    /// computations and the non-fused attention paths materialise). SigLIP-so400m at 384 px: about 60 MB, which is
    /// what peak RSS grows by per frame when every frame goes through at once.
    fn view_bytes(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        let t = side * side + 1;
        4 * (t * (5 * self.hidden_size + self.intermediate_size) + self.num_attention_heads * t * t)
    }
}

/// What [`Engine::prefill`] produced.
pub struct Prefilled {
    /// Logits of the last position `[V]`.
    pub logits: Vec<f32>,
    /// Tokens of the expanded prompt.
    pub prompt_tokens: usize,
    /// Visual tokens as placed in the prompt `[N, D]` (OneVision newlines included).
    pub visual: Array2<f32>,
    /// The tower's attention signal over the tokens (CLS row, or mean received attention), flattened over units.
    pub attention: Option<Vec<f32>>,
}

impl Engine {
    /// Loads `dir` on the chosen backend: a Hugging Face `llava` / `llava_onevision` directory for torch, an export
    /// folder for onnx (both hold `config.json`, the tokenizer and the processor settings).
    pub fn load(dir: &Path, choice: EngineChoice) -> Result<Self, QaError> {
        let config_err =
            |name: &str, reason: String| QaError::Config { path: dir.join(name).display().to_string(), reason };
        let read = |name: &str| -> Result<serde_json::Value, QaError> {
            let text = std::fs::read_to_string(dir.join(name)).map_err(|e| config_err(name, e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| config_err(name, e.to_string()))
        };
        let config = read("config.json")?;
        let (vision, language, newline, prune_on, backend): (Box<dyn VisionSide>, Box<dyn LanguageSide>, _, _, _) =
            match choice {
                #[cfg(feature = "torch")]
                EngineChoice::Torch { device, dtype, weights } => {
                    let loaded = super::torch_model::load(dir, &config, device, dtype, weights)?;
                    let (v, l, newline, kind) = (loaded.vision, loaded.language, loaded.newline, loaded.dtype);
                    let text = format!(
                        "torch {} {}{}{}",
                        if device == tch::Device::Cpu {
                            "cpu".to_string()
                        } else {
                            format!("{device:?}").to_lowercase()
                        },
                        match kind {
                            tch::Kind::BFloat16 => "bf16",
                            tch::Kind::Half => "f16",
                            _ => "f32",
                        },
                        if dtype.is_none() { " (auto)" } else { "" },
                        if weights == tokensieve_models::linear::DecoderWeights::Int8 {
                            ", int8 decoder weights"
                        } else {
                            ""
                        }
                    );
                    (Box::new(v), Box::new(l), newline, PruneOn::Torch(device), text)
                }
                #[cfg(feature = "onnx")]
                EngineChoice::Onnx { precision, options } => {
                    let (v, l, newline) = super::onnx_model::load(dir, &config, precision, &options)?;
                    (Box::new(v), Box::new(l), newline, PruneOn::Host, format!("onnx {precision:?}").to_lowercase())
                }
            };
        let family = family_for(&config, newline).map_err(|r| config_err("config.json", r))?;
        let auto_batch = match family.view_plan(MediaKind::Video, 1) {
            // Native resolution: a view's cost depends on the frame size, so the batch is a fixed run of frames.
            ViewPlan::Patches { temporal, .. } => PATCH_FRAMES.div_ceil(temporal.max(1)) * temporal.max(1),
            _ => {
                let tower = TowerShape::deserialize(config.get("vision_config").unwrap_or(&serde_json::Value::Null))
                    .map_err(|e| config_err("config.json", format!("vision_config: {e}")))?;
                (ENCODE_MEMORY / tower.view_bytes().max(1)).max(1)
            }
        };
        let processor = ImageProcessor::from_config(&read("preprocessor_config.json")?)
            .map_err(|e| config_err("preprocessor_config.json", e.to_string()))?;
        let video_processor = match dir.join("video_preprocessor_config.json").exists() {
            true => Some(
                ImageProcessor::from_config(&read("video_preprocessor_config.json")?)
                    .map_err(|e| config_err("video_preprocessor_config.json", e.to_string()))?,
            ),
            false => None,
        };
        let template = ChatTemplate::from_hf_dir(dir).map_err(|reason| config_err("tokenizer_config.json", reason))?;
        Ok(Engine {
            vision,
            language,
            family,
            tokenizer: TextTokenizer::from_hf_dir(dir)?,
            processor,
            video_processor,
            template,
            prune_on,
            encode_batch: auto_batch,
            auto_batch,
            backend,
        })
    }

    /// The backend as loaded, in words: `torch cpu bf16 (auto)`, `torch cpu f32, int8 decoder weights`,
    /// `onnx q8`, ... (what `bench` prints and records).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Views the tower encodes at once: `Some(n)`, or `None` for as many as fit [`ENCODE_MEMORY`] (the default).
    /// Each batch is preprocessed and encoded before the next one's pixels exist, so the tower's peak memory is set
    /// by the batch, not by the number of frames; the tokens and signals of every view are kept for the chain.
    pub fn set_encode_batch(&mut self, views: Option<usize>) {
        self.encode_batch = views.unwrap_or(self.auto_batch).max(1);
    }

    /// Views the tower encodes at once.
    pub fn encode_batch(&self) -> usize {
        self.encode_batch
    }

    /// The image processor the frames go through.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// Checks settings that depend on the model and backend: the in-decoder rule's layers exist in this decoder and
    /// this backend runs the rule.
    pub fn check_options(&self, opts: &QaOptions) -> Result<(), PruneError> {
        let Some(rule) = &opts.in_llm else { return Ok(()) };
        if let Some(reason) = self.language.refuses(rule) {
            return Err(PruneError::Param { method: rule.name().into(), param: "backend".into(), reason });
        }
        let layers = self.language.shape().layers;
        match rule.drop_layers(layers).into_iter().find(|&l| l >= layers) {
            Some(l) => Err(PruneError::Param {
                method: rule.name().into(),
                param: "layer".into(),
                reason: format!("{l} does not exist: this decoder has {layers} layers"),
            }),
            None => Ok(()),
        }
    }

    /// The views the family's plan cuts from `frames`, preprocessed (what the tower sees), and how an
    /// any-resolution image was cut.
    pub fn views(
        &self,
        frames: &[Frame],
        kind: MediaKind,
    ) -> Result<(Vec<tokensieve_video::preprocess::Pixels>, Option<AnyResCut>), QaError> {
        let side = self.family.image_size();
        match self.family.view_plan(kind, frames.len()) {
            ViewPlan::Square => Ok((square_views(&self.processor, frames, side)?, None)),
            ViewPlan::AnyRes { pinpoints } => {
                let f = &frames[0];
                let (views, grid) = AnyRes { pinpoints, tile: side }.tiles(
                    &self.processor,
                    &f.rgb,
                    f.width as usize,
                    f.height as usize,
                );
                Ok((views, Some(AnyResCut { image: (f.height as usize, f.width as usize), grid })))
            }
            // Native resolution: each frame resized by `smart_resize` (before it is cut into patches).
            ViewPlan::Patches { .. } => {
                let video = self.video_processor.as_ref().unwrap_or(&self.processor).for_video(frames.len());
                let processor = match kind {
                    MediaKind::Video => &video,
                    MediaKind::Images => &self.processor,
                };
                let views =
                    frames.iter().map(|f| processor.preprocess(&f.rgb, f.width as usize, f.height as usize)).collect();
                Ok((views, None))
            }
        }
    }

    /// Runs the views of the source's frames through the tower, [`Engine::encode_batch`] views at a time, and
    /// arranges the tokens as the family does. Square views (video frames, several images) are taken from the
    /// source, preprocessed, encoded and arranged batch by batch, so neither the frames nor their pixels nor the
    /// tower's unpooled output of more than one batch are in memory at once; an any-resolution image is cut into its
    /// views first. `preprocess_ms` receives the time spent turning frames into pixels.
    fn encode(
        &self,
        source: &mut dyn FrameSource,
        kind: MediaKind,
        request: SignalRequest,
        preprocess_ms: &mut f64,
        mut space: Option<&mut QuerySpace<'_>>,
    ) -> Result<VisualTokens, QaError> {
        let side = self.family.image_size();
        let batch = self.encode_batch;
        let arranged = |reason: String| QaError::Config { path: "visual tokens".into(), reason };
        let tower = |views: &[Pixels]| -> Result<TowerOutput, QaError> {
            let pixels: Vec<f32> = views.iter().flat_map(|p| p.data.iter().copied()).collect();
            self.vision.encode(ViewBatch::Square { pixels: &pixels, views: views.len(), side }, request)
        };
        *preprocess_ms = 0.0;
        match self.family.view_plan(kind, source.len()) {
            ViewPlan::Square => {
                let mut tokens: Option<VisualTokens> = None;
                loop {
                    let frames = source.next_batch(batch)?;
                    if frames.is_empty() && tokens.is_some() {
                        break;
                    }
                    // No frame at all: the tower's own answer to an empty batch (as before batching).
                    let clock = Instant::now();
                    let views = square_views(&self.processor, &frames, side)?;
                    *preprocess_ms += clock.elapsed().as_secs_f64() * 1e3;
                    drop(frames);
                    let next = self.family.arrange(tower(&views)?, kind, None).map_err(arranged)?;
                    if let (Some(q), false) = (space.as_deref_mut(), views.is_empty()) {
                        q.add_square(&views, &next, &self.processor)?;
                    }
                    match tokens.as_mut() {
                        Some(t) => t.append(next).map_err(arranged)?,
                        None => {
                            // Room for every frame still to come, so the appends never copy what is there.
                            let mut first = next;
                            first.reserve_units(source.len().saturating_sub(first.units.0)).map_err(arranged)?;
                            tokens = Some(first);
                        }
                    }
                    if views.is_empty() {
                        break;
                    }
                }
                tokens.ok_or_else(|| arranged("no frame to encode".into()))
            }
            ViewPlan::Patches { patch, merge, temporal } => {
                self.encode_patches(source, kind, request, (patch, merge, temporal), preprocess_ms, space)
            }
            ViewPlan::AnyRes { .. } if space.is_some() => Err(QaError::Unsupported {
                setting: "a dual-encoder relevance provider on an any-resolution image".into(),
                reason: "its tokens are packed from several views; give a video, several images, or --relevance llm"
                    .into(),
            }),
            ViewPlan::AnyRes { .. } => {
                let count = source.len();
                let frames = source.next_batch(count)?;
                let clock = Instant::now();
                let (views, cut) = self.views(&frames, kind)?;
                *preprocess_ms += clock.elapsed().as_secs_f64() * 1e3;
                let mut out: Option<TowerOutput> = None;
                for chunk in views.chunks(batch) {
                    let next = tower(chunk)?;
                    match out.as_mut() {
                        Some(o) => o.append(next).map_err(arranged)?,
                        None => out = Some(next),
                    }
                }
                let out = out.ok_or_else(|| arranged("no view to encode".into()))?;
                self.family.arrange(out, kind, cut).map_err(arranged)
            }
        }
    }

    /// [`Engine::encode`] for native-resolution towers (Qwen-VL): each batch of frames (whole temporal patches of a
    /// video; images, each resized on its own, in runs of one size) is resized by the processor's `smart_resize`,
    /// cut into patches (`tokensieve_video::preprocess::patches`), encoded and arranged before the next. Every
    /// temporal patch is its own attention sequence in the tower, so the batches give the tokens one pass would;
    /// images of different sizes make ragged units ([`VisualTokens::ragged`]).
    fn encode_patches(
        &self,
        source: &mut dyn FrameSource,
        kind: MediaKind,
        request: SignalRequest,
        (patch, merge, temporal): (usize, usize, usize),
        preprocess_ms: &mut f64,
        mut space: Option<&mut QuerySpace<'_>>,
    ) -> Result<VisualTokens, QaError> {
        use rayon::prelude::*;
        let arranged = |reason: String| QaError::Config { path: "visual tokens".into(), reason };
        // Qwen3-VL's video resize bounds the pixels of the whole video, so it needs the frame count.
        let video = self.video_processor.as_ref().unwrap_or(&self.processor).for_video(source.len());
        let (processor, step, images) = match kind {
            MediaKind::Video => (&video, self.encode_batch.div_ceil(temporal) * temporal, false),
            MediaKind::Images => (&self.processor, self.encode_batch, true),
        };
        let mut tokens: Option<VisualTokens> = None;
        loop {
            let frames = source.next_batch(step)?;
            if frames.is_empty() {
                break;
            }
            let clock = Instant::now();
            let pixels: Vec<Pixels> =
                frames.par_iter().map(|f| processor.preprocess(&f.rgb, f.width as usize, f.height as usize)).collect();
            drop(frames);
            // A video's frames share one size; images run by size (each image is its own grid either way). Every
            // run is cut into patches before the pixels go, so the tower runs without them.
            let mut batches = Vec::new();
            let mut rest: &[Pixels] = &pixels;
            while let Some(first) = rest.first() {
                let same = rest.iter().take_while(|p| (p.height, p.width) == (first.height, first.width)).count();
                let run = if images { same } else { rest.len() };
                let refs: Vec<&Pixels> = rest[..run].iter().collect();
                rest = &rest[run..];
                if let Some(q) = space.as_deref_mut() {
                    let grid = (first.height / (patch * merge), first.width / (patch * merge));
                    q.add_patches(&refs, grid, if images { 1 } else { temporal }, processor)?;
                }
                let cut = tokensieve_video::preprocess::patches::patchify(&refs, patch, merge, temporal, images);
                batches.push(cut.ok_or_else(|| {
                    let sizes: Vec<String> = refs.iter().map(|p| format!("{}x{}", p.width, p.height)).collect();
                    QaError::Unsupported {
                        setting: format!("frames resized to {}", sizes.join(", ")),
                        reason: format!(
                            "native-resolution frames of one video must share one size, a multiple of {}",
                            patch * merge
                        ),
                    }
                })?);
            }
            drop(pixels);
            *preprocess_ms += clock.elapsed().as_secs_f64() * 1e3;
            for (patches, grid) in batches {
                let out = self.vision.encode(ViewBatch::Patches { patches: &patches, grid }, request)?;
                drop(patches);
                let next = self.family.arrange(out, kind, None).map_err(arranged)?;
                match tokens.as_mut() {
                    Some(t) => t.append(next).map_err(arranged)?,
                    None => {
                        let mut first = next;
                        let left = source.len().saturating_sub(step);
                        let units = if images { left } else { left.div_ceil(temporal) };
                        first.reserve_units(units).map_err(arranged)?;
                        tokens = Some(first);
                    }
                }
            }
        }
        tokens.ok_or_else(|| arranged("no frame to encode".into()))
    }

    /// The prompt ids and M-RoPE position ids of a family that wraps each image or video in its own span
    /// ([`PromptSpans`], Qwen-VL): one span per image (or one for a video), holding the unit's kept rows (the last
    /// span also the extra tokens), numbered as transformers' `get_rope_index` numbers the unpruned prompt.
    /// `timestamps` (seconds of the sampled frames) set a video's `second_per_grid_t`: `temporal_patch` frame
    /// intervals (2 s per temporal patch at the 2 fps transformers assumes when there is one frame). Images may differ
    /// in size (`visual`'s grids), the frames of a video do not.
    #[allow(clippy::too_many_arguments)]
    fn span_prompt(
        &self,
        spans: PromptSpans,
        prompt: &str,
        visual: SpanVisual<'_>,
        placeholder: (i64, &str),
        kind: MediaKind,
        timestamps: &[f64],
        contiguous: bool,
    ) -> Result<(Vec<i64>, PositionIds), QaError> {
        use super::prompt::{expand_spans, mrope_positions, MRopeSpan};
        let SpanVisual { origin, extra, grids } = visual;
        let grids = match grids {
            Some(g) if !g.is_empty() => g,
            _ => return Err(QaError::Prompt("native-resolution tokens without their grid".into())),
        };
        let (height, width) = grids[0];
        let starts: Vec<usize> = std::iter::once(0)
            .chain(grids.iter().scan(0, |end, &(h, w)| {
                *end += h * w;
                Some(*end)
            }))
            .collect();
        // Qwen3-VL: each temporal patch of a video is its own one-frame span, as an image is.
        let per_unit = kind == MediaKind::Images || spans.timestamps;
        let runs = match per_unit {
            false => std::iter::once(0..origin.len()).collect(),
            true => unit_runs(origin, &starts),
        };
        let scale = match kind {
            _ if per_unit => 1.0,
            MediaKind::Images => 1.0,
            MediaKind::Video => {
                let interval = match timestamps {
                    [first, .., last] if last > first => (last - first) / (timestamps.len() - 1) as f64,
                    _ => 0.5,
                };
                interval * spans.temporal_patch as f64 * spans.tokens_per_second
            }
        };
        let count = runs.len();
        let per_span: Vec<MRopeSpan> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| MRopeSpan {
                pad: placeholder.0,
                kept: origin[run.clone()].iter().map(|&o| if per_unit { o - starts[i] } else { o }).collect(),
                extra: if i + 1 == count { extra } else { 0 },
                grid: if per_unit { (1, grids[i].0, grids[i].1) } else { (grids.len(), height, width) },
                temporal_scale: scale,
            })
            .collect();
        let counts: Vec<usize> = per_span.iter().map(|s| s.kept.len() + s.extra).collect();
        let expanded = expand_spans(prompt, placeholder.1, &counts).map_err(QaError::Prompt)?;
        let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
        let positions = mrope_positions(&ids, spans.start.0, &per_span, contiguous).map_err(QaError::Prompt)?;
        Ok((ids, PositionIds::MRope(positions)))
    }

    /// The visual tokens of `frames` (every signal, as [`Engine::visual_tokens`]) and `question` as `methods` read
    /// it, built as `ask` builds both: a dual encoder's text embeddings and the tokens' query space when `relevance`
    /// is given, the LLM's input embeddings of the question otherwise. What `compress` prunes and draws.
    pub fn visual_tokens_for(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        question: &str,
        methods: &[tokensieve_pruners::Method],
        relevance: Option<&dyn PatchRelevance>,
    ) -> Result<(VisualTokens, Option<QueryInput>), QaError> {
        let request = SignalRequest { attention: true, keys: true };
        let mut space = relevance.map(|provider| QuerySpace::new(provider, methods));
        let visual = self.encode(&mut FrameSlice::new(frames), kind, request, &mut 0.0, space.as_mut())?;
        let query = match space {
            Some(space) => Some(space.finish(question)?),
            None => self.question_embeddings(question)?.map(|rows| QueryInput {
                rows,
                space: None,
                source: "the question's LLM input embeddings".into(),
            }),
        };
        Ok((visual, query))
    }

    /// F2C's resolution ladder for this model: one rung, the tower's input side and what one video frame costs
    /// there, measured by encoding one grey frame (exact for every fixed-resolution family: LLaVA's patches,
    /// OneVision's pooled grid). Native-resolution towers (Qwen-VL) are refused: their per-frame cost depends on the
    /// frame count the sampler is choosing (Qwen3-VL bounds the pixels of the whole video).
    pub fn video_frame_rung(&self) -> Result<tokensieve_video::samplers::f2c::Rung, QaError> {
        let side = self.family.image_size();
        if let ViewPlan::Patches { .. } = self.family.view_plan(MediaKind::Video, 1) {
            return Err(QaError::Unsupported {
                setting: "--sampler f2c".into(),
                reason: format!(
                    "{} encodes frames at native resolution, so a frame's token cost depends on how many are sampled; \
                     use tokensieve sample --sampler f2c to pick the frames",
                    self.family.name()
                ),
            });
        }
        let grey = Frame {
            timestamp: 0.0,
            requested: 0.0,
            width: side as u32,
            height: side as u32,
            rgb: vec![128; side * side * 3],
        };
        let tokens = self.visual_tokens(&[grey], MediaKind::Video)?.features.nrows();
        Ok(tokensieve_video::samplers::f2c::Rung { side: side as u32, tokens })
    }

    /// The visual tokens of `frames` before pruning, with their layout and every signal the tower gives.
    pub fn visual_tokens(&self, frames: &[Frame], kind: MediaKind) -> Result<VisualTokens, QaError> {
        self.encode(&mut FrameSlice::new(frames), kind, SignalRequest { attention: true, keys: true }, &mut 0.0, None)
    }

    /// The rows of the decoder's visual span: the kept tokens, extra tokens, and the family's newlines where the
    /// unpruned model has them.
    fn span_rows(&self, chained: &Chained, units: (usize, usize), newline: Newline) -> Result<Array2<f32>, QaError> {
        let bad = |reason: String| QaError::Config { path: "visual tokens".into(), reason };
        let row = match (self.family.newline(), newline) {
            (Some(n), Newline::PerUnit | Newline::End) => {
                Some(ArrayView2::from_shape((1, n.len()), n).map_err(|e| bad(e.to_string()))?)
            }
            _ => None,
        };
        let kept = chained.features.view();
        let mut parts: Vec<ArrayView2<'_, f32>> = Vec::with_capacity(2 * units.0 + 2);
        match (newline, row) {
            (Newline::PerUnit, Some(row)) => {
                for run in unit_runs(&chained.origin, &super::qa::even_starts(units.0, units.1)) {
                    parts.push(kept.slice(ndarray::s![run, ..]));
                    parts.push(row);
                }
                parts.extend(chained.extra.as_ref().map(|e| e.view()));
            }
            (_, row) => {
                parts.push(kept);
                parts.extend(chained.extra.as_ref().map(|e| e.view()));
                parts.extend(row);
            }
        }
        ndarray::concatenate(ndarray::Axis(0), &parts).map_err(|e| bad(e.to_string()))
    }

    /// The signals the tower computes: those the chain's methods read ([`Pruner::uses`]).
    fn signals(&self, opts: &QaOptions) -> SignalRequest {
        let uses = |s: Signal| opts.pruners.iter().any(|m| m.uses().contains(&s));
        SignalRequest { attention: uses(Signal::ClsAttention), keys: uses(Signal::Keys) }
    }

    /// Refuses, with the reason, a method that needs a signal this model or backend did not give, before the chain
    /// runs (the pruners' own error would point at `prune`'s flags).
    fn check_signals(&self, visual: &VisualTokens, opts: &QaOptions) -> Result<(), QaError> {
        for method in &opts.pruners {
            for &signal in method.requires() {
                let reason = match signal {
                    Signal::ClsAttention if visual.attention.is_none() => {
                        "the vision encoder returns no attention (an ONNX export without the `attention` output: \
                         re-export it with models/export/export_onnx.py)"
                    }
                    Signal::Keys if visual.keys.is_none() => {
                        "the vision encoder returns no keys (re-export it with models/export/export_onnx.py)"
                    }
                    Signal::FrameGrid if visual.ragged.is_some() => {
                        "these visual tokens have no frame grid (images of different sizes are units of different \
                         grids); give images of one size or a video"
                    }
                    Signal::FrameGrid if visual.layout.is_none() => {
                        "these visual tokens have no frame grid (an any-resolution image is packed into one flat \
                         sequence); give a video or several images"
                    }
                    Signal::Relevance | Signal::Importance => {
                        "the pipeline computes no per-token relevance or importance for it yet"
                    }
                    _ => continue,
                };
                return Err(QaError::Signal {
                    method: method.name(),
                    signal: signal_name(signal),
                    reason: reason.into(),
                });
            }
        }
        Ok(())
    }

    /// The LLM input embeddings of the question's tokens, when a method of the chain reads query embeddings or
    /// relevance (which the chain computes from them, [`super::qa`]).
    fn query(&self, question: &str, opts: &QaOptions) -> Result<Option<QueryInput>, QaError> {
        if !reads_query(opts) {
            return Ok(None);
        }
        Ok(self.question_embeddings(question)?.map(|rows| QueryInput {
            rows,
            space: None,
            source: "the question's LLM input embeddings".into(),
        }))
    }

    /// The LLM input embeddings `[T, D]` of `question`'s tokens (no chat template), the query that query-aware
    /// methods read; `None` when it has no tokens.
    pub fn question_embeddings(&self, question: &str) -> Result<Option<Array2<f32>>, QaError> {
        let ids: Vec<i64> = self.tokenizer.encode(question)?.iter().map(|&t| t as i64).collect();
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.language.embed_ids(&ids)?))
    }

    fn chain(&self, visual: VisualTokens, query: Option<QueryInput>, opts: &QaOptions) -> Result<Chained, QaError> {
        match self.prune_on {
            #[cfg(feature = "onnx")]
            PruneOn::Host => prune_chain(&tokensieve_pruners::CpuBackend, visual, query, opts),
            #[cfg(feature = "torch")]
            PruneOn::Torch(device) => prune_chain(&tokensieve_pruners::TchBackend::new(device), visual, query, opts),
        }
    }

    /// One prefill without pruning, for inspection and parity checks (`tokensieve forward`): the last position's
    /// logits, the visual tokens as the decoder receives them (OneVision newlines included) and the tower's
    /// attention signal. With a chat template and `raw = false` the prompt is one user turn (a placeholder is added
    /// in front when the prompt has none); otherwise it is used verbatim. Each placeholder expands as transformers'
    /// processor expands it: one placeholder takes every visual token; as many `<image>` as images take one image
    /// each.
    pub fn prefill(&self, frames: &[Frame], kind: MediaKind, prompt: &str, raw: bool) -> Result<Prefilled, QaError> {
        let request = SignalRequest { attention: true, keys: false };
        let mut visual = self.encode(&mut FrameSlice::new(frames), kind, request, &mut 0.0, None)?;
        let attention = visual.attention.take();
        let total = visual.features.nrows();
        let chained = Chained {
            features: std::mem::take(&mut visual.features),
            origin: (0..total).collect(),
            extra: None,
            notes: Vec::new(),
            visual_tokens: Vec::new(),
        };
        let rows = self.span_rows(&chained, visual.units, visual.newline)?;
        let (placeholder_id, placeholder) = visual.placeholder;
        let (ids, positions) = match self.family.prompt_spans() {
            Some(spans) => {
                // One span per image (or one for the video), wrapped; a raw prompt writes them itself.
                let times: Vec<f64> = frames.iter().map(|f| f.timestamp).collect();
                let wrapped = span_text(spans, placeholder, kind, visual.units.0, &times);
                let text = match (self.template.as_ref(), raw) {
                    (Some(t), false) => {
                        let content = if prompt.contains(placeholder) {
                            prompt.to_string()
                        } else {
                            format!("{wrapped}\n{prompt}")
                        };
                        t.render(&serde_json::json!([{"role": "user", "content": content}]), true)
                            .map_err(|e| QaError::Config { path: "chat_template".into(), reason: e.to_string() })?
                    }
                    _ => prompt.to_string(),
                };
                let grids = visual.unit_grids();
                let layout = SpanVisual { origin: &chained.origin, extra: 0, grids: grids.as_deref() };
                self.span_prompt(spans, &text, layout, visual.placeholder, kind, &[], false)?
            }
            None => {
                let per_unit = visual.units.1 + usize::from(visual.newline == Newline::PerUnit);
                let expanded = inspection_prompt(
                    self.template.as_ref(),
                    prompt,
                    raw,
                    placeholder,
                    rows.nrows(),
                    (visual.units.0, per_unit),
                )?;
                let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
                let positions = PositionIds::Sequence((0..ids.len() as i64).collect());
                (ids, positions)
            }
        };
        let deepstack = visual.deepstack.as_ref().map(|d| d.view());
        let (logits, _) = self.language.prefill(&ids, &[(placeholder_id, rows.view())], deepstack, &positions, None)?;
        Ok(Prefilled { logits, prompt_tokens: ids.len(), visual: rows, attention })
    }

    /// Answers `question` about `frames`.
    pub fn ask(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        question: &str,
        opts: &QaOptions,
    ) -> Result<(String, QaRecord), QaError> {
        self.ask_streaming(frames, kind, None, question, opts, &mut |_| true)
    }

    /// Answers `question` about `frames` (a video's frames or separate images, see [`MediaKind`]) after an optional
    /// system prompt (a system turn with a chat template; the text before `USER:` in LLaVA-1.5's plain format),
    /// handing each piece of new text to `on_text` as it is generated (tokens can split characters, so a piece is
    /// what the new token adds to the decoded answer); `on_text` returning `false` stops generation.
    pub fn ask_streaming(
        &self,
        frames: &[Frame],
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        self.ask_source(&mut FrameSlice::new(frames), kind, system, question, opts, on_text)
    }

    /// [`Engine::ask_streaming`] on frames that a [`FrameSource`] hands over batch by batch (a [`VideoStream`]
    /// decodes them while the tower encodes the previous batch): memory is set by the batch and the arranged
    /// tokens, not by the number of frames. The time spent waiting for frames is the record's `decode` stage and is
    /// not part of the encode stage or of TTFT.
    ///
    /// [`VideoStream`]: super::frames::VideoStream
    pub fn ask_source(
        &self,
        source: &mut dyn FrameSource,
        kind: MediaKind,
        system: Option<&str>,
        question: &str,
        opts: &QaOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, QaRecord), QaError> {
        if let Some(rule) = &opts.in_llm {
            self.check_options(opts).map_err(pruning(rule.name()))?;
        }
        let mut clock = StageClock::start();
        let mut preprocess_ms = 0.0;
        let dual = opts.relevance.as_deref().filter(|_| reads_query(opts));
        let mut space = dual.map(|provider| QuerySpace::new(provider, &opts.pruners));
        let visual = self.encode(source, kind, self.signals(opts), &mut preprocess_ms, space.as_mut())?;
        self.check_signals(&visual, opts)?;
        let decode_ms = source.wait_ms();
        let mut ttft = clock.lap("encode") - decode_ms;
        let query = match space {
            Some(space) => Some(space.finish(question)?),
            None => self.query(question, opts)?,
        };
        let (units, newline, (placeholder_id, placeholder)) = (visual.units, visual.newline, visual.placeholder);
        let grids = visual.unit_grids();
        let mut visual = visual;
        let deepstack = visual.deepstack.take();
        let mut chained = self.chain(visual, query, opts)?;
        if let (Some(provider), false) = (&opts.relevance, reads_query(opts)) {
            chained.notes.push(format!("relevance: {} unused, the chain is query-agnostic", provider.label()));
        }
        let rows = self.span_rows(&chained, units, newline)?;
        ttft += clock.lap("prune");
        let extra = chained.extra.as_ref().map_or(0, |e| e.nrows());
        let (ids, positions) = match self.family.prompt_spans() {
            Some(spans) => {
                let wrapped = span_text(spans, placeholder, kind, units.0, source.timestamps());
                let prompt = question_prompt(self.template.as_ref(), system, &wrapped, question)?;
                let visual = SpanVisual { origin: &chained.origin, extra, grids: grids.as_deref() };
                let contiguous = opts.positions == super::qa::Positions::Contiguous;
                let (ids, positions) = self.span_prompt(
                    spans,
                    &prompt,
                    visual,
                    (placeholder_id, placeholder),
                    kind,
                    source.timestamps(),
                    contiguous,
                )?;
                (ids, positions)
            }
            None => {
                let prompt = question_prompt(self.template.as_ref(), system, placeholder, question)?;
                let expanded = prompt.replacen(placeholder, &vec![placeholder; rows.nrows()].join(" "), 1);
                let ids: Vec<i64> = self.tokenizer.encode(&expanded)?.iter().map(|&t| t as i64).collect();
                let span_start = ids.iter().position(|&t| t == placeholder_id).unwrap_or(0);
                let (offsets, unpruned) = span_offsets(&chained.origin, units, newline, extra);
                let positions = prompt_positions(opts.positions, ids.len(), span_start, &offsets, unpruned);
                (ids, PositionIds::Sequence(positions))
            }
        };
        // The droppable span: from the first placeholder to the last. A Qwen-VL prompt's images, and Qwen3-VL's
        // temporal patches, are separate spans with their wrapping (and timestamp) tokens between them; those few
        // text rows are inside the range, so a rule scores them like visual rows and may drop them. The decoder's
        // plans take one contiguous range (`PrefillPlan::span`), as FastV's own code takes one image span.
        let span = match (ids.iter().position(|&t| t == placeholder_id), ids.iter().rposition(|&t| t == placeholder_id))
        {
            (Some(a), Some(b)) => a..b + 1,
            _ => 0..0,
        };
        let drop = opts.in_llm.as_ref().map(|rule| DropPlan { rule, span });
        let stacked = deepstack.map(|d| deepstack_rows(&d, &chained)).transpose()?;
        let (logits, mut decoding) = self.language.prefill(
            &ids,
            &[(placeholder_id, rows.view())],
            stacked.as_ref().map(|d| d.view()),
            &positions,
            drop,
        )?;
        let tokens_per_layer = decoding.tokens_per_layer();
        let mut picker = TokenPicker::new(opts.sampling);
        let first = picker.pick_or_argmax(&logits) as i64;
        ttft += clock.lap("prefill");
        let first_logits = opts.keep_logits.then(|| logits.to_vec());
        let mut step =
            |token: i64| -> Result<i64, QaError> { Ok(picker.pick_or_argmax(&decoding.step(token)?) as i64) };
        let generated = generate(&self.tokenizer, opts, first, &mut step, on_text)?;
        clock.lap("generate");
        let record = Measured {
            frames: source.timestamps(),
            decode_ms,
            visual_tokens: chained.visual_tokens,
            kept: chained.origin,
            notes: chained.notes,
            prefill_tokens: ids.len(),
            tokens_per_layer,
            clock,
            preprocess_ms,
            ttft_ms: ttft,
            kv_bytes: decoding.kv_bytes(),
            shape: self.language.shape(),
            generated: &generated,
            first_logits,
        }
        .record();
        Ok((generated.answer, record))
    }
}

/// The visual rows a [`PromptSpans`] prompt is built around: the kept rows' encoder indices, the extra tokens after
/// them and every unit's merged `(rows, cols)` grid.
struct SpanVisual<'a> {
    origin: &'a [usize],
    extra: usize,
    grids: Option<&'a [(usize, usize)]>,
}

/// The text standing for the visual input of a [`PromptSpans`] family in the user turn: one
/// `start placeholder end` per image, or one for a video.
/// With [`PromptSpans::timestamps`] (Qwen3-VL) a video is one span per temporal patch, each after its time,
/// `<{t:.1} seconds>` with `t` the mean of the patch's first and last frame times (`timestamps` in seconds; an odd
/// count repeats the last frame, as the processor pads it).
fn span_text(spans: PromptSpans, placeholder: &str, kind: MediaKind, units: usize, timestamps: &[f64]) -> String {
    let one = format!("{}{placeholder}{}", spans.start.1, spans.end);
    match kind {
        MediaKind::Video if spans.timestamps => patch_times(timestamps, spans.temporal_patch, units)
            .iter()
            .map(|t| format!("<{t:.1} seconds>{one}"))
            .collect(),
        MediaKind::Video => one,
        MediaKind::Images => one.repeat(units.max(1)),
    }
}

/// The time of each of `patches` temporal patches of `temporal` frames: transformers' `Qwen3VLProcessor.
/// _calculate_timestamps`, `(t[i·temporal] + t[i·temporal + temporal − 1]) / 2` with the last frame repeated to
/// fill the last patch (0 s for frames without a time).
fn patch_times(timestamps: &[f64], temporal: usize, patches: usize) -> Vec<f64> {
    let temporal = temporal.max(1);
    let at = |i: usize| timestamps.get(i).or(timestamps.last()).copied().unwrap_or(0.0);
    (0..patches).map(|p| (at(p * temporal) + at(p * temporal + temporal - 1)) / 2.0).collect()
}

/// The DeepStack rows of the decoder's visual span: each kept token's planes (a merged token's are its
/// representative's, the kept index), then zeros for the extra tokens, which no tower layer produced.
fn deepstack_rows(planes: &Array2<f32>, chained: &Chained) -> Result<Array2<f32>, QaError> {
    let extra = chained.extra.as_ref().map_or(0, |e| e.nrows());
    let mut rows = Array2::zeros((chained.origin.len() + extra, planes.ncols()));
    for (row, &o) in chained.origin.iter().enumerate() {
        if o >= planes.nrows() {
            return Err(QaError::Config {
                path: "DeepStack planes".into(),
                reason: format!("kept token {o} of {} rows of planes", planes.nrows()),
            });
        }
        rows.row_mut(row).assign(&planes.row(o));
    }
    Ok(rows)
}

/// A signal's name in a one-line refusal.
fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::ClsAttention => "the tower's attention",
        Signal::Keys => "the tower's keys",
        Signal::Importance => "per-token importance",
        Signal::Relevance => "per-token relevance",
        Signal::Query => "query embeddings",
        Signal::FrameGrid => "a frame grid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_video_spans_carry_their_patch_times() {
        let spans = PromptSpans {
            start: (90, "<|vision_start|>"),
            end: "<|vision_end|>",
            tokens_per_second: 1.0,
            temporal_patch: 2,
            timestamps: true,
        };
        // Frames 0..3 of a 2 fps video (the fixture's), then an odd count that repeats the last frame.
        let text = span_text(spans, "<p>", MediaKind::Video, 2, &[0.0, 0.5, 1.0, 1.5]);
        assert_eq!(
            text,
            "<0.2 seconds><|vision_start|><p><|vision_end|><1.2 seconds><|vision_start|><p><|vision_end|>"
        );
        assert_eq!(patch_times(&[0.0, 0.5, 1.0], 2, 2), vec![0.25, 1.0]);
        // Qwen2.5-VL: one span for the whole video.
        let plain = PromptSpans { timestamps: false, ..spans };
        assert_eq!(span_text(plain, "<p>", MediaKind::Video, 2, &[0.0, 0.5]), "<|vision_start|><p><|vision_end|>");
    }
}
