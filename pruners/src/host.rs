//! Running a method on host arrays: the one place that turns owned `[N, D]` features and optional signals into a
//! [`TokenSet`] on a backend, prunes, and brings the output rows back. `tokensieve prune` and the Python package
//! both go through it, so the same inputs give the same indices from either front end.

use crate::backend::Backend;
use crate::budget::Budget;
use crate::error::Result;
use crate::layout::Layout;
use crate::methods::Method;
use crate::pruner::{prune, Pruner};
use crate::token_set::TokenSet;
use ndarray::Array2;
use std::time::Instant;

/// One sample's tokens and signals on the host, before they go to a backend.
#[derive(Debug, Clone)]
pub struct HostInputs {
    /// Visual tokens `[N, D]`.
    pub features: Array2<f32>,
    /// ViT keys `[N, Dk]` (averaged over heads).
    pub keys: Option<Array2<f32>>,
    /// Query embeddings `[T, D]` in the features' space.
    pub query: Option<Array2<f32>>,
    /// CLS -> patch attention `[N]`.
    pub cls_attention: Option<Vec<f32>>,
    /// Per-token importance `[N]`.
    pub importance: Option<Vec<f32>>,
    /// Per-token query relevance `[N]`.
    pub relevance: Option<Vec<f32>>,
    /// Where the tokens sit.
    pub layout: Layout,
}

impl HostInputs {
    /// Features alone, flat layout, no signals.
    pub fn new(features: Array2<f32>) -> Self {
        HostInputs {
            features,
            keys: None,
            query: None,
            cls_attention: None,
            importance: None,
            relevance: None,
            layout: Layout::Flat,
        }
    }
}

/// What a run produced, on the host.
#[derive(Debug, Clone)]
pub struct HostOutcome {
    /// Kept indices, ascending.
    pub kept: Vec<usize>,
    /// Input tokens each kept token stands for.
    pub sizes: Vec<usize>,
    /// True when the method merged (`output` holds merged rows, not copies of the kept ones).
    pub merged: bool,
    /// The output tokens `[kept, D]`: merged rows where the method merges, else the kept rows.
    pub output: Array2<f32>,
    /// Synthetic rows placed after the kept ones (PruMerge+'s extra token), `[E, D]`.
    pub extra: Option<Array2<f32>>,
    /// The resolved keep count the method was asked for.
    pub requested: usize,
    /// True when the requested count exceeded `N` and was lowered to `N`.
    pub clamped: bool,
    /// Facts the method recorded (fallbacks, adaptive counts).
    pub notes: Vec<String>,
    /// Time spent in the selector itself, in milliseconds (token-set construction excluded).
    pub elapsed_ms: f64,
}

/// Builds the token set of `inputs` on `backend`, runs `method` under `budget` and downloads the result.
pub fn run_on_host<B: Backend>(
    backend: &B,
    method: &Method,
    inputs: HostInputs,
    budget: Budget,
) -> Result<HostOutcome> {
    let mut tokens = TokenSet::new(backend, backend.upload(inputs.features.view())?)?.with_layout(inputs.layout)?;
    if let Some(k) = inputs.keys {
        tokens = tokens.with_keys(backend, backend.upload(k.view())?)?;
    }
    if let Some(q) = inputs.query {
        tokens = tokens.with_query(backend, backend.upload(q.view())?)?;
    }
    if let Some(c) = inputs.cls_attention {
        tokens = tokens.with_cls_attention(c)?;
    }
    if let Some(i) = inputs.importance {
        tokens = tokens.with_importance(i)?;
    }
    if let Some(r) = inputs.relevance {
        tokens = tokens.with_relevance(r)?;
    }
    let start = Instant::now();
    let s = prune(backend, method, &tokens, budget)?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let output = match &s.merged {
        Some(m) => backend.download(m)?,
        None => backend.download(&backend.gather_rows(tokens.features(), &s.kept)?)?,
    };
    let extra = s.extra.as_ref().map(|e| backend.download(e)).transpose()?;
    Ok(HostOutcome {
        merged: s.merged.is_some(),
        kept: s.kept,
        sizes: s.sizes,
        output,
        extra,
        requested: s.requested,
        clamped: s.clamped,
        notes: s.notes,
        elapsed_ms,
    })
}

/// How many rows `method` hands the decoder for `n` tokens under `budget`, known before encoding (what a serving
/// engine sizes its placeholders with).
///
/// Exact-budget methods give `min(k, N)` rows, plus their synthetic rows. Adaptive methods (PruMerge+, DyCoke,
/// HoliTom, ...; [`Pruner::exact_budget`] is false) decide from the data and keep at most that many: their count is
/// returned as [`RetainedCount::AtMost`], never as if it were exact.
pub fn retained_count(method: &Method, n: usize, budget: Budget) -> Result<RetainedCount> {
    let k = budget.resolve(n)?.k;
    let extra = if k < n { method.synthetic_rows() } else { 0 };
    if method.exact_budget() {
        Ok(RetainedCount::Exact(k + extra))
    } else {
        Ok(RetainedCount::AtMost(k + extra))
    }
}

/// A kept-row count known before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedCount {
    /// Exactly this many rows.
    Exact(usize),
    /// The method is adaptive: at most this many rows.
    AtMost(usize),
}
