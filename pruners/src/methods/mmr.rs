//! IDPruner: maximal marginal relevance over importance and diversity.
//!
//! Each pick balances how important a token is against how similar it is to its most similar kept token:
//!
//! ```text
//! imp = minmax(s);  maxsim = −2
//! v* = argmax_{v∉S} [ λ·imp(v) − (1−λ)·max_{u∈S} cos(v, u) ]     (first pick: argmax imp)
//! ```
//!
//! `parallel_k > 1` takes that many top scores per step (the reference's batched approximation).
//! Complexity: `O(k·N·D)` time and `O(N)` memory — one column `X̂ x̂_b` per pick instead of the reference's
//! `N x N` cosine matrix, with identical picks. Defaults: `λ = 0.5`, `parallel_k = 1`. Importance is any per-token
//! score (the paper's trained VisionSelector scorer is not available); see [`super::importance`] for the sources.
//! Constant importance makes index 0 the first pick and the rest pure diversity; `λ = 1` is top-k importance.
//! Source: Tan et al., "IDPruner", arXiv 2602.13315; Tencent/AngelSlim `token_compressor/algorithm/idpruner.py`.

use super::importance::{importance, SOURCES};
use crate::backend::Backend;
use crate::columns::ColumnCache;
use crate::error::Result;
use crate::params::{ParamSpec, Params};
use crate::primitives::{min_max, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// IDPruner's MMR selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Mmr {
    /// Weight of importance against diversity, in `[0, 1]`.
    pub lambda: f32,
    /// Tokens picked per step.
    pub parallel_k: usize,
    /// Importance source (one of [`SOURCES`]).
    pub importance: &'static str,
}

impl Mmr {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 3] = [
        ParamSpec { name: "lambda", default: "0.5", help: "weight of importance vs diversity, in [0, 1]" },
        ParamSpec { name: "parallel_k", default: "1", help: "tokens picked per greedy step" },
        ParamSpec { name: "importance", default: "auto", help: "auto | cls | norm | relevance | external | uniform" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(Mmr {
            lambda: p.float_in("lambda", 0.0, 1.0)? as f32,
            parallel_k: p.int_at_least("parallel_k", 1)?,
            importance: p.choice("importance", &SOURCES)?,
        })
    }
}

impl Pruner for Mmr {
    fn name(&self) -> &'static str {
        "mmr"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (scores, source) = importance(backend, tokens, self.importance, self.name())?;
        let imp = min_max(&scores);
        let x = backend.normalize_rows(tokens.features())?;
        let mut columns = ColumnCache::new(backend, &x);
        let n = tokens.len();
        let mut max_sim = vec![-2.0f32; n];
        let mut taken = vec![false; n];
        let mut kept = Vec::with_capacity(k);
        while kept.len() < k {
            let score: Vec<f32> = (0..n)
                .map(|i| match (taken[i], kept.is_empty()) {
                    (true, _) => f32::NEG_INFINITY,
                    (false, true) => imp[i],
                    (false, false) => self.lambda * imp[i] - (1.0 - self.lambda) * max_sim[i],
                })
                .collect();
            let step = self.parallel_k.min(k - kept.len());
            let picks = top_k(&score, step);
            for &b in &picks {
                taken[b] = true;
                kept.push(b);
            }
            for &b in &picks {
                // The next picks are likely among the current best scores.
                let guess = |m: usize| top_k(&score, m + step).into_iter().filter(|&i| !taken[i]).collect();
                let sims = columns.column(b, guess)?;
                max_sim.iter_mut().zip(sims).for_each(|(m, s)| *m = m.max(*s));
            }
        }
        Ok(Selection::from_unsorted(kept, k).with_note(format!("importance: {source}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    fn mmr(lambda: f32) -> Mmr {
        Mmr { lambda, parallel_k: 1, importance: "external" }
    }

    #[test]
    fn lambda_one_is_top_k_importance_and_half_prefers_diversity() {
        // 0 and 1 are near-duplicates with the highest importance; 2 is different and less important.
        let x = array![[1.0f32, 0.0], [0.999, 0.04], [0.0, 1.0]];
        let t = TokenSet::from_array(x).unwrap().with_importance(vec![1.0, 0.9, 0.5]).unwrap();
        assert_eq!(prune(&CpuBackend, &mmr(1.0), &t, Budget::Keep(2)).unwrap().kept, vec![0, 1]);
        // λ=0.5: token 1 scores 0.5·0.8 − 0.5·0.999 < 0; token 2 scores 0.5·0 − 0.5·0 = 0.
        assert_eq!(prune(&CpuBackend, &mmr(0.5), &t, Budget::Keep(2)).unwrap().kept, vec![0, 2]);
    }

    #[test]
    fn constant_importance_starts_at_index_zero() {
        let x = array![[0.0f32, 1.0], [1.0, 0.0], [0.7, 0.7]];
        let t = TokenSet::from_array(x).unwrap().with_importance(vec![3.0, 3.0, 3.0]).unwrap();
        let s = prune(&CpuBackend, &mmr(0.5), &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.kept, vec![0, 1]);
    }
}
