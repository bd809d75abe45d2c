//! DART: at decoder layer `K`, keep a few pivot image tokens and the image tokens least similar to the pivots
//! (duplication, not importance, decides what goes).
//!
//! ```text
//! n_j   = ‖k_j^{(K−1)}‖₁                 keys of layer K − 1 after RoPE, all heads concatenated, for every row j
//! pivots = top-p_img image rows by n  ∪  top-p_txt rows after the image span by n
//! h_j   = norm(x_j^{(K−1)})              the decoder's final RMSNorm applied to layer K − 1's output
//! m     = ⌊keep / (p_img + p_txt)⌋       keep = max_num_trunction, or ⌊N·(1 − ratio)⌋ spread as int(N·(1 − r)/P)
//! for each pivot p (ascending row):      candidates = image rows − image pivots − already chosen
//!     chosen += the m candidates with the LOWEST cos(h_p, h_c)
//! kept  = image pivots ∪ chosen (ascending); layers ≥ K run on prefix + kept + suffix at their original ids
//! ```
//!
//! The kept count is `p_img + P·m` (132 for the official LLaVA-1.5 setting `keep = 128`, 4 + 4 pivots), not the
//! nominal budget: the official code does not trim it, and neither does this. Text pivots are references only (text
//! is never pruned). Runs on the prefill only; layers `< K` keep the whole prompt in their cache.
//! Complexity: the key norms `O(S·H·d)`, the cosines `O(P·N·D)`, the greedy choice `O(P·N log N)`.
//!
//! Source: Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters More"
//! (arXiv 2502.11494), ZichenWen1/DART: `llava/model/language_model/modeling_llama_self.py`
//! (`get_retained_image_token`, called before layer `pruned_layer` with layer `K − 1`'s outputs) and the Qwen2.5-VL
//! port `Qwen2_5-VL/Qwen2_5VL_DART/modeling_qwen2_5_vl_self.py`; defaults of its eval scripts (`pruned_layer 2`,
//! `pivot_image_token 4`, `pivot_text_token 4`, `reduction_ratio 0.778`, `max_num_trunction 128` for LLaVA).
//!
//! How it reads the official code, and where it deviates:
//! - `m`: the LLaVA code computes `ceil(max_num_trunction // P)` (a floor: the division happens first) and its
//!   scripts always pass `max_num_trunction`, so the ratio is unused there (`dart:keep=128`); the Qwen2.5-VL port
//!   ignores it and uses `int(N·(1 − ratio)/P)`, the default here (no `keep`).
//! - Keys: the LLaVA code's keys are `repeat_kv`-expanded (grouped-query heads repeated), the Qwen port's are not;
//!   repeating every KV head the same number of times scales every L1 norm by the same factor, so the pivots are
//!   the same either way, and the decoder computes the norms over the KV heads.
//! - Pivot order: the official loop iterates a Python `set` of the pivot rows, whose order is the rows modulo the
//!   set's hash-table size; here pivots are visited in ascending row order \[project\]. The order only matters for a
//!   token that two pivots would both choose (the earlier one claims it).
//! - Ties (equal key norms or equal cosines) go to the lower row, where `torch.topk` leaves them unspecified
//!   \[project\].

use super::{image_columns, StagePlan};
use crate::backend::Backend;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use crate::primitives::top_k;
use std::ops::Range;

/// DART settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dart {
    /// Layer before which image tokens are removed (0-based, `>= 1`; the signals are layer `K − 1`'s).
    pub layer: usize,
    /// Fraction of the image tokens dropped (`reduction_ratio`), used when `keep` is not given.
    pub ratio: f64,
    /// Tokens the pivots choose in all (`max_num_trunction`), overriding `ratio`.
    pub keep: Option<usize>,
    /// Image pivots (`pivot_image_token`).
    pub image_pivots: usize,
    /// Text pivots (`pivot_text_token`).
    pub text_pivots: usize,
}

impl Default for Dart {
    fn default() -> Self {
        Dart { layer: 2, ratio: 0.778, keep: None, image_pivots: 4, text_pivots: 4 }
    }
}

/// DART's parameters in the project's spec syntax (`dart:layer=2,ratio=0.778,keep=128,image=4,text=4`).
pub const PARAMS: [ParamSpec; 5] = [
    ParamSpec { name: "layer", default: "2", help: "decoder layer before which image tokens are dropped (>= 1)" },
    ParamSpec { name: "ratio", default: "0.778", help: "fraction of the image tokens dropped, in [0, 1)" },
    ParamSpec {
        name: "keep",
        default: "auto",
        help: "tokens the pivots choose in all (max_num_trunction); auto: ratio",
    },
    ParamSpec { name: "image", default: "4", help: "image pivots (top L1 key norms in the image span)" },
    ParamSpec { name: "text", default: "4", help: "text pivots (top L1 key norms after the image span)" },
];

impl Dart {
    /// DART from parsed `key=value` pairs.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("dart", &PARAMS, given)?;
        let keep = match p.text("keep")? {
            "auto" => None,
            _ => Some(p.get::<usize>("keep")?),
        };
        let rule = Dart {
            layer: p.get("layer")?,
            ratio: p.get("ratio")?,
            keep,
            image_pivots: p.get("image")?,
            text_pivots: p.get("text")?,
        };
        rule.validate()?;
        Ok(rule)
    }

    fn bad(param: &str, reason: String) -> PruneError {
        PruneError::Param { method: "dart".into(), param: param.into(), reason }
    }

    /// Validates the settings.
    pub fn validate(&self) -> Result<()> {
        if self.layer == 0 {
            return Err(Self::bad("layer", "must be at least 1 (the signals are the layer before's)".into()));
        }
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(Self::bad("ratio", format!("= {} must be in [0, 1) (fraction dropped)", self.ratio)));
        }
        if self.image_pivots + self.text_pivots == 0 {
            return Err(Self::bad("image", "and `text`: at least one pivot is needed".into()));
        }
        Ok(())
    }

    /// Tokens each pivot chooses for an image span of `n`: `⌊keep / P⌋`, or `int(n·(1 − ratio)/P)`.
    pub fn per_pivot(&self, n: usize) -> usize {
        let pivots = self.image_pivots + self.text_pivots;
        match self.keep {
            Some(keep) => keep / pivots,
            None => (n as f64 * (1.0 - self.ratio) / pivots as f64) as usize,
        }
    }

    /// The pivots from the L1 key norms of every row (`norms`, the whole sequence): image pivots as offsets into
    /// `span`, text pivots as rows after it; each list ascending.
    pub fn pivots(&self, norms: &[f32], span: Range<usize>) -> Result<(Vec<usize>, Vec<usize>)> {
        let image = image_columns(norms, &span, "dart key norms")?;
        let mut picked = top_k(image, self.image_pivots.min(image.len()));
        picked.sort_unstable();
        let text = &norms[span.end..];
        let mut texts: Vec<usize> =
            top_k(text, self.text_pivots.min(text.len())).into_iter().map(|o| span.end + o).collect();
        texts.sort_unstable();
        Ok((picked, texts))
    }

    /// The greedy choice given, per pivot in visiting order, its cosine with each of the `n` image tokens: the kept
    /// offsets (image pivots and the chosen), ascending.
    pub fn choose(&self, n: usize, image_pivots: &[usize], cosines: &[Vec<f32>]) -> Result<Vec<usize>> {
        let m = self.per_pivot(n);
        let mut free = vec![true; n];
        for &p in image_pivots {
            free[p] = false;
        }
        let mut kept: Vec<usize> = image_pivots.to_vec();
        for (i, cos) in cosines.iter().enumerate() {
            if cos.len() != n {
                return Err(PruneError::Shape {
                    tensor: "dart cosines",
                    got: vec![i, cos.len()],
                    expected: format!("one cosine per image token ({n})"),
                });
            }
            if let Some(j) = cos.iter().position(|v| !v.is_finite()) {
                return Err(PruneError::NonFinite { tensor: "dart cosines", index: j, value: cos[j] });
            }
            let mut candidates: Vec<usize> = (0..n).filter(|&c| free[c]).collect();
            // The lowest cosines first, the lower offset on ties.
            candidates.sort_by(|&a, &b| cos[a].total_cmp(&cos[b]).then(a.cmp(&b)));
            for &c in candidates.iter().take(m) {
                free[c] = false;
                kept.push(c);
            }
        }
        kept.sort_unstable();
        Ok(kept)
    }

    /// The stage: pivots from the key norms (`rows[0]`), cosines of the final-normed hidden states `normed`
    /// (`[S, D]`, the whole sequence entering layer `K`) between each pivot and the image tokens, the greedy choice.
    pub fn stage<B: Backend>(
        &self,
        backend: &B,
        rows: &[Vec<f32>],
        span: Range<usize>,
        normed: &B::Matrix,
    ) -> Result<StagePlan<B::Matrix>> {
        self.validate()?;
        let norms = rows.first().ok_or_else(|| PruneError::Shape {
            tensor: "dart key norms",
            got: vec![0],
            expected: "the key norms of every row".into(),
        })?;
        let (s, _) = backend.shape(normed);
        if s != norms.len() {
            return Err(PruneError::Shape {
                tensor: "dart hidden states",
                got: vec![s],
                expected: format!("one row per key norm ({})", norms.len()),
            });
        }
        let n = span.len();
        let (image, text) = self.pivots(norms, span.clone())?;
        // The image rows, then the text pivots' rows: unit rows, so dot products are cosines.
        let mut gather: Vec<usize> = span.clone().collect();
        gather.extend(&text);
        let unit = backend.normalize_rows(&backend.gather_rows(normed, &gather)?)?;
        let pivots: Vec<usize> = image.iter().copied().chain((0..text.len()).map(|t| n + t)).collect();
        let cosines: Vec<Vec<f32>> = backend
            .dots_with_rows(&unit, &pivots)?
            .into_iter()
            .map(|mut row| {
                row.truncate(n);
                row
            })
            .collect();
        Ok(StagePlan::keep(self.choose(n, &image, &cosines)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use ndarray::Array2;

    #[test]
    fn per_pivot_counts_follow_both_official_formulas() {
        let llava = Dart { keep: Some(128), ..Dart::default() };
        assert_eq!(llava.per_pivot(576), 16, "LLaVA: 128 // 8");
        // Qwen2.5-VL port: int(N (1 - r) / P).
        assert_eq!(Dart::default().per_pivot(576), 15);
        assert_eq!(Dart { ratio: 0.5, ..Dart::default() }.per_pivot(100), 6);
    }

    #[test]
    fn pivots_then_least_similar_tokens() {
        // 2 prefix rows, 6 image rows (2..8), 2 text rows. Norms pick image offsets 1 and 4, text row 9.
        let rule = Dart { layer: 1, ratio: 0.0, keep: Some(2), image_pivots: 2, text_pivots: 1 };
        let norms = [0.0, 0.0, 1.0, 9.0, 2.0, 3.0, 8.0, 1.5, 4.0, 5.0];
        assert_eq!(rule.pivots(&norms, 2..8).unwrap(), (vec![1, 4], vec![9]));
        // Hidden states: image offsets 0 and 5 point away from everything; 2 and 3 duplicate the pivots.
        let mut h = Array2::<f32>::zeros((10, 3));
        for (row, v) in [
            (2, [0.0, 0.0, 1.0]),
            (3, [1.0, 0.0, 0.0]),
            (4, [1.0, 0.1, 0.0]),
            (5, [0.0, 1.0, 0.1]),
            (6, [0.0, 1.0, 0.0]),
            (7, [-1.0, -1.0, 0.0]),
            (9, [0.0, 1.0, 0.0]),
        ] {
            h.row_mut(row).assign(&ndarray::arr1(&v));
        }
        // m = 2 // 3 = 0: only the image pivots stay.
        let plan = rule.stage(&CpuBackend, &[norms.to_vec()], 2..8, &h).unwrap();
        assert_eq!(plan.kept, vec![1, 4]);
        // m = 1: pivot 1 (x axis) takes offset 5 (cos -0.71), pivot 4 (y axis) offset 0 (cos 0), the text pivot
        // (y axis) the lowest left, offset 2 (cos 0.10, below offset 3's 0.99).
        let rule = Dart { keep: Some(3), ..rule };
        let plan = rule.stage(&CpuBackend, &[norms.to_vec()], 2..8, &h).unwrap();
        assert_eq!(plan.kept, vec![0, 1, 2, 4, 5]);
        assert!(rule.stage(&CpuBackend, &[norms[..9].to_vec()], 2..8, &h).is_err(), "norms must cover the rows");
        assert!(rule.stage(&CpuBackend, &[], 2..8, &h).is_err());
    }
}
