//! The output of every selector (ALGORITHMS.md §1.4).

use crate::backend::{Backend, Weighted};
use crate::error::Result;

/// What a selector kept for one sample.
#[derive(Debug, Clone)]
pub struct Selection<M> {
    /// Indices into the input tokens, ascending and unique: the positions the decoder keeps.
    pub kept: Vec<usize>,
    /// For merging methods: the output features `[kept.len(), D]`, aligned with `kept`. `None` means the kept
    /// tokens are the input rows unchanged.
    pub merged: Option<M>,
    /// How many input tokens each kept token stands for (all 1 for pure pruning).
    pub sizes: Vec<usize>,
    /// Synthetic tokens with no original index (PruMerge+'s extra token), placed after the kept ones.
    pub extra: Option<M>,
    /// The resolved keep count `k` the method was asked for.
    pub requested: usize,
    /// True when the requested count exceeded `N` and was lowered to `N`.
    pub clamped: bool,
    /// Facts worth recording about this run (fallbacks taken, adaptive counts).
    pub notes: Vec<String>,
}

impl<M> Selection<M> {
    /// A pure pruning result: `kept` must already be ascending.
    pub fn pruned(kept: Vec<usize>, requested: usize) -> Self {
        let sizes = vec![1; kept.len()];
        Selection { kept, merged: None, sizes, extra: None, requested, clamped: false, notes: Vec::new() }
    }

    /// A pruning result from indices in any order (sorted here).
    pub fn from_unsorted(mut kept: Vec<usize>, requested: usize) -> Self {
        kept.sort_unstable();
        Self::pruned(kept, requested)
    }

    /// A merging result from `(representative index, weighted source rows)` groups in any order: the groups are
    /// sorted by representative, each becomes one output row (`Σ w·x`, divided by `Σ w` when `normalize`), and a
    /// token's size is its number of source rows.
    pub fn merged<B: Backend<Matrix = M>>(
        backend: &B,
        features: &M,
        mut groups: Vec<(usize, Vec<Weighted>)>,
        normalize: bool,
        requested: usize,
    ) -> Result<Self> {
        groups.sort_by_key(|(rep, _)| *rep);
        let (kept, members): (Vec<usize>, Vec<Vec<Weighted>>) = groups.into_iter().unzip();
        let mut s = Self::pruned(kept, requested);
        s.merged = Some(backend.combine_rows(features, &members, normalize)?);
        s.sizes = members.iter().map(Vec::len).collect();
        Ok(s)
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Number of kept tokens (synthetic `extra` rows not included).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}
