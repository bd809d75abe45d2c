//! PruMerge+: keep the CLS-attention outliers plus a uniform spatial scaffold, and fold similar tokens into them.
//!
//! ```text
//! Q1, Q3 = numpy float32 percentiles 25, 75 of the CLS attention a;  upper = Q3 + 1.5·(Q3 − Q1)
//! ratio = #{i : a_i > upper} / N;  top = the int(N·ratio) largest a (top-k)          (adaptive count)
//! step = int(int(1 / ratio) / 3);  spatial = {0, step, 2·step, … < N − 1} \ top;  kept = top ++ spatial
//! x_i ← x_i + Σ_{j ∈ J_i} a_j·x_j,  J_i = the 32 tokens (kept or not, unmerged) of highest key cosine to i
//! extra = Σ_{j not kept} a_j·x_j                                                          (one synthetic token)
//! ```
//!
//! The count expressions are Python's float ones, kept as such: `int(N·ratio)` can be one less than the outlier
//! count and `int(1/ratio)` one less than `N / count` (N = 196 with one outlier keeps none by top-k; N = 186 with
//! two has step 30, not 31); at LLaVA-1.5's N = 576 both agree with the integer forms for every count below 200.
//! The quartiles are NumPy's linear percentile computed in float32, as `outlier_dectection` does on its float32
//! array, and the bound and comparison are float32. The merge is unnormalised (norms can grow). The extra token is
//! returned in `Selection::extra` (position: the last token's, ALGORITHMS.md §1.5). Complexity:
//! `O(N log N + |kept|·N·Dk)`.
//!
//! Signals the pipeline must give for the official behaviour: `a` = the CLS row, patch columns, of **one
//! full-width head** of ViT layer 23 (the last of CLIP-L's 24): `softmax(q kᵀ · C^{-1/2})` with `q`, `k` the whole
//! `q_proj`, `k_proj` outputs (width C, all heads together) over CLS + patches; **not** a mean of per-head
//! attentions, which changes the quartiles and so the adaptive count (on the fixture's random input: 21 outliers
//! single-head, 29 from a 4-head mean). Keys = that layer's `k_proj` output at **full width** (not averaged over
//! heads), patch rows. Features = `hidden_states[-2]` patch rows, **before the projector**.
//!
//! Deviations from the official code, all \[project\]:
//! - The official scaffold stops at a hard-coded 575 (= N − 1 for 576 patches; past the end for any other N):
//!   here `N − 1`.
//! - No outlier (flat attention): the official divides by zero; here the top-1 token stands in, with the step of
//!   one outlier. `ratio > 1/3` gives step 0, which the official `arange` refuses; here step 1.
//! - Budget: the official has none. The budget is an upper bound: when the union exceeds `k`, the `k` kept tokens
//!   with the highest attention stay.
//! - Fewer than 33 tokens: the official `topk(32)` fails; here all other tokens are the neighbours.
//! - Output ascending by index, then the extra token (the official emits top-k order, scaffold order, extra); ties
//!   go to the lower index (`torch.topk` order is unspecified); norms have a `1e-8` guard (`F.normalize`: `1e-12`).
//!
//! Proof: `tests/official_prumerge_plus.rs` against the transcription
//! `tests/official/prumerge_plus/make_prumerge_plus.py`.
//! Source: Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models",
//! arXiv 2403.15388, 42Shawn/LLaVA-PruMerge `llava/model/multimodal_encoder/clip_encoder.py`
//! `CLIPVisionTower::token_prune_merge_advanced_plus` (`if_adaptive=True`) and `outlier_dectection`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::top_k;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// PruMerge+.
#[derive(Debug, Clone, PartialEq)]
pub struct PruMergePlus {
    /// Neighbours merged into each kept token.
    pub neighbours: usize,
}

impl PruMergePlus {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 1] =
        [ParamSpec { name: "neighbours", default: "32", help: "key-similar tokens merged into each kept token" }];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(PruMergePlus { neighbours: p.get("neighbours")? })
    }
}

/// `np.percentile(v, q)` on a float32 array: linear interpolation between closest ranks, done in float32 the way
/// NumPy's `_lerp` does it (`b − (b − a)·(1 − γ)` from `γ ≥ 0.5`), so the outlier bound is bit-identical.
fn numpy_percentile_f32(v: &[f32], q: f64) -> f32 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f32::total_cmp);
    let Some(last) = sorted.len().checked_sub(1) else { return f32::NAN };
    let virtual_index = q / 100.0 * last as f64;
    let lo = (virtual_index.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let gamma = virtual_index - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma) as f32
    } else {
        a + diff * gamma as f32
    }
}

/// The official scaffold step `int(int(1 / ratio) / 3)`, in f64 as Python computes it; at least 1 \[project\].
fn scaffold_step(ratio: f64) -> usize {
    (((1.0 / ratio) as usize) / 3).max(1)
}

impl Pruner for PruMergePlus {
    fn name(&self) -> &'static str {
        "prumerge-plus"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::ClsAttention]
    }

    fn exact_budget(&self) -> bool {
        false
    }

    fn synthetic_rows(&self) -> usize {
        1
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let a = tokens.require_cls_attention(self.name())?;
        let (q1, q3) = (numpy_percentile_f32(a, 25.0), numpy_percentile_f32(a, 75.0));
        let upper = q3 + 1.5 * (q3 - q1);
        let outliers = a.iter().filter(|&&v| v > upper).count();
        let mut notes = Vec::new();
        let (top_count, step) = if outliers == 0 {
            notes.push("no IQR outlier (flat attention): the top-1 token stands in".to_string());
            (1, scaffold_step(1.0 / n as f64))
        } else {
            let ratio = outliers as f64 / n as f64;
            ((n as f64 * ratio) as usize, scaffold_step(ratio))
        };
        let top = top_k(a, top_count);
        let mut chosen = vec![false; n];
        top.iter().for_each(|&i| chosen[i] = true);
        (0..n.saturating_sub(1)).step_by(step).for_each(|i| chosen[i] = true);
        let mut kept: Vec<usize> = (0..n).filter(|&i| chosen[i]).collect();
        notes.push(format!("adaptive: {outliers} IQR outliers, top {top_count} by attention, spatial step {step}"));
        if kept.len() > k {
            let scores: Vec<f32> = kept.iter().map(|&i| a[i]).collect();
            kept = top_k(&scores, k).into_iter().map(|p| kept[p]).collect();
            kept.sort_unstable();
            notes.push(format!("union capped to the budget {k} by attention"));
        }
        let mut is_kept = vec![false; n];
        kept.iter().for_each(|&i| is_kept[i] = true);
        let metric = backend.normalize_rows(tokens.keys().unwrap_or(tokens.features()))?;
        if tokens.keys().is_none() {
            notes.push("no keys: features used as the similarity metric".into());
        }
        let sims = backend.matmul_t(&backend.gather_rows(&metric, &kept)?, &metric)?;
        let groups: Vec<Vec<(usize, f32)>> = kept
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                let mut row = sims[r * n..(r + 1) * n].to_vec();
                row[i] = f32::NEG_INFINITY;
                std::iter::once((i, 1.0))
                    .chain(top_k(&row, self.neighbours.min(n - 1)).into_iter().map(|j| (j, a[j])))
                    .collect()
            })
            .collect();
        let merged = backend.combine_rows(tokens.features(), &groups, false)?;
        let pruned: Vec<(usize, f32)> = (0..n).filter(|&j| !is_kept[j]).map(|j| (j, a[j])).collect();
        let extra = backend.combine_rows(tokens.features(), &[pruned], false)?;
        let mut s = Selection::pruned(kept, k);
        s.sizes = groups.iter().map(Vec::len).collect();
        s.merged = Some(merged);
        s.extra = Some(extra);
        s.notes = notes;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};

    #[test]
    fn outliers_and_scaffold_are_kept_and_the_extra_token_sums_the_rest() {
        let n = 24;
        let x = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| if j == 0 { 1.0 } else { i as f32 });
        let mut a = vec![0.01f32; n];
        a[5] = 0.5; // the one outlier
        let t = TokenSet::from_array(x).unwrap().with_cls_attention(a.clone()).unwrap();
        let s = prune(&CpuBackend, &PruMergePlus { neighbours: 2 }, &t, Budget::Keep(n)).unwrap();
        // Clamp: Keep(N) is the identity. Ask for fewer.
        assert_eq!(s.kept.len(), n);
        let s = prune(&CpuBackend, &PruMergePlus { neighbours: 2 }, &t, Budget::Keep(n - 1)).unwrap();
        // step = (24 / 1) / 3 = 8: scaffold 0, 8, 16 (< 23), plus outlier 5.
        assert_eq!(s.kept, vec![0, 5, 8, 16]);
        let extra = s.extra.unwrap();
        let rest: f32 = (0..n).filter(|i| ![0, 5, 8, 16].contains(i)).map(|_| 0.01f32).sum();
        assert!((extra[[0, 0]] - rest).abs() < 1e-5);
    }

    #[test]
    fn percentile_matches_numpy_float32_on_both_interpolation_branches() {
        // np.percentile(np.float32([0.1, 0.7, 0.2, 0.4, 0.3]), 25) == np.float32(0.2); at 75, 0.4; and on
        // [1, 2, 4, 8] (virtual indices 0.75 and 2.25): 1.75 and 5.0, all exact in f32.
        assert_eq!(numpy_percentile_f32(&[0.1, 0.7, 0.2, 0.4, 0.3], 25.0), 0.2);
        assert_eq!(numpy_percentile_f32(&[0.1, 0.7, 0.2, 0.4, 0.3], 75.0), 0.4);
        assert_eq!(numpy_percentile_f32(&[8.0, 1.0, 4.0, 2.0], 25.0), 1.75);
        assert_eq!(numpy_percentile_f32(&[8.0, 1.0, 4.0, 2.0], 75.0), 5.0);
    }
}
