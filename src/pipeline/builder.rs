//! [`Pipeline`]: the library entry point. Built once from a model directory, a frame sampler, a chain of pre-LLM
//! pruners, an optional in-decoder pruner, a budget and a device (libtorch), or from an ONNX export with
//! [`PipelineBuilder::onnx`] (ONNX Runtime); then asked any number of questions about videos, images or multi-camera
//! samples, reusing the loaded model.
//!
//! ```no_run
//! # fn main() -> Result<(), tokensieve::pipeline::builder::PipelineError> {
//! use tokensieve::pipeline::builder::Pipeline;
//! let pipeline = Pipeline::builder("models/llava-onevision-0.5b")
//!     .sampler("uniform:frames=16")?
//!     .pruner("dcode")?
//!     .pruner("todre")?
//!     .ratio(0.1)
//!     .in_llm("fastv:layer=2,ratio=0.5")?
//!     .build()?;
//! let answer = pipeline.ask_video("clip.mp4".as_ref(), "What happens?")?;
//! println!("{} ({} visual tokens kept)", answer.text, answer.record.visual_tokens_kept());
//! # Ok(()) }
//! ```
//!
//! Concurrency \[project\]: within a question, [`Pipeline::ask`] and [`Pipeline::ask_video`] decode a video on a
//! background thread while the tower encodes the frames before ([`VideoStream`]), so its frames are never all in
//! memory; the other stages run in order, each parallel in itself (frames are resized on every core, the tower
//! batches frames). Across
//! questions, [`Pipeline::ask_all`] decodes the next question's media on a second thread while the model answers the
//! current one, which hides decoding entirely once it is shorter than answering.

use super::engine::{Engine, EngineChoice};
use super::frames::{FrameSource, VideoStream};
use super::qa::{BudgetScope, MediaKind, Positions, QaError, QaOptions, QaRecord};
use super::sampler::{Sampler, SamplerError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
#[cfg(feature = "onnx")]
use tokensieve_models::onnx_session::{OnnxOptions, Precision};
use tokensieve_models::sampling::Sampling;
use tokensieve_pruners::in_decoder::InDecoder;
use tokensieve_pruners::{Budget, Method, PruneError};
use tokensieve_video::{decode_indices_native, load_image_native, order_views, probe, Frame, ImageError, VideoError};

/// Why a pipeline could not be built or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A pruner, in-decoder or budget spec is wrong.
    #[error(transparent)]
    Spec(#[from] PruneError),
    /// The sampler spec is wrong or the sampler failed.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// The video could not be read.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// An image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model failed.
    #[error(transparent)]
    Qa(#[from] QaError),
    /// The input holds no frame.
    #[error("{0}: no frame to show the model")]
    NoFrames(String),
    /// The sampler ranks frames by the question and has no scorer.
    #[error("--sampler {sampler} ranks frames by the question: it needs a dual encoder (--relevance clip:MODEL or siglip:MODEL)")]
    NeedsScorer {
        /// The sampler.
        sampler: &'static str,
    },
}

/// What content-aware samplers take from a dual encoder: F2C ranks frames by the question
/// ([`Sampler::pick_scored`]: the scorer, the question with its options for multiple choice, as F2C's query, and the
/// model's resolution ladder), D-CoDe embeds its candidates with it ([`Sampler::pick_with`]).
#[derive(Clone, Copy)]
pub struct Question<'a> {
    /// The dual encoder.
    pub provider: &'a dyn super::relevance::PatchRelevance,
    /// The question.
    pub query: &'a str,
    /// The resolutions the model takes and a frame's token cost at each.
    pub ladder: &'a [tokensieve_video::samplers::f2c::Rung],
}

/// What `sampler` needs to rank frames by `query`: `None` when it does not rank by the question or there is no
/// `provider` (then a ranking sampler refuses with [`PipelineError::NeedsScorer`]).
pub fn question_for<'a>(
    sampler: &Sampler,
    provider: Option<&'a dyn super::relevance::PatchRelevance>,
    ladder: &'a [tokensieve_video::samplers::f2c::Rung],
    query: &'a str,
) -> Option<Question<'a>> {
    let provider = provider?;
    matches!(sampler, Sampler::F2c { .. } | Sampler::DCode { .. }).then_some(Question { provider, query, ladder })
}

/// The frames `sampler` picks from the video `path` described by `info`, with the question when it needs one.
fn pick(
    sampler: &Sampler,
    path: &Path,
    info: &tokensieve_video::VideoInfo,
    question: Option<Question<'_>>,
) -> Result<(Vec<usize>, Option<serde_json::Value>), PipelineError> {
    Ok(match (sampler, question) {
        (Sampler::F2c { .. }, Some(q)) => sampler.pick_scored(path, info, q.provider.scorer(), q.query, q.ladder)?,
        (Sampler::F2c { .. }, None) => return Err(PipelineError::NeedsScorer { sampler: sampler.name() }),
        (Sampler::DCode { .. }, Some(q)) => sampler.pick_with(path, info, q.provider.embedder())?,
        _ => sampler.pick(path, info)?,
    })
}

/// Configures a [`Pipeline`]; every setter that parses a spec says what is wrong with it.
pub struct PipelineBuilder {
    model: PathBuf,
    choice: EngineChoice,
    sampler: Sampler,
    pruners: Vec<Method>,
    budget: Budget,
    in_llm: Option<InDecoder>,
    max_new_tokens: usize,
    sampling: Sampling,
    stop: Vec<String>,
    positions: Positions,
    keep_logits: bool,
    scope: BudgetScope,
    encode_batch: Option<usize>,
    relevance: Option<std::sync::Arc<dyn super::relevance::PatchRelevance>>,
}

impl PipelineBuilder {
    /// Runs on ONNX Runtime instead of libtorch: the model folder is an export in the community layout
    /// (`models/export/export_onnx.py`), loaded in `precision` with the session settings `options`. Device and dtype
    /// do not apply (ONNX Runtime runs on the CPU here; the precision picks the graph files).
    #[cfg(feature = "onnx")]
    pub fn onnx(mut self, precision: Precision, options: OnnxOptions) -> Self {
        self.choice = EngineChoice::Onnx { precision, options };
        self
    }

    /// Greedy by default; `Sampling { temperature, top_p, seed }` samples reproducibly.
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// Position ids after pre-LLM pruning: [`Positions::Original`] (the default) or [`Positions::Contiguous`].
    pub fn positions(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }

    /// How the budget is shared among frames: [`BudgetScope::Global`] (the default) or [`BudgetScope::Frame`]
    /// (each frame keeps its share).
    pub fn budget_scope(mut self, scope: BudgetScope) -> Self {
        self.scope = scope;
        self
    }

    /// Gives query-aware methods (`query`, `cdpruner`, `mmr:importance=relevance`) a dual encoder's relevance
    /// (a `DualProvider` on libtorch) instead of the VLM's own embeddings (`llm`, the default).
    pub fn relevance(mut self, provider: std::sync::Arc<dyn super::relevance::PatchRelevance>) -> Self {
        self.relevance = Some(provider);
        self
    }

    /// Keeps the prefill's last-position logits in each answer's record (`record.qa.first_logits`).
    pub fn keep_logits(mut self, keep: bool) -> Self {
        self.keep_logits = keep;
        self
    }

    /// Views the vision tower encodes at once (default: as many as fit 256 MiB of its work; see
    /// [`Engine::set_encode_batch`]).
    pub fn encode_batch(mut self, views: usize) -> Self {
        self.encode_batch = Some(views);
        self
    }

    /// Generation also stops before any of these strings.
    pub fn stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// The frame sampler for videos (`uniform:frames=8` by default; see [`super::sampler`]).
    pub fn sampler(mut self, spec: &str) -> Result<Self, PipelineError> {
        self.sampler = Sampler::from_spec(spec)?;
        Ok(self)
    }

    /// Appends a pre-LLM pruner to the chain (`todre`, `divprune:seed=1`, ...); each stage keeps at most the budget.
    pub fn pruner(mut self, spec: &str) -> Result<Self, PipelineError> {
        self.pruners.push(Method::from_spec(spec)?.0);
        Ok(self)
    }

    /// Keep `k` visual tokens (all frames together).
    pub fn keep(mut self, k: usize) -> Self {
        self.budget = Budget::Keep(k);
        self
    }

    /// Keep this fraction of the visual tokens, in (0, 1].
    pub fn ratio(mut self, r: f64) -> Self {
        self.budget = Budget::Ratio(r);
        self
    }

    /// Prune inside the decoder too (torch backend): `fastv:layer=K,ratio=R`, `pdrop:layers=8/16/24,lambda=0.5`,
    /// `todre-stage2:tau=0.1`, `sparsevlm:retain=192`, `holitom-inner:layer=3,r=0.5`, `dycoke-kv:layer=3,prune=0.8` or `dart:layer=2,ratio=0.778`.
    pub fn in_llm(mut self, spec: &str) -> Result<Self, PipelineError> {
        self.in_llm = Some(InDecoder::from_spec(spec)?);
        Ok(self)
    }

    /// Runs on libtorch on `device` (`Device::Cpu`, `Device::Cuda(0)`); CUDA when available by default.
    #[cfg(feature = "torch")]
    pub fn device(mut self, device: tch::Device) -> Self {
        let (_, dtype, weights) = self.torch_choice();
        self.choice = EngineChoice::Torch { device, dtype, weights };
        self
    }

    /// Runs on libtorch computing the tower and decoder in `dtype`: `Some(Kind::Float)`, `Some(Kind::Half)`,
    /// `Some(Kind::BFloat16)`, or `None` (the default) for the checkpoint's stored dtype where the device computes it
    /// natively, else f32 ([`tokensieve_models::runtime::auto_dtype`]).
    #[cfg(feature = "torch")]
    pub fn dtype(mut self, dtype: impl Into<Option<tch::Kind>>) -> Self {
        let (device, _, weights) = self.torch_choice();
        self.choice = EngineChoice::Torch { device, dtype: dtype.into(), weights };
        self
    }

    /// Holds the decoder's linear weights as `weights` says: `DecoderWeights::Int8` is weight-only int8 for
    /// decoding on a CPU ([`tokensieve_models::linear`]), `Dense` (the default) keeps the compute dtype.
    #[cfg(feature = "torch")]
    pub fn decoder_weights(mut self, weights: tokensieve_models::linear::DecoderWeights) -> Self {
        let (device, dtype, _) = self.torch_choice();
        self.choice = EngineChoice::Torch { device, dtype, weights };
        self
    }

    /// The torch settings chosen so far (the defaults when the ONNX backend was chosen).
    #[cfg(feature = "torch")]
    fn torch_choice(&self) -> (tch::Device, Option<tch::Kind>, tokensieve_models::linear::DecoderWeights) {
        match self.choice {
            EngineChoice::Torch { device, dtype, weights } => (device, dtype, weights),
            #[cfg(feature = "onnx")]
            EngineChoice::Onnx { .. } => (tch::Device::cuda_if_available(), None, Default::default()),
        }
    }

    /// Most tokens to generate per answer (128 by default).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Loads the model and checks the budget.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        self.budget.validate()?;
        let mut qa = Engine::load(&self.model, self.choice)?;
        qa.set_encode_batch(self.encode_batch);
        self.sampling.validate().map_err(|reason| PruneError::Param {
            method: "generation".into(),
            param: "sampling".into(),
            reason,
        })?;
        let opts = QaOptions {
            pruners: self.pruners,
            budget: self.budget,
            in_llm: self.in_llm,
            max_new_tokens: self.max_new_tokens,
            sampling: self.sampling,
            stop: self.stop,
            positions: self.positions,
            keep_logits: self.keep_logits,
            scope: self.scope,
            relevance: self.relevance,
        };
        qa.check_options(&opts)?;
        let ladder = match self.sampler.needs_question() {
            true if opts.relevance.is_none() => {
                return Err(PipelineError::NeedsScorer { sampler: self.sampler.name() })
            }
            true => vec![qa.video_frame_rung()?],
            false => Vec::new(),
        };
        Ok(Pipeline { qa, sampler: self.sampler, opts, ladder })
    }
}

/// A question's input.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// A video file, sampled with the pipeline's sampler.
    Video(PathBuf),
    /// Image files, in order.
    Images(Vec<PathBuf>),
    /// Camera views `(CAM_FRONT, path)`, put in nuScenes camera order.
    Views(Vec<(String, PathBuf)>),
}

/// Frames ready for the model, with what it took to get them.
pub struct LoadedMedia {
    /// The decoded frames, in order.
    pub frames: Vec<Frame>,
    /// Video frames or separate images.
    pub kind: MediaKind,
    /// Frame indices the sampler picked from the video (empty for images).
    pub indices: Vec<usize>,
    /// What the sampler reported (F2C's anchors and scores, D-CoDe's embedder, a clamped frame count).
    pub sampler_note: Option<serde_json::Value>,
    /// Milliseconds spent decoding.
    pub decode_ms: f64,
}

/// Everything recorded about one answer.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRecord {
    /// The sampler (`None` for images).
    pub sampler: Option<String>,
    /// Frame indices picked from the video (empty for images).
    pub frame_indices: Vec<usize>,
    /// What the sampler reports (D-CoDe: candidates, embedder).
    pub sampler_note: Option<serde_json::Value>,
    /// Decoding, ms: demux, decode and colour conversion of the frames (or image decoding) when they are decoded
    /// first; for a streamed video the sampler's time plus the time the model waited for frames (decoding that
    /// overlapped encoding is in neither).
    pub decode_ms: f64,
    /// Time to first token including decoding, ms (`ttft_ms` excludes it, EVAL.md §7.3).
    pub ttft_e2e_ms: f64,
    /// The model's record: frame timestamps, visual tokens per stage, stage times, TTFT, KV bytes, FLOPs.
    #[serde(flatten)]
    pub qa: QaRecord,
}

impl PipelineRecord {
    /// Visual tokens the decoder received (after the last pre-LLM stage).
    pub fn visual_tokens_kept(&self) -> usize {
        self.qa.visual_tokens.last().map_or(0, |v| v.1)
    }
}

/// An answer and its record.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The generated text.
    pub text: String,
    /// What happened.
    pub record: PipelineRecord,
}

/// A loaded model with its sampler and pruning settings.
pub struct Pipeline {
    qa: Engine,
    sampler: Sampler,
    opts: QaOptions,
    /// The model's F2C ladder, when the sampler ranks frames by the question.
    ladder: Vec<tokensieve_video::samplers::f2c::Rung>,
}

impl Pipeline {
    /// Starts a pipeline on a Hugging Face `llava` or `llava_onevision` directory: uniform 8 frames, no pruning,
    /// 128 new tokens, CUDA when available.
    pub fn builder(model: impl AsRef<Path>) -> PipelineBuilder {
        PipelineBuilder {
            model: model.as_ref().to_path_buf(),
            choice: default_choice(),
            sampler: Sampler::Uniform { frames: 8 },
            pruners: Vec::new(),
            budget: Budget::Ratio(1.0),
            in_llm: None,
            max_new_tokens: 128,
            sampling: Sampling::default(),
            stop: Vec::new(),
            positions: Positions::Original,
            keep_logits: false,
            scope: BudgetScope::Global,
            encode_batch: None,
            relevance: None,
        }
    }

    /// Decodes a question's media (the sampler's frames of a video at native resolution, or the images). A sampler
    /// that ranks frames by the question (F2C) needs [`Pipeline::load_for`].
    pub fn load(&self, media: &Media) -> Result<LoadedMedia, PipelineError> {
        load_media(&self.sampler, media, None)
    }

    /// [`Pipeline::load`] for `question`: F2C scores the candidate frames against it with the relevance provider
    /// (D-CoDe embeds them with it).
    pub fn load_for(&self, media: &Media, question: &str) -> Result<LoadedMedia, PipelineError> {
        load_media(&self.sampler, media, self.question(question))
    }

    /// What the sampler needs to rank frames by `question`, when it does and the pipeline has a provider.
    fn question<'a>(&'a self, query: &'a str) -> Option<Question<'a>> {
        question_for(&self.sampler, self.opts.relevance.as_deref(), &self.ladder, query)
    }

    /// Answers `question` about already decoded media.
    pub fn answer(&self, media: LoadedMedia, question: &str) -> Result<Answer, PipelineError> {
        self.answer_streaming(media, question, &mut |_| true)
    }

    /// Answers `question`, handing each new piece of the answer to `on_text` as it is generated (`false` stops).
    pub fn answer_streaming(
        &self,
        media: LoadedMedia,
        question: &str,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Answer, PipelineError> {
        let (text, qa) = self.qa.ask_streaming(&media.frames, media.kind, None, question, &self.opts, on_text)?;
        let record = PipelineRecord {
            sampler: (media.kind == MediaKind::Video).then(|| self.sampler.name().to_string()),
            frame_indices: media.indices,
            sampler_note: media.sampler_note,
            decode_ms: media.decode_ms,
            ttft_e2e_ms: media.decode_ms + qa.ttft_ms,
            qa,
        };
        Ok(Answer { text, record })
    }

    /// Answers `question` about `media`.
    pub fn ask(&self, media: &Media, question: &str) -> Result<Answer, PipelineError> {
        self.ask_streaming(media, question, &mut |_| true)
    }

    /// Answers `question` about `media`, handing each new piece of the answer to `on_text` (`false` stops). A
    /// video is decoded on a background thread while the model encodes the frames before ([`VideoStream`]), so its
    /// frames are never all in memory: the record's `decode_ms` is the sampler's time plus the time the model waited
    /// for frames. Images are decoded first, as [`Pipeline::load`] does.
    pub fn ask_streaming(
        &self,
        media: &Media,
        question: &str,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Answer, PipelineError> {
        let Media::Video(path) = media else {
            return self.answer_streaming(self.load(media)?, question, on_text);
        };
        let clock = Instant::now();
        let (mut stream, indices, sampler_note) = stream_video(&self.sampler, path, self.question(question))?;
        let sample_ms = clock.elapsed().as_secs_f64() * 1e3;
        // A frame that fails to decode mid-stream is the same error as when decoding first.
        let (text, qa) = self
            .qa
            .ask_source(&mut stream, MediaKind::Video, None, question, &self.opts, on_text)
            .map_err(|e| match e {
                QaError::Video(v) => PipelineError::Video(v),
                e => PipelineError::Qa(e),
            })?;
        let decode_ms = sample_ms + stream.wait_ms();
        let record = PipelineRecord {
            sampler: Some(self.sampler.name().to_string()),
            frame_indices: indices,
            sampler_note,
            decode_ms,
            ttft_e2e_ms: decode_ms + qa.ttft_ms,
            qa,
        };
        Ok(Answer { text, record })
    }

    /// Answers a question about a video.
    pub fn ask_video(&self, path: &Path, question: &str) -> Result<Answer, PipelineError> {
        self.ask(&Media::Video(path.to_path_buf()), question)
    }

    /// Answers every `(media, question)`, decoding the next media while the model answers the current question.
    pub fn ask_all(&self, requests: &[(Media, String)]) -> Vec<Result<Answer, PipelineError>> {
        let (sampler, provider, ladder) = (&self.sampler, self.opts.relevance.as_deref(), &self.ladder);
        super::overlap::overlapped(
            requests,
            |(media, question)| load_media(sampler, media, question_for(sampler, provider, ladder, question)),
            |(_, question), loaded| loaded.and_then(|m| self.answer(m, question)),
        )
    }
}

/// libtorch (CUDA when available, the stored dtype where the device computes it natively) when the build has it,
/// else ONNX Runtime in fp32.
fn default_choice() -> EngineChoice {
    #[cfg(feature = "torch")]
    return EngineChoice::Torch { device: tch::Device::cuda_if_available(), dtype: None, weights: Default::default() };
    #[cfg(not(feature = "torch"))]
    EngineChoice::Onnx { precision: Precision::Fp32, options: OnnxOptions::default() }
}

/// The frames `sampler` picks from the video at `path`, decoded on a background thread as the engine asks for them
/// ([`VideoStream`]), with the picked indices and the sampler's note; no frame picked is [`PipelineError::NoFrames`].
pub fn stream_video(
    sampler: &Sampler,
    path: &Path,
    question: Option<Question<'_>>,
) -> Result<(VideoStream, Vec<usize>, Option<serde_json::Value>), PipelineError> {
    let info = probe(path)?;
    let (indices, note) = pick(sampler, path, &info, question)?;
    if indices.is_empty() {
        return Err(PipelineError::NoFrames(path.display().to_string()));
    }
    Ok((VideoStream::start(path, &info, &indices), indices, note))
}

/// Decodes a question's media: the sampler's frames of a video at native resolution, or the images. Needs no model
/// (F2C's `question` carries its scorer), so it runs on any thread.
pub fn load_media(
    sampler: &Sampler,
    media: &Media,
    question: Option<Question<'_>>,
) -> Result<LoadedMedia, PipelineError> {
    let clock = Instant::now();
    let (frames, kind, indices, sampler_note, what) = match media {
        Media::Video(path) => {
            let info = probe(path)?;
            let (indices, note) = pick(sampler, path, &info, question)?;
            let frames = decode_indices_native(path, &info, &indices)?;
            (frames, MediaKind::Video, indices, note, path.display().to_string())
        }
        Media::Images(paths) => {
            use rayon::prelude::*;
            let frames = paths.par_iter().map(|p| load_image_native(p)).collect::<Result<Vec<_>, ImageError>>()?;
            (frames, MediaKind::Images, Vec::new(), None, "the image list".to_string())
        }
        Media::Views(views) => {
            use rayon::prelude::*;
            let ordered = order_views(views)?;
            let frames =
                ordered.par_iter().map(|(_, p)| load_image_native(p)).collect::<Result<Vec<_>, ImageError>>()?;
            (frames, MediaKind::Images, Vec::new(), None, "the camera views".to_string())
        }
    };
    if frames.is_empty() {
        return Err(PipelineError::NoFrames(what));
    }
    Ok(LoadedMedia { frames, kind, indices, sampler_note, decode_ms: clock.elapsed().as_secs_f64() * 1e3 })
}
