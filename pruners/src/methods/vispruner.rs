//! VisPruner: a few important tokens by CLS attention, then diverse tokens by iterative near-duplicate removal.
//!
//! ```text
//! T_imp = int(k·r);  ranked = argsort(a, descending);  important = ranked[:T_imp];  residual = ranked[T_imp:]
//! while k − T_imp > 0 and |residual| > k − T_imp:
//!     r' = min(8, |residual| − (k − T_imp));  A = residual[0::2], B = residual[1::2]
//!     s_a = max_b cos(a, b);  order = argsort(s_A, descending)
//!     residual = [A[order[r':]]..., B...]      (survivors of A by descending redundancy, then all of B)
//! kept = important ∪ residual  (a mask: the decoder sees them in index order)
//! ```
//!
//! The residual is rebuilt after every round exactly as the official loop does, so the even/odd split of the next
//! round runs over that order, not over attention rank. Complexity: each round `O(|A|·|B|·D)`, about `(N − k)/8`
//! rounds; the loop is kept because the round size is part of the method. Default `important_ratio r = 0.5`.
//!
//! Signals the pipeline must give for the official behaviour: `a` = the CLS row (patch columns) of the attention
//! probabilities of the vision tower's select layer (−2 for LLaVA-1.5), **averaged over heads**; features = the
//! hidden states of that layer, patch rows, **before the projector** (the official code compares those and applies
//! the mask after `mm_projector`). With post-projector features the cosines, hence the picks, differ.
//!
//! Deviations from the official code:
//! - Ties: `torch.argsort` is unstable; here equal attention or equal redundancy order by lower index / earlier
//!   residual position \[project\].
//! - The official loop raises a shape error when `|residual|` is odd with more than one A survivor, or when `r'`
//!   exceeds `|A|` (its `expand(-1, R // 2 − r)`); both happen only off its LLaVA settings. Here every survivor of
//!   `A` is kept in that order (and all of `A` is dropped when `r' ≥ |A|`) \[project\]. Norms have a `1e-8` guard.
//!
//! Proof: `tests/official_vispruner.rs` against the transcription `tests/official/vispruner/make_vispruner.py`.
//! Source: Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in VLMs"
//! (VisPruner), ICCV 2025 (arXiv 2412.01818), Theia-4869/VisPruner `llava/model/llava_arch.py`
//! `LlavaMetaForCausalLM::encode_images`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::top_k;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// VisPruner.
#[derive(Debug, Clone, PartialEq)]
pub struct VisPruner {
    /// Share of the budget taken by CLS attention.
    pub important_ratio: f64,
}

impl VisPruner {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 1] =
        [ParamSpec { name: "important_ratio", default: "0.5", help: "share of the budget kept by CLS attention" }];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(VisPruner { important_ratio: p.float_in("important_ratio", 0.0, 1.0)? })
    }
}

impl Pruner for VisPruner {
    fn name(&self) -> &'static str {
        "vispruner"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::ClsAttention]
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let attention = tokens.require_cls_attention(self.name())?;
        // Python's int(T * r): truncation of the f64 product.
        let important_count = ((k as f64 * self.important_ratio) as usize).min(k);
        let diverse_count = k - important_count;
        let ranked = top_k(attention, tokens.len());
        let (important, residual) = ranked.split_at(important_count);
        let mut residual = residual.to_vec();
        let x = backend.normalize_rows(tokens.features())?;
        // `diverse_count > 0` guard as in the official loop: with no diverse budget the residual is not used.
        while diverse_count > 0 && residual.len() > diverse_count {
            let drop = 8.min(residual.len() - diverse_count);
            let a: Vec<usize> = residual.iter().step_by(2).copied().collect();
            let b: Vec<usize> = residual.iter().skip(1).step_by(2).copied().collect();
            // |residual| > diverse_count >= 1, so B has at least one token.
            let sims = backend.matmul_t(&backend.gather_rows(&x, &a)?, &backend.gather_rows(&x, &b)?)?;
            let redundancy: Vec<f32> =
                sims.chunks(b.len()).map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect();
            // Descending redundancy (ties: earlier position first); the first `drop` go, the rest keep this order.
            let order = top_k(&redundancy, a.len());
            residual = order.iter().skip(drop).map(|&p| a[p]).chain(b).collect();
        }
        let kept: Vec<usize> = match diverse_count {
            0 => important.to_vec(),
            _ => important.iter().chain(&residual).copied().collect(),
        };
        Ok(Selection::from_unsorted(kept, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn removes_near_duplicates_from_the_residual() {
        // k = 4 with ratio 0.25: one important token (0); residual 1, 2, 3, 4 must lose one token.
        // A = [1, 3], B = [2, 4]; token 1 nearly duplicates 2 (cos ≈ 1) while 3's best match is 4 (≈ 0.71).
        let x = array![[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.01], [0.0, 0.0, 1.0], [0.7, 0.0, 0.7]];
        let t = TokenSet::from_array(x).unwrap().with_cls_attention(vec![0.5, 0.4, 0.3, 0.2, 0.1]).unwrap();
        let s = prune(&CpuBackend, &VisPruner { important_ratio: 0.25 }, &t, Budget::Keep(4)).unwrap();
        assert_eq!(s.kept, vec![0, 2, 3, 4]);
    }
}
