//! HoliTom's inner-LLM stage: at decoder layer `HOLITOM_k`, keep the image tokens the last token attends to most
//! and fold each dropped token into its most similar kept token.
//!
//! ```text
//! a = A^{(k−1)}[last, image span]        (softmax over the whole row, mean over heads)
//! keep top round(N·(1 − r)) of a (r = 0.5), ascending;  sim = cos(h_dropped, h_kept) of the layer-k input states
//! for each dropped i in ascending order:  h_{s(i)} ← (h_{s(i)} + h_i) / 2      (s(i) = argmax_j sim[i][j])
//! layers ≥ k run on prefix + kept (merged) image tokens + suffix, with the kept tokens' original position ids
//! ```
//!
//! The sequential halving is order-dependent (later tokens weigh more) and is reproduced for parity; `merge=mean`
//! averages each kept token with its members instead. Both are linear in the original rows, so the result is one
//! weighted combination per kept token. Similarities are computed once, before any merge, as the reference does.
//! Complexity `O(N log N)` for the ranking plus `O((N − k)·k·D)` for the similarities and `O(N·k)` for the
//! weights. Source: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", NeurIPS
//! 2025 (arXiv 2505.21334); official code cokeshao/HoliTom, `holitom/modeling_qwen2.py`
//! (`Qwen2Model_holitom.forward`, the `layer_idx == HOLITOM_k` branch).
//!
//! Deviations from the official code:
//! - **Default layer**: `HOLITOM_k` defaults to 3 in the code (used here); the LLaVA-OneVision-7B scripts pass 18.
//! - **Ties** break by the lowest index (§1.7) instead of `torch.topk` / `torch.max` order; cosine uses
//!   `‖h‖ + 1e-8` in the denominator (the reference divides by the bare norms, NaN for a zero state).
//! - `merge=mean` is a project option; the reference only halves sequentially.
//! - The reference runs the stage on prefill only (`position_ids.size(1) > 1`), as tokensieve does.

use super::fastv::top_image_tokens;
use super::{image_columns, StagePlan};
use crate::backend::Backend;
use crate::budget::Budget;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use crate::primitives::argmax;
use std::ops::Range;

/// HoliTom inner settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HolitomInner {
    /// The layer that no longer sees the dropped tokens (0-based, `>= 1`; the scores are the previous layer's).
    pub layer: usize,
    /// Fraction of the image tokens dropped (merged away).
    pub r: f64,
    /// Average members with a plain mean instead of the reference's sequential halving.
    pub true_mean: bool,
}

impl Default for HolitomInner {
    fn default() -> Self {
        HolitomInner { layer: 3, r: 0.5, true_mean: false }
    }
}

/// HoliTom inner's parameters in the project's spec syntax (`holitom-inner:layer=3,r=0.5`).
pub const PARAMS: [ParamSpec; 3] = [
    ParamSpec { name: "layer", default: "3", help: "decoder layer from which the merged tokens are gone (>= 1)" },
    ParamSpec { name: "r", default: "0.5", help: "fraction of the image tokens merged away, in [0, 1)" },
    ParamSpec { name: "merge", default: "sequential", help: "sequential (the reference's halving) | mean" },
];

impl HolitomInner {
    /// HoliTom inner from parsed `key=value` pairs.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("holitom-inner", &PARAMS, given)?;
        let rule = HolitomInner {
            layer: p.get("layer")?,
            r: p.get("r")?,
            true_mean: p.choice("merge", &["sequential", "mean"])? == "mean",
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Validates the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |param: &str, reason: String| PruneError::Param {
            method: "holitom-inner".into(),
            param: param.into(),
            reason,
        };
        if self.layer == 0 {
            return Err(bad("layer", "must be at least 1 (the scores are the previous layer's)".into()));
        }
        if !(0.0..1.0).contains(&self.r) {
            return Err(bad("r", format!("= {} must be in [0, 1) (fraction merged away)", self.r)));
        }
        Ok(())
    }

    /// The stage: kept offsets and their merged hidden states, from the last token's row of layer `k − 1` and the
    /// span's hidden states `[span.len(), D]` entering layer `k`.
    pub fn stage<B: Backend>(
        &self,
        backend: &B,
        last_row: &[f32],
        span: Range<usize>,
        hidden: &B::Matrix,
    ) -> Result<StagePlan<B::Matrix>> {
        self.validate()?;
        let attention = image_columns(last_row, &span, "holitom-inner attention row")?;
        let (n, _) = backend.shape(hidden);
        if n != attention.len() {
            return Err(PruneError::Shape {
                tensor: "holitom-inner hidden states",
                got: vec![n],
                expected: format!("{} rows (the image span)", attention.len()),
            });
        }
        if n == 0 {
            return Ok(StagePlan::keep(Vec::new()));
        }
        let (kept, merged) = merge(backend, hidden, attention, self.r, self.true_mean)?;
        Ok(StagePlan { kept, replace: Some(merged), extra: None })
    }
}

/// Kept offsets and the merged hidden states `[k, D]` of the image tokens `hidden` (rows in sequence order).
pub fn merge<B: Backend>(
    backend: &B,
    hidden: &B::Matrix,
    attention: &[f32],
    r: f64,
    true_mean: bool,
) -> Result<(Vec<usize>, B::Matrix)> {
    let n = attention.len();
    let k = Budget::Ratio((1.0 - r).clamp(f64::MIN_POSITIVE, 1.0)).resolve(n)?.k;
    let kept = top_image_tokens(attention, k);
    let mut is_kept = vec![false; n];
    kept.iter().for_each(|&i| is_kept[i] = true);
    let x = backend.normalize_rows(hidden)?;
    let targets = backend.gather_rows(&x, &kept)?;
    let dropped: Vec<usize> = (0..n).filter(|&i| !is_kept[i]).collect();
    let mut weights: Vec<Vec<f32>> = kept
        .iter()
        .map(|&s| {
            let mut w = vec![0f32; n];
            w[s] = 1.0;
            w
        })
        .collect();
    let mut members: Vec<usize> = vec![1; kept.len()];
    if !dropped.is_empty() && !kept.is_empty() {
        let sims = backend.matmul_t(&backend.gather_rows(&x, &dropped)?, &targets)?;
        for (r_i, &i) in dropped.iter().enumerate() {
            let s = argmax(&sims[r_i * kept.len()..(r_i + 1) * kept.len()]).unwrap_or(0);
            members[s] += 1;
            let w = &mut weights[s];
            if true_mean {
                let m = members[s] as f32;
                w.iter_mut().for_each(|v| *v *= (m - 1.0) / m);
                w[i] += 1.0 / m;
            } else {
                w.iter_mut().for_each(|v| *v *= 0.5);
                w[i] += 0.5;
            }
        }
    }
    let groups: Vec<Vec<(usize, f32)>> = weights
        .iter()
        .map(|w| w.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, v)| (i, *v)).collect())
        .collect();
    Ok((kept, backend.combine_rows(hidden, &groups, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use ndarray::array;

    #[test]
    fn sequential_halving_weighs_later_tokens_more() {
        let h = array![[1.0f32, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]];
        let attn = [0.9, 0.01, 0.02, 0.5];
        let (kept, merged) = merge(&CpuBackend, &h, &attn, 0.5, false).unwrap();
        assert_eq!(kept, vec![0, 3]);
        // Token 0 absorbs 1 then 2: ((h0 + h1)/2 + h2)/2.
        assert!((merged[[0, 0]] - ((1.0 + 0.9) / 2.0 + 0.8) / 2.0).abs() < 1e-6);
        let (_, mean) = merge(&CpuBackend, &h, &attn, 0.5, true).unwrap();
        assert!((mean[[0, 0]] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn the_stage_reads_the_span_columns_of_the_last_row() {
        let h = array![[1.0f32, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]];
        // Row over 6 keys; the span is 1..5.
        let row = [0.05, 0.9, 0.01, 0.02, 0.5, 0.0];
        let plan = HolitomInner::default().stage(&CpuBackend, &row, 1..5, &h).unwrap();
        assert_eq!(plan.kept, vec![0, 3]);
        assert_eq!(plan.replace.unwrap().nrows(), 2);
        assert!(plan.extra.is_none());
        assert!(HolitomInner::default().stage(&CpuBackend, &row, 1..7, &h).is_err());
        assert!(HolitomInner::default().stage(&CpuBackend, &row, 1..4, &h).is_err(), "hidden rows != span");
    }
}
