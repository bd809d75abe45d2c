//! The pieces of the QA engine ([`super::engine::Engine`]) that are plain functions: the options of a question, the
//! record of an answer, the errors, the pre-LLM pruner chain (generic over the pruners' [`Backend`]), the prompt,
//! the position ids and the generation loop with stop strings and streaming.

use crate::pipeline::flops::{prefill_macs, DecoderShape};
use ndarray::Array2;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;
use tokensieve_models::chat_template::ChatTemplate;
pub(crate) use tokensieve_models::onevision::square_side;
use tokensieve_models::sampling::{generate_text, Generated, Sampling};
use tokensieve_models::tokenizer::TextTokenizer;
use tokensieve_pruners::in_decoder::InDecoder;
use tokensieve_pruners::{prune, Backend, Budget, Layout, Method, Pruner, Signal, TokenSet};

/// What can go wrong answering a question.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The model could not load or run (libtorch backend).
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Model(#[from] tokensieve_models::llava::LlavaError),
    /// The language model failed (libtorch backend).
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Decoder(#[from] tokensieve_models::llama::LlamaError),
    /// The Qwen-VL vision tower could not load or run (libtorch backend).
    #[cfg(feature = "torch")]
    #[error(transparent)]
    QwenVision(#[from] tokensieve_models::qwen_vision::QwenVisionError),
    /// libtorch failed.
    #[cfg(feature = "torch")]
    #[error("libtorch: {}", tokensieve_models::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// ONNX Runtime could not load or run a graph (the file is named).
    #[cfg(feature = "onnx")]
    #[error(transparent)]
    Onnx(#[from] tokensieve_models::onnx_session::OnnxError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] tokensieve_models::tokenizer::TokenizerError),
    /// The relevance provider (a dual encoder) failed.
    #[error(transparent)]
    Relevance(#[from] super::relevance::RelevanceError),
    /// A pruner failed (the method is named).
    #[error("{method}: {source}")]
    Prune {
        /// The method.
        method: &'static str,
        /// Its error.
        source: tokensieve_pruners::PruneError,
    },
    /// A configuration file is missing or unusable.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A method of the chain needs a signal this model or backend does not give.
    #[error("{method} needs {signal}, but {reason}")]
    Signal {
        /// The method.
        method: &'static str,
        /// The signal, in words.
        signal: &'static str,
        /// Why it is missing.
        reason: String,
    },
    /// A setting this backend or device does not run.
    #[error("{setting}: {reason}")]
    Unsupported {
        /// The setting.
        setting: String,
        /// Why, and what runs instead.
        reason: String,
    },
    /// The device ran out of memory; the stage and its batch are named, so the fix is clear (a smaller encode
    /// batch, `Pipeline::encode_batch` or `--encode-batch`, for the tower; fewer frames or a lower budget for the
    /// decoder).
    #[error(
        "{device} ran out of memory in the {stage} stage ({batch}): {detail}; lower the encode batch \
         (--encode-batch), the frames or the budget"
    )]
    OutOfMemory {
        /// The device, as libtorch names it.
        device: String,
        /// `encode`, `prefill` or `generate`.
        stage: &'static str,
        /// What the stage ran on: views of the tower batch, or tokens.
        batch: String,
        /// libtorch's first line.
        detail: String,
    },
    /// A streamed video could not be decoded.
    #[error(transparent)]
    Video(#[from] tokensieve_video::VideoError),
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

/// Wraps a pruner error with the method's name.
pub(crate) fn pruning(method: &'static str) -> impl Fn(tokensieve_pruners::PruneError) -> QaError {
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
    /// Position ids of the prompt after pre-LLM pruning.
    pub positions: Positions,
    /// Keep the prefill's last-position logits in the record ([`QaRecord::first_logits`]; `ask --logits-out`).
    pub keep_logits: bool,
    /// How the budget is shared among frames (images, temporal patches).
    pub scope: BudgetScope,
    /// Where query-aware methods get relevance: a dual encoder (`--relevance clip:MODEL`), or `None` for the
    /// `llm` provider (the VLM's own embeddings).
    pub relevance: Option<std::sync::Arc<dyn super::relevance::PatchRelevance>>,
}

/// How a multi-frame input's budget is shared among its units (video frames, Qwen temporal patches, images).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// One budget over every token: the methods choose across frames, and each frame keeps what they chose (the
    /// prompt then gives each frame its own count; a Qwen3-VL frame that keeps nothing keeps its timestamp and an
    /// empty span, as vLLM's EVS rewrites the per-frame counts). The default, and what the papers' tables use.
    #[default]
    Global,
    /// Each unit keeps its share: the budget `k` split evenly (`k div U`, the first `k mod U` units one more), each
    /// method run on each unit alone (its grid a one-frame grid). What serving engines need when a frame's token
    /// count is fixed before encoding (Qwen3-VL's per-frame timestamps, `retained_count`). Methods that compare
    /// frames (DyCoke, EVS, FastVID, ...) refuse it: they need the frames together. Extra tokens (PruMerge+) of
    /// every unit follow the last unit's kept tokens, where the chain always puts them.
    Frame,
}

impl BudgetScope {
    /// `global` or `frame`; the error names the value.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "global" => Ok(BudgetScope::Global),
            "frame" => Ok(BudgetScope::Frame),
            other => Err(format!("budget scope `{other}` is not global or frame")),
        }
    }
}

/// Position ids of a prompt whose visual tokens were pruned before the decoder (ALGORITHMS.md §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Positions {
    /// Kept tokens keep their original ids (with gaps), text after the visual span keeps its ids and decoding
    /// continues from the last original id + 1 (FastV, DivPrune, FastVID). The default.
    #[default]
    Original,
    /// The pruned prompt is numbered `0..S'-1`, as LLaVA-style reference code that splices a shortened encoder
    /// output does (VisionZip, PruMerge, CDPruner, D-CoDe).
    Contiguous,
}

impl Positions {
    /// `original` or `contiguous`; the error names the value.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "original" => Ok(Positions::Original),
            "contiguous" => Ok(Positions::Contiguous),
            other => Err(format!("positions `{other}` is not original or contiguous")),
        }
    }
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
            positions: Positions::Original,
            keep_logits: false,
            scope: BudgetScope::Global,
            relevance: None,
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
    /// Encoder index of each kept visual row, ascending (merged rows at their representative), before newlines and
    /// extra tokens are added: what the pre-LLM chain selected.
    pub kept: Vec<usize>,
    /// What the methods noted (fallbacks taken, adaptive counts, where the query came from), as `method: note`.
    pub notes: Vec<String>,
    /// Tokens of the prompt sent to the decoder.
    pub prefill_tokens: usize,
    /// Tokens each decoder layer saw in the prefill (shorter after an in-decoder drop).
    pub tokens_per_layer: Vec<usize>,
    /// Milliseconds per stage: preprocess, encode (tower + projector), prune, prefill, generate (the tokens after
    /// the first), and `decode` when frames were streamed: the time the engine waited for them (not in `encode` or
    /// TTFT). Decoding done before is in the pipeline's record.
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
    /// Decoder steps after the prefill (the `generate` stage's work): decode speed is steps / generate time.
    pub decode_steps: usize,
    /// The prefill's last-position logits `[V]`, when [`QaOptions::keep_logits`] asked for them (not serialised:
    /// `ask --logits-out` writes them as `.npy`, for parity checks of pruned prompts).
    #[serde(skip)]
    pub first_logits: Option<Vec<f32>>,
}

pub use tokensieve_models::arch::{MediaKind, Newline, VisualTokens};

/// The kept tokens of each unit (frame or image), as runs of rows of the kept matrix: kept indices are ascending,
/// so each unit's survivors are contiguous. `origin[i]` is the encoder index of kept row `i`; `starts` are the
/// units' first encoder rows and, last, the row count ([`VisualTokens::unit_starts`]).
pub(crate) fn unit_runs(origin: &[usize], starts: &[usize]) -> Vec<Range<usize>> {
    let mut runs = Vec::with_capacity(starts.len().saturating_sub(1));
    let mut start = 0usize;
    for end_row in starts.iter().skip(1) {
        let end = start + origin[start..].iter().take_while(|&&o| o < *end_row).count();
        runs.push(start..end);
        start = end;
    }
    runs
}

/// The boundaries of `units` units of `per` rows each (see [`unit_runs`]).
pub(crate) fn even_starts(units: usize, per: usize) -> Vec<usize> {
    (0..=units).map(|u| u * per).collect()
}

/// Where each row of the decoder's visual span (kept tokens, `extra` synthetic tokens and the family's newlines, in
/// the order the engine builds it) sat in the unpruned span, and the unpruned span's length. Merged tokens sit where
/// their representative did; extra tokens (PruMerge+), which have no place of their own, lengthen the span by their
/// count right after the last visual token (before a trailing newline).
pub(crate) fn span_offsets(
    origin: &[usize],
    units: (usize, usize),
    newline: Newline,
    extra: usize,
) -> (Vec<usize>, usize) {
    let (count, per) = units;
    let tail = |end: usize| end..end + extra;
    match newline {
        Newline::None => (origin.iter().copied().chain(tail(count * per)).collect(), count * per + extra),
        Newline::End => {
            let offsets = origin.iter().copied().chain(tail(count * per)).chain([count * per + extra]).collect();
            (offsets, count * per + extra + 1)
        }
        Newline::PerUnit => {
            let mut offsets = Vec::with_capacity(origin.len() + count + extra);
            for (unit, run) in unit_runs(origin, &even_starts(count, per)).into_iter().enumerate() {
                offsets.extend(origin[run].iter().map(|&o| unit * (per + 1) + o % per));
                offsets.push(unit * (per + 1) + per);
            }
            offsets.extend(tail(count * (per + 1)));
            (offsets, count * (per + 1) + extra)
        }
    }
}

/// Position ids of a prompt of `len` tokens whose visual span starts at `span_start`, each span row at its
/// `offsets` place in an unpruned span of `unpruned` rows (see [`Positions`]).
pub(crate) fn prompt_positions(
    mode: Positions,
    len: usize,
    span_start: usize,
    offsets: &[usize],
    unpruned: usize,
) -> Vec<i64> {
    let span_end = span_start + offsets.len();
    (0..len)
        .map(|p| match mode {
            Positions::Contiguous => p,
            Positions::Original if p < span_start => p,
            Positions::Original if p < span_end => span_start + offsets[p - span_start],
            Positions::Original => span_start + unpruned + (p - span_end),
        } as i64)
        .collect()
}

/// The output of the pre-LLM pruner chain, on the host.
pub(crate) struct Chained {
    /// The kept (or merged) features `[k, D]`.
    pub features: Array2<f32>,
    /// Encoder index of each kept row.
    pub origin: Vec<usize>,
    /// Synthetic tokens with no original index (PruMerge+), placed after the kept ones.
    pub extra: Option<Array2<f32>>,
    /// Every stage's notes, as `method: note`.
    pub notes: Vec<String>,
    /// `(stage, tokens after it)`, starting with the encoder.
    pub visual_tokens: Vec<(String, usize)>,
}

/// The question as query-aware methods read it: its embedding rows `[T, E]` and, when they come from a dual
/// encoder, the visual tokens embedded in that space (`[N, E]`, row `i` where token `i`'s region is).
pub struct QueryInput {
    /// The question's rows: the LLM's input embeddings of its tokens (`llm`) or a dual encoder's text embeddings.
    pub rows: Array2<f32>,
    /// The tokens in the rows' space (`None` for `llm`: the features are that space).
    pub space: Option<Array2<f32>>,
    /// How the record describes the rows (`the question's LLM input embeddings`, ...).
    pub source: String,
}

/// Runs `opts.pruners` in order on `visual` (and the question's `query` embeddings, for methods that read them),
/// on `backend`. The budget is resolved once against all `N` tokens and every stage keeps at most that many (a stage
/// whose input already fits is the identity); the attention and keys follow the kept rows so a later stage still
/// has them (a merged row carries its representative's). Extra tokens of any stage are kept aside and returned.
/// With [`BudgetScope::Frame`] the chain runs on each unit alone with its share of the budget (see there).
pub(crate) fn prune_chain<B: Backend>(
    backend: &B,
    visual: VisualTokens,
    query: Option<QueryInput>,
    opts: &QaOptions,
) -> Result<Chained, QaError> {
    let total = visual.features.nrows();
    let k = opts.budget.resolve(total).map_err(pruning("budget"))?.k;
    let (query, space, source) = match query {
        Some(QueryInput { rows, space, source }) => (Some(rows), space, source),
        None => (None, None, String::new()),
    };
    if let Some(s) = &space {
        if s.nrows() != total {
            return Err(QaError::Config {
                path: "query space".into(),
                reason: format!("{} rows for {total} visual tokens", s.nrows()),
            });
        }
    }
    let query = query.map(|q| backend.upload_owned(q).map_err(pruning("query"))).transpose()?;
    let query = query.as_ref().map(|rows| ChainQuery { rows, source: &source });
    let units = visual.units.0;
    if opts.scope == BudgetScope::Global || units < 2 || opts.pruners.is_empty() {
        let tokens = ChainInput {
            features: visual.features,
            attention: visual.attention,
            keys: visual.keys,
            space,
            layout: visual.layout,
        };
        return chain_once(backend, tokens, query, opts, k);
    }
    if let Some(m) = opts.pruners.iter().find(|m| m.uses().contains(&Signal::FrameGrid)) {
        return Err(QaError::Unsupported {
            setting: format!("--budget-scope frame with {}", m.name()),
            reason: "the method compares frames, so it needs them together; use --budget-scope global".into(),
        });
    }
    let starts = visual.unit_starts();
    if starts.last() != Some(&total) {
        return Err(QaError::Config {
            path: "visual tokens".into(),
            reason: format!("{total} tokens are not the {units} units' {}", starts.last().unwrap_or(&0)),
        });
    }
    // One unit's grid: its own grid with one frame (and one view); flat units stay flat.
    let grids = visual.unit_grids();
    let layout = |u: usize| match grids.as_ref().map(|g| g[u]) {
        Some((height, width)) if height * width == starts[u + 1] - starts[u] => {
            Some(Layout::Grid { views: 1, frames: 1, height, width })
        }
        _ => None,
    };
    let rows = |m: &Array2<f32>, u: usize| m.slice(ndarray::s![starts[u]..starts[u + 1], ..]).to_owned();
    let mut parts = Vec::with_capacity(units);
    for u in 0..units {
        let share = k / units + usize::from(u < k % units);
        if share == 0 {
            continue;
        }
        let tokens = ChainInput {
            features: rows(&visual.features, u),
            attention: visual.attention.as_ref().map(|a| a[starts[u]..starts[u + 1]].to_vec()),
            keys: visual.keys.as_ref().map(|m| rows(m, u)),
            space: space.as_ref().map(|m| rows(m, u)),
            layout: layout(u),
        };
        let mut part = chain_once(backend, tokens, query, opts, share)?;
        part.origin.iter_mut().for_each(|o| *o += starts[u]);
        parts.push(part);
    }
    let mut stages: Vec<(String, usize)> = vec![("encoder".to_string(), total)];
    stages.extend(opts.pruners.iter().map(|m| (m.name().to_string(), 0)));
    let mut notes: Vec<String> =
        vec![format!("budget scope frame: {k} tokens as {units} shares of at most {}", k.div_ceil(units))];
    for part in &parts {
        for (stage, (_, n)) in stages.iter_mut().skip(1).zip(part.visual_tokens.iter().skip(1)) {
            stage.1 += n;
        }
        for note in &part.notes {
            if !notes.contains(note) {
                notes.push(note.clone());
            }
        }
    }
    let join = |m: Vec<ndarray::ArrayView2<'_, f32>>| {
        ndarray::concatenate(ndarray::Axis(0), &m)
            .map_err(|e| QaError::Config { path: "kept tokens".into(), reason: e.to_string() })
    };
    let extras: Vec<_> = parts.iter().filter_map(|p| p.extra.as_ref().map(|e| e.view())).collect();
    let dim = visual.features.ncols();
    let features = match parts.is_empty() {
        true => Array2::zeros((0, dim)),
        false => join(parts.iter().map(|p| p.features.view()).collect())?,
    };
    Ok(Chained {
        features,
        origin: parts.iter().flat_map(|p| p.origin.iter().copied()).collect(),
        extra: if extras.is_empty() { None } else { Some(join(extras)?) },
        notes,
        visual_tokens: stages,
    })
}

/// The tokens and signals one run of the chain starts from (host matrices, uploaded as the run needs them).
struct ChainInput {
    features: Array2<f32>,
    attention: Option<Vec<f32>>,
    keys: Option<Array2<f32>>,
    /// The tokens in the query's space ([`QueryInput::space`]).
    space: Option<Array2<f32>>,
    layout: Option<Layout>,
}

/// The uploaded question rows and how the record names them.
struct ChainQuery<'a, M> {
    rows: &'a M,
    source: &'a str,
}

// Two references: copied whatever `M` is (a derive would ask `M: Copy`).
impl<M> Clone for ChainQuery<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for ChainQuery<'_, M> {}

/// One run of the pruner chain over `input` keeping at most `k` tokens (see [`prune_chain`]).
fn chain_once<B: Backend>(
    backend: &B,
    input: ChainInput,
    query: Option<ChainQuery<'_, B::Matrix>>,
    opts: &QaOptions,
    k: usize,
) -> Result<Chained, QaError> {
    let total = input.features.nrows();
    let upload = |m: Array2<f32>, what: &'static str| backend.upload_owned(m).map_err(pruning(what));
    // Each host matrix is dropped once the backend holds its copy (a long video's features are the largest
    // allocation left after encoding; two copies of them would set the peak).
    let mut features = upload(input.features, "encoder output")?;
    let mut attention = input.attention;
    let mut keys = input.keys.map(|k| upload(k, "keys")).transpose()?;
    let mut space = input.space.map(|m| upload(m, "query space")).transpose()?;
    let mut layout = input.layout;
    let mut visual_tokens = vec![("encoder".to_string(), total)];
    let mut origin: Vec<usize> = (0..total).collect();
    let mut extras = Vec::new();
    let mut notes = Vec::new();
    for method in &opts.pruners {
        let name = method.name();
        let mut tokens = TokenSet::new(backend, features).map_err(pruning(name))?;
        if let Some(l) = layout {
            tokens = tokens.with_layout(l).map_err(pruning(name))?;
        }
        if let Some(a) = attention.take() {
            tokens = tokens.with_cls_attention(a).map_err(pruning(name))?;
        }
        if let Some(kk) = keys.take() {
            tokens = tokens.with_keys(backend, kk).map_err(pruning(name))?;
        }
        if let Some(s) = space.take() {
            tokens = tokens.with_query_space(backend, s).map_err(pruning(name))?;
        }
        if let Some(q) = query {
            let rows: Vec<usize> = (0..backend.shape(q.rows).0).collect();
            tokens = tokens
                .with_query(backend, backend.gather_rows(q.rows, &rows).map_err(pruning(name))?)
                .map_err(pruning(name))?;
        }
        // Methods that read relevance but not the query itself (MMR's `importance=relevance`) get each token's mean
        // cosine to the question's rows, in the query space when there is one. Query-reading methods (`query`,
        // `cdpruner`) compute their own from the query, each with its official sign and aggregation.
        let relevance_from_question = method.reads_relevance();
        if let (Some(q), true) = (query, relevance_from_question) {
            let against = tokens.query_space().unwrap_or(tokens.features());
            let r = tokensieve_pruners::methods::query::question_relevance(backend, against, q.rows)
                .map_err(pruning(name))?;
            tokens = tokens.with_relevance(r).map_err(pruning(name))?;
        }
        let s = prune(backend, method, &tokens, Budget::Keep(k)).map_err(pruning(name))?;
        notes.extend(s.notes.iter().map(|n| format!("{name}: {n}")));
        if let Some(q) = query.filter(|_| method.uses().contains(&Signal::Query)) {
            notes.push(format!("{name}: query = {}", q.source));
        } else if let Some(q) = query.filter(|_| relevance_from_question) {
            notes.push(format!("{name}: relevance = mean cosine to {}", q.source));
        }
        attention = tokens.cls_attention().map(|a| s.kept.iter().map(|&i| a[i]).collect());
        keys = tokens.keys().map(|m| backend.gather_rows(m, &s.kept)).transpose().map_err(pruning(name))?;
        space = tokens.query_space().map(|m| backend.gather_rows(m, &s.kept)).transpose().map_err(pruning(name))?;
        features = match s.merged {
            Some(m) => m,
            None => backend.gather_rows(tokens.features(), &s.kept).map_err(pruning(name))?,
        };
        if let Some(e) = s.extra {
            extras.push(backend.download(&e).map_err(pruning(name))?);
        }
        // Once a stage has chosen, the kept rows no longer form a grid: later stages see a flat set, unless the
        // stage was the identity.
        if s.kept.len() != origin.len() {
            layout = None;
        }
        origin = s.kept.iter().map(|&i| origin[i]).collect();
        visual_tokens.push((name.to_string(), s.kept.len()));
    }
    let extra = match extras.len() {
        0 => None,
        _ => Some(
            ndarray::concatenate(ndarray::Axis(0), &extras.iter().map(|e| e.view()).collect::<Vec<_>>())
                .map_err(|e| QaError::Config { path: "extra tokens".into(), reason: e.to_string() })?,
        ),
    };
    Ok(Chained {
        features: backend.download(&features).map_err(pruning("kept tokens"))?,
        origin,
        extra,
        notes,
        visual_tokens,
    })
}

/// The question's prompt with one `placeholder` for the visual tokens: the chat template when the checkpoint has
/// one (a system turn, then the user turn `{placeholder}\n{question}`), else LLaVA-1.5's
/// `USER: {placeholder}\n{question} ASSISTANT:` with the system text in front.
pub(crate) fn question_prompt(
    template: Option<&ChatTemplate>,
    system: Option<&str>,
    placeholder: &str,
    question: &str,
) -> Result<String, QaError> {
    match template {
        Some(t) => {
            let mut turns = Vec::new();
            if let Some(s) = system {
                turns.push(serde_json::json!({"role": "system", "content": s}));
            }
            turns.push(serde_json::json!({"role": "user", "content": format!("{placeholder}\n{question}")}));
            t.render(&serde_json::Value::Array(turns), true)
                .map_err(|e| QaError::Config { path: "chat_template".into(), reason: e.to_string() })
        }
        None => Ok(match system {
            Some(s) => format!("{s} USER: {placeholder}\n{question} ASSISTANT:"),
            None => format!("USER: {placeholder}\n{question} ASSISTANT:"),
        }),
    }
}

/// The prompt of an unpruned inspection prefill (`tokensieve forward`): with a chat template and `raw = false` one
/// user turn (a placeholder is added in front when the prompt has none), otherwise the prompt verbatim; each
/// placeholder then expands as transformers' processor expands it (see [`super::prompt::expand_placeholders`]).
pub(crate) fn inspection_prompt(
    template: Option<&ChatTemplate>,
    prompt: &str,
    raw: bool,
    placeholder: &str,
    visual: usize,
    units: (usize, usize),
) -> Result<String, QaError> {
    let text = match (template, raw) {
        (Some(t), false) => {
            let content =
                if prompt.contains(placeholder) { prompt.to_string() } else { format!("{placeholder}\n{prompt}") };
            t.render(&serde_json::json!([{"role": "user", "content": content}]), true)
                .map_err(|e| QaError::Config { path: "chat_template".into(), reason: e.to_string() })?
        }
        _ => prompt.to_string(),
    };
    crate::pipeline::prompt::expand_placeholders(&text, placeholder, visual, units.0, units.1).map_err(QaError::Prompt)
}

/// Generates from the first picked token `first` under `opts` (budget, stop strings); see
/// [`tokensieve_models::sampling::generate_text`].
pub(crate) fn generate(
    tokenizer: &TextTokenizer,
    opts: &QaOptions,
    first: i64,
    step: &mut dyn FnMut(i64) -> Result<i64, QaError>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated, QaError> {
    generate_text(tokenizer, opts.max_new_tokens, &opts.stop, first, step, on_text)
}

/// Stage clock of one answer: laps name stages; the time to first token adds the laps up to the first pick.
pub(crate) struct StageClock {
    clock: std::time::Instant,
    /// Milliseconds per stage.
    pub stage_ms: BTreeMap<String, f64>,
}

impl StageClock {
    /// Starts now.
    pub fn start() -> Self {
        StageClock { clock: std::time::Instant::now(), stage_ms: BTreeMap::new() }
    }

    /// Ends stage `name`, returning its milliseconds.
    pub fn lap(&mut self, name: &str) -> f64 {
        let ms = self.clock.elapsed().as_secs_f64() * 1e3;
        self.stage_ms.insert(name.to_string(), ms);
        self.clock = std::time::Instant::now();
        ms
    }
}

/// Everything an engine measured, turned into a [`QaRecord`].
pub(crate) struct Measured<'a> {
    /// Presentation times of the frames answered about.
    pub frames: &'a [f64],
    /// Milliseconds the engine waited for a streamed video's frames (inside the `encode` lap, not in TTFT).
    pub decode_ms: f64,
    /// Tokens per pruning stage.
    pub visual_tokens: Vec<(String, usize)>,
    /// Encoder index of each kept row.
    pub kept: Vec<usize>,
    /// The methods' notes.
    pub notes: Vec<String>,
    /// Prompt tokens.
    pub prefill_tokens: usize,
    /// Tokens each decoder layer saw.
    pub tokens_per_layer: Vec<usize>,
    /// The stage clock; its `encode` lap includes preprocessing.
    pub clock: StageClock,
    /// Milliseconds spent turning frames into pixels (inside the `encode` lap).
    pub preprocess_ms: f64,
    /// Time to first token.
    pub ttft_ms: f64,
    /// KV-cache bytes.
    pub kv_bytes: usize,
    /// The decoder's shape, for the FLOPs.
    pub shape: DecoderShape,
    /// What generation did.
    pub generated: &'a Generated,
    /// The prefill's last-position logits, when kept.
    pub first_logits: Option<Vec<f32>>,
}

impl Measured<'_> {
    /// The record, with preprocessing split out of the `encode` lap.
    pub fn record(self) -> QaRecord {
        let mut stage_ms = self.clock.stage_ms;
        let encode_total = stage_ms.get("encode").copied().unwrap_or(0.0);
        stage_ms.insert("preprocess".into(), self.preprocess_ms);
        stage_ms.insert("encode".into(), (encode_total - self.preprocess_ms - self.decode_ms).max(0.0));
        if self.decode_ms > 0.0 {
            stage_ms.insert("decode".into(), self.decode_ms);
        }
        let (fastv, swiglu) = prefill_macs(&self.shape, &self.tokens_per_layer);
        QaRecord {
            frames: self.frames.to_vec(),
            visual_tokens: self.visual_tokens,
            kept: self.kept,
            notes: self.notes,
            prefill_tokens: self.prefill_tokens,
            tokens_per_layer: self.tokens_per_layer,
            stage_ms,
            ttft_ms: self.ttft_ms,
            kv_bytes: self.kv_bytes,
            llm_macs_fastv: fastv,
            llm_macs_swiglu: swiglu,
            generated_tokens: self.generated.tokens,
            decode_steps: self.generated.steps,
            first_logits: self.first_logits,
        }
    }
}

/// Preprocesses frames to the tower's square input `side x side`, in parallel (six 1600x900 cameras take most of
/// the time to first token otherwise), checking each view's size.
pub(crate) fn square_views(
    processor: &tokensieve_video::preprocess::ImageProcessor,
    frames: &[tokensieve_video::Frame],
    side: usize,
) -> Result<Vec<tokensieve_video::preprocess::Pixels>, QaError> {
    use rayon::prelude::*;
    let views: Vec<_> =
        frames.par_iter().map(|f| processor.preprocess(&f.rgb, f.width as usize, f.height as usize)).collect();
    match views.iter().find(|p| (p.width, p.height) != (side, side)) {
        Some(p) => Err(QaError::InputSize { got: p.width, got_h: p.height, side }),
        None => Ok(views),
    }
}

/// [`square_views`] as one `[F, 3, S, S]` row-major buffer.
pub(crate) fn square_pixels(
    processor: &tokensieve_video::preprocess::ImageProcessor,
    frames: &[tokensieve_video::Frame],
    side: usize,
) -> Result<Vec<f32>, QaError> {
    Ok(square_views(processor, frames, side)?.into_iter().flat_map(|p| p.data).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_positions_keep_gaps_and_newlines_their_places() {
        // LLaVA: 2 frames x 4 tokens, kept 1, 2 and 6; prompt = 3 text tokens, the 3 kept, 2 text tokens.
        let (offsets, unpruned) = span_offsets(&[1, 2, 6], (2, 4), Newline::None, 0);
        assert_eq!((offsets.as_slice(), unpruned), ([1, 2, 6].as_slice(), 8));
        let original = prompt_positions(Positions::Original, 8, 3, &offsets, unpruned);
        assert_eq!(original, vec![0, 1, 2, 4, 5, 9, 11, 12], "text after the span keeps its unpruned ids");
        assert_eq!(prompt_positions(Positions::Contiguous, 8, 3, &offsets, unpruned), (0..8).collect::<Vec<i64>>());
        // OneVision video: one newline after all frames sits after the last unpruned token.
        assert_eq!(span_offsets(&[0, 5], (2, 4), Newline::End, 0), (vec![0, 5, 8], 9));
        // Several images: a newline after each image's survivors, even when none survived.
        assert_eq!(span_offsets(&[1, 2], (2, 4), Newline::PerUnit, 0), (vec![1, 2, 4, 9], 10));
        assert_eq!(span_offsets(&[5], (2, 4), Newline::PerUnit, 0), (vec![4, 6, 9], 10));
        // PruMerge+'s extra token follows the last visual token, before a trailing newline.
        assert_eq!(span_offsets(&[0, 5], (2, 4), Newline::End, 1), (vec![0, 5, 8, 9], 10));
        assert_eq!(span_offsets(&[1], (1, 4), Newline::None, 2), (vec![1, 4, 5], 6));
    }
}
