//! The `Pruner` trait and the one entry point that applies the common conventions (ALGORITHMS.md §1.1, §1.7):
//! budget resolution, `N = 0` gives an empty result, `k >= N` is the identity, and required signals are checked
//! before a method runs. Methods therefore only see `1 <= k < N`.

use crate::backend::Backend;
use crate::budget::Budget;
use crate::error::{PruneError, Result, Signal};
use crate::selection::Selection;
use crate::token_set::TokenSet;
use rayon::prelude::*;

/// A visual-token selection or merging method.
pub trait Pruner {
    /// The method's command-line name.
    fn name(&self) -> &'static str;

    /// Side signals the method cannot run without.
    fn requires(&self) -> &'static [Signal] {
        &[]
    }

    /// Side signals the method reads when they are given (a superset of [`Pruner::requires`]): a pipeline computes
    /// these, so an optional signal such as ToMe's keys or ToDRE's CLS pivot is used as the official code uses it.
    fn uses(&self) -> &'static [Signal] {
        self.requires()
    }

    /// Whether the method returns exactly `k` tokens (adaptive methods return at most `k`).
    fn exact_budget(&self) -> bool {
        true
    }

    /// Whether the method fixes its own count (a rate of its own, such as EVS's `rate=<q>`), so it runs even when the
    /// budget keeps every token (the budget is then only its upper bound); other methods are the identity there.
    fn fixed_count(&self) -> bool {
        false
    }

    /// Synthetic rows with no original index ([`crate::Selection::extra`]) the method appends when it prunes
    /// (`k < N`): PruMerge+'s extra token. Serving code counts them before encoding.
    fn synthetic_rows(&self) -> usize {
        0
    }

    /// Selects from `tokens` with `1 <= k < N`. Call [`prune`] instead: it handles the edge cases.
    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>>;
}

fn has_signal<M>(tokens: &TokenSet<M>, signal: Signal) -> bool {
    match signal {
        Signal::ClsAttention => tokens.cls_attention().is_some(),
        Signal::Keys => tokens.keys().is_some(),
        Signal::Importance => tokens.importance().is_some(),
        Signal::Relevance => tokens.relevance().is_some(),
        Signal::Query => tokens.query().is_some(),
        Signal::FrameGrid => tokens.layout().token_count().is_some(),
    }
}

/// Runs `pruner` on one sample under `budget`.
pub fn prune<B: Backend, P: Pruner>(
    backend: &B,
    pruner: &P,
    tokens: &TokenSet<B::Matrix>,
    budget: Budget,
) -> Result<Selection<B::Matrix>> {
    let resolved = budget.resolve(tokens.len())?;
    let n = tokens.len();
    if n == 0 {
        return Ok(Selection::pruned(Vec::new(), 0));
    }
    if let Some(&signal) = pruner.requires().iter().find(|&&s| !has_signal(tokens, s)) {
        return Err(PruneError::MissingSignal { method: pruner.name(), signal });
    }
    let mut selection = if resolved.k >= n && !pruner.fixed_count() {
        Selection::pruned((0..n).collect(), n)
    } else {
        pruner.select(backend, tokens, resolved.k.min(n))?
    };
    selection.requested = resolved.k;
    selection.clamped = resolved.clamped;
    if resolved.clamped {
        selection.notes.push(format!("budget {budget} exceeds the {n} tokens: all kept"));
    }
    debug_assert!(selection.kept.windows(2).all(|w| w[0] < w[1]), "{}: kept not ascending", pruner.name());
    debug_assert!(selection.kept.len() <= resolved.k.max(1), "{}: over budget", pruner.name());
    Ok(selection)
}

/// Runs `pruner` on every sample of a batch in parallel; results are ragged and independent, so one bad sample
/// does not fail the others.
pub fn prune_batch<B, P>(
    backend: &B,
    pruner: &P,
    batch: &[TokenSet<B::Matrix>],
    budget: Budget,
) -> Vec<Result<Selection<B::Matrix>>>
where
    B: Backend,
    B::Matrix: Sync,
    P: Pruner + Sync,
{
    batch.par_iter().map(|tokens| prune(backend, pruner, tokens, budget)).collect()
}
