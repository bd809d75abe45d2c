//! Greedy k-center (farthest-first traversal) from ToDRE's pivot; the engine is shared with DivPrune.
//!
//! Each step keeps the token farthest (cosine distance) from its nearest kept token — Gonzalez's 2-approximation
//! of k-center, which ToDRE v1 describes as "greedy k-center":
//!
//! ```text
//! m = 1 − X̂ x̂_p;  m[p] = −∞
//! repeat k − 1 times:  c = argmax m;  S ∪= {c};  m = min(m, 1 − X̂ x̂_c);  m[c] = −∞
//! ```
//!
//! Complexity: `O(k·N·D)` time, `O(N)` extra memory (a running minimum instead of DivPrune's reference `N x N`
//! matrix; the picks are identical). Source: ToDRE v1 (arXiv 2505.18757 v1) with the Gonzalez rule inferred
//! (ALGORITHMS.md §3.1.2, \[secondary\]).

use super::todre::PivotRule;
use crate::backend::Backend;
use crate::columns::ColumnCache;
use crate::error::{PruneError, Result};
use crate::params::Params;
use crate::primitives::{argmax, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// Farthest-first traversal of row-normalised `x` from `first`, returning `k` indices in pick order.
pub(crate) fn farthest_first<B: Backend>(backend: &B, x: &B::Matrix, first: usize, k: usize) -> Result<Vec<usize>> {
    let mut columns = ColumnCache::new(backend, x);
    let mut nearest: Vec<f32> = columns.column(first, |_| Vec::new())?.iter().map(|c| 1.0 - c).collect();
    nearest[first] = f32::NEG_INFINITY;
    let mut kept = Vec::with_capacity(k);
    kept.push(first);
    while kept.len() < k {
        let c = argmax(&nearest).ok_or(PruneError::Backend("empty distance vector".into()))?;
        kept.push(c);
        nearest[c] = f32::NEG_INFINITY;
        // The next picks are likely among the tokens currently farthest from the kept set.
        let sims = columns.column(c, |m| top_k(&nearest, m))?;
        nearest.iter_mut().zip(sims).for_each(|(d, s)| *d = d.min(1.0 - s));
    }
    Ok(kept)
}

/// Greedy k-center with a CLS (or seeded random) pivot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KCenter {
    /// First-token rule.
    pub pivot: PivotRule,
}

impl KCenter {
    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(KCenter { pivot: PivotRule::from_params(p)? })
    }
}

impl Pruner for KCenter {
    fn name(&self) -> &'static str {
        "kcenter"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (pivot, note) = self.pivot.choose(tokens, self.name())?;
        let x = backend.normalize_rows(tokens.features())?;
        Ok(Selection::from_unsorted(farthest_first(backend, &x, pivot, k)?, k).with_note(note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::todre::Pivot;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn second_pick_is_the_farthest_and_third_maximises_the_minimum() {
        // Angles 0°, 10°, 90°, 180°: from pivot 0 the farthest is 180°; then 90° (min distance 1) beats 10°.
        let deg = |a: f32| [a.to_radians().cos(), a.to_radians().sin()];
        let x =
            ndarray::Array2::from_shape_vec((4, 2), [0.0, 10.0, 90.0, 180.0].iter().flat_map(|&a| deg(a)).collect())
                .unwrap();
        let t = TokenSet::from_array(x).unwrap().with_cls_attention(vec![1.0, 0.0, 0.0, 0.0]).unwrap();
        let kc = KCenter { pivot: PivotRule { pivot: Pivot::Cls, seed: 0, thumbnail: 0 } };
        assert_eq!(prune(&CpuBackend, &kc, &t, Budget::Keep(2)).unwrap().kept, vec![0, 3]);
        assert_eq!(prune(&CpuBackend, &kc, &t, Budget::Keep(3)).unwrap().kept, vec![0, 2, 3]);
        let _ = array![[0.0f32]];
    }
}
