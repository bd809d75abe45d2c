//! PyramidDrop: drop image tokens in stages, keeping a shrinking share of the original count.
//!
//! At layers 8, 16, 24 keep 0.5, 0.25, 0.125 of the **original** image-token count, ranked by the attention of the
//! last instruction token (softmax over the row, mean over heads, image columns present at that stage):
//! `keep_s = round_half_even(N·λ^s)`. Complexity `O(N log N)` per stage given one row. Source: Xing et al.,
//! "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy Reduction", CVPR 2025
//! (arXiv 2410.17247), Cooperx521/PyramidDrop `modeling_llama_pdrop.py::pdrop_rank_drop`. The reference's rounding
//! is unpublished; the project's round-half-even is used.

use super::fastv::top_image_tokens;
use super::image_columns;
use crate::error::{PruneError, Result};
use std::ops::Range;

/// The stage schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PyramidDrop {
    /// `(layer, fraction of the original image tokens kept after it)`, layers ascending, fractions descending.
    pub stages: Vec<(usize, f64)>,
}

impl Default for PyramidDrop {
    fn default() -> Self {
        PyramidDrop { stages: vec![(8, 0.5), (16, 0.25), (24, 0.125)] }
    }
}

impl PyramidDrop {
    /// Image tokens kept after each stage for `n` original image tokens (at least 1).
    pub fn counts(&self, n: usize) -> Result<Vec<usize>> {
        let mut last = (0usize, 1.0f64);
        for &(layer, fraction) in &self.stages {
            if layer <= last.0 && last.0 != 0 || !(fraction > 0.0 && fraction <= last.1) {
                return Err(PruneError::Param {
                    method: "pdrop".into(),
                    param: "stages".into(),
                    reason: format!(
                        "must have ascending layers and non-increasing fractions in (0, 1], got {:?}",
                        self.stages
                    ),
                });
            }
            last = (layer, fraction);
        }
        Ok(self.stages.iter().map(|&(_, f)| ((n as f64 * f).round_ties_even() as usize).clamp(n.min(1), n)).collect())
    }

    /// Offsets (into the image tokens still present) kept at stage `s`, from the last instruction token's row.
    pub fn select(&self, stage: usize, original: usize, row: &[f32], image: Range<usize>) -> Result<Vec<usize>> {
        let counts = self.counts(original)?;
        let k = *counts.get(stage).ok_or_else(|| PruneError::Param {
            method: "pdrop".into(),
            param: "stage".into(),
            reason: format!("= {stage} but there are {} stages", counts.len()),
        })?;
        let scores = image_columns(row, &image, "pdrop attention row")?;
        Ok(top_image_tokens(scores, k.min(scores.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_counts_follow_the_original_count() {
        let p = PyramidDrop::default();
        assert_eq!(p.counts(576).unwrap(), vec![288, 144, 72]);
        assert_eq!(p.counts(2880).unwrap(), vec![1440, 720, 360]);
        let bad = PyramidDrop { stages: vec![(8, 0.5), (4, 0.25)] };
        assert!(bad.counts(10).is_err());
    }

    #[test]
    fn selects_by_last_instruction_attention() {
        let p = PyramidDrop { stages: vec![(1, 0.5)] };
        let row = [0.1, 0.4, 0.1, 0.3, 0.1];
        assert_eq!(p.select(0, 4, &row, 1..5).unwrap(), vec![0, 2]);
    }
}
