//! DivPrune: max-min diversity (Gonzalez farthest-first) on the post-projector tokens.
//!
//! The first pick is the token whose nearest neighbour is farthest away; every further pick maximises the distance
//! to its nearest kept token:
//!
//! ```text
//! dist = 1 − cos;   first = argmax_i min_{j≠i} dist[i][j]
//! repeat:  j* = argmax_{j∉S} min_{s∈S} dist[s][j]
//! ```
//!
//! Complexity: the first pick needs every nearest neighbour, `O(N²·D)` time, computed in row blocks so memory stays
//! `O(256·N)`; the greedy phase keeps a running minimum, `O(k·N·D)` time and `O(N)` memory (the reference recomputes
//! the minimum over all kept rows of an `N x N` matrix each step; the picks are identical). Exact duplicates have
//! nearest-neighbour distance 0 and are never the first pick unless every token has a duplicate.
//! Source: Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models", CVPR 2025
//! (arXiv 2503.02175), vbdi/divprune `llava_arch.py::DivPrune`.

use super::kcenter::farthest_first;
use crate::backend::Backend;
use crate::error::{PruneError, Result};
use crate::params::Params;
use crate::primitives::argmin;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// DivPrune (no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DivPrune;

impl DivPrune {
    /// Builds from parameters (there are none).
    pub fn from_params(_: &Params) -> Result<Self> {
        Ok(DivPrune)
    }
}

impl Pruner for DivPrune {
    fn name(&self) -> &'static str {
        "divprune"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let x = backend.normalize_rows(tokens.features())?;
        // The farthest nearest neighbour is the one with the smallest nearest-neighbour cosine.
        let nearest = backend.nearest_neighbour_dots(&x)?;
        let first = argmin(&nearest).ok_or(PruneError::Backend("no tokens".into()))?;
        Ok(Selection::from_unsorted(farthest_first(backend, &x, first, k)?, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, TokenSet};
    use ndarray::array;

    #[test]
    fn duplicates_are_never_the_first_pick_and_the_lonely_token_is() {
        // Tokens 0 and 1 are duplicates; 2 and 3 are close; 4 is alone.
        let x = array![[1.0f32, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let t = TokenSet::from_array(x).unwrap();
        let s = prune(&CpuBackend, &DivPrune, &t, Budget::Keep(1)).unwrap();
        assert_eq!(s.kept, vec![4]);
        let s = prune(&CpuBackend, &DivPrune, &t, Budget::Keep(3)).unwrap();
        assert_eq!(s.kept.len(), 3);
        assert!(!(s.kept.contains(&0) && s.kept.contains(&1)), "kept both duplicates: {:?}", s.kept);
    }
}
