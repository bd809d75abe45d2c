//! VisPruner: a few important tokens by CLS attention, then diverse tokens by iterative near-duplicate removal.
//!
//! ```text
//! T_imp = int(k·r);  important = top-T_imp CLS attention;  residual = the rest in attention-rank order
//! while |residual| > k − T_imp:
//!     A = residual[0::2], B = residual[1::2];  drop the min(8, excess) A-tokens with the highest max_b cos(a, b)
//! ```
//!
//! Complexity: each round `O(|A|·|B|·D)`, about `(N − k)/8` rounds when the residual shrinks by 8; the reference
//! loop is kept because the round size is part of the method. Default `important_ratio r = 0.5`. The reference
//! uses pre-projector CLIP features: pass whichever features the caller wants compared. Ties drop the lower index.
//! Source: Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in VLMs"
//! (VisPruner), ICCV 2025 (arXiv 2412.01818), Theia-4869/VisPruner `llava_arch.py::encode_images`.

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
        let important_count = (k as f64 * self.important_ratio) as usize;
        let diverse_count = k - important_count;
        let ranked = top_k(attention, tokens.len());
        let (important, residual) = ranked.split_at(important_count);
        let mut residual = residual.to_vec();
        let x = backend.normalize_rows(tokens.features())?;
        while residual.len() > diverse_count {
            let drop = 8.min(residual.len() - diverse_count);
            let a: Vec<usize> = residual.iter().step_by(2).copied().collect();
            let b: Vec<usize> = residual.iter().skip(1).step_by(2).copied().collect();
            let redundancy: Vec<f32> = if b.is_empty() {
                vec![0.0; a.len()]
            } else {
                let sims = backend.matmul_t(&backend.gather_rows(&x, &a)?, &backend.gather_rows(&x, &b)?)?;
                sims.chunks(b.len()).map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect()
            };
            let dropped: Vec<usize> = top_k(&redundancy, drop).into_iter().map(|i| a[i]).collect();
            residual.retain(|i| !dropped.contains(i));
        }
        let kept: Vec<usize> = important.iter().chain(&residual).copied().collect();
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
