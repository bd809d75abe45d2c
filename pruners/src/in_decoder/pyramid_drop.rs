//! PyramidDrop: drop image tokens in stages, keeping a shrinking share of the original count.
//!
//! Before each stage layer `K_s` (official `layer_list`, default 8, 16, 24) keep `⌊N·ρ_s⌋` of the **original**
//! `N` image tokens (official `image_token_ratio_list`, default `ρ_s = λ^s`: 0.5, 0.25, 0.125), ranked by the
//! attention of the last instruction token, computed with layer `K_s`'s **own** input layernorm, q/k projections
//! and RoPE on that layer's input (the previous layer's output):
//!
//! ```text
//! h = RMSNorm_{K_s}(x);  q = RoPE(W_q^{K_s} h_last),  k_j = RoPE(W_k^{K_s} h_j)     (current position ids)
//! a = mean_heads softmax_j(q·k_jᵀ/√d + causal mask)[image columns present now]
//! keep top-⌊N·ρ_s⌋ of a, ascending;  then renumber the whole sequence 0..S'−1
//! ```
//!
//! Complexity: one extra `q`/`k` projection per stage (`O(S·D·(H+H_kv)·d)`) and one attention row `O(S·H·d)`;
//! selection `O(N log N)`. Source: Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via
//! Pyramid Visual Redundancy Reduction", CVPR 2025 (arXiv 2410.17247); official code Cooperx521/PyramidDrop,
//! `llava/model/modeling_llama_pdrop.py` (`pdrop_forward`, `pdrop_rank_drop`) at commit 3f89f94, with the eval
//! scripts' `--layer_list '[8,16,24]' --image_token_ratio_list "[0.5,0.25,0.125]"`.
//!
//! Point by point against the official code (all official by default):
//! - **Scores** (`score=own`): `pdrop_rank_drop` runs after layer `K−1` and scores with `self.layers[K]`'s
//!   `input_layernorm`, `q_proj`, `k_proj` and rotary embedding; softmax in float32, mean over heads, then the
//!   image columns. `score=previous` reads layer `K−1`'s own attention row instead (FastV's tap) \[project option\].
//! - **Query**: the last token of the prompt (`prompt_len + image_tokens − 1`, inference mode); the pipeline's
//!   prompt ends with the instruction, so it is the sequence's last row.
//! - **Counts**: `int(N·ρ_s)` (truncation, computed from the original count at every stage; a stage may keep 0
//!   tokens when `N·ρ_s < 1`, as `topk(0)` does). `ratios=a/b/c` gives the list literally, as the scripts do
//!   (`λ^s` and a decimal literal can differ in the last bit, and so at an exact boundary).
//! - **Positions** (`positions=contiguous`): after every stage the official code renumbers the sequence
//!   `arange(0, len)` and, while decoding, subtracts each stage's dropped count from the ids of the layers after it;
//!   the decoder does the same ([`InDecoder::contiguous_positions`](super::InDecoder::contiguous_positions)).
//!   `positions=original` keeps the kept tokens' original ids \[project option\].
//! - **Ties**: `torch.topk` on exactly tied scores has no documented order; ties go to the lower index.
//! - Batches, padding and the training branch (query = tokens before the answer) are not carried over: the decoder
//!   runs one sequence at a time.

use super::fastv::top_image_tokens;
use super::image_columns;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use std::ops::Range;

/// The stage schedule and the two official readings (own-layer scoring, contiguous positions).
#[derive(Debug, Clone, PartialEq)]
pub struct PyramidDrop {
    /// `(layer, fraction of the original image tokens kept after it)`, layers ascending, fractions non-increasing.
    pub stages: Vec<(usize, f64)>,
    /// Score stage `K` with layer `K`'s own q/k on its input (official); `false`: layer `K − 1`'s attention.
    pub own_layer: bool,
    /// Renumber positions after each stage (official); `false`: kept tokens keep their original ids.
    pub contiguous: bool,
}

impl Default for PyramidDrop {
    fn default() -> Self {
        PyramidDrop { stages: vec![(8, 0.5), (16, 0.25), (24, 0.125)], own_layer: true, contiguous: true }
    }
}

/// PyramidDrop's parameters in the project's spec syntax (`pdrop:layers=8/16/24,lambda=0.5`).
pub const PARAMS: [ParamSpec; 5] = [
    ParamSpec { name: "layers", default: "8/16/24", help: "layers where tokens are dropped, ascending, `/`-separated" },
    ParamSpec {
        name: "lambda",
        default: "0.5",
        help: "share kept at each stage (stage s keeps lambda^s of the original)",
    },
    ParamSpec {
        name: "ratios",
        default: "auto",
        help: "the official image_token_ratio_list, one per layer, `/`-separated; auto = lambda^s",
    },
    ParamSpec {
        name: "score",
        default: "own",
        help: "own = the drop layer's q/k on its input (official); previous = the layer before's attention",
    },
    ParamSpec {
        name: "positions",
        default: "contiguous",
        help: "contiguous = renumber after each stage (official); original = kept tokens keep their ids",
    },
];

fn slash_list<T: std::str::FromStr>(p: &Params, key: &str) -> Result<Vec<T>> {
    let text = p.text(key)?;
    text.split('/').map(|v| v.trim().parse::<T>()).collect::<std::result::Result<_, _>>().map_err(|_| {
        PruneError::Param {
            method: "pdrop".into(),
            param: key.into(),
            reason: format!("= `{text}` is not a `/`-separated list of numbers"),
        }
    })
}

impl PyramidDrop {
    /// PyramidDrop from parsed `key=value` pairs; the schedule is validated.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("pdrop", &PARAMS, given)?;
        let lambda = p.float_in("lambda", 1e-6, 1.0)?;
        let layers: Vec<usize> = slash_list(&p, "layers")?;
        let fractions: Vec<f64> = match p.text("ratios")? {
            "auto" => (1..=layers.len()).map(|s| lambda.powi(s as i32)).collect(),
            _ => slash_list(&p, "ratios")?,
        };
        if fractions.len() != layers.len() {
            return Err(PruneError::Param {
                method: "pdrop".into(),
                param: "ratios".into(),
                reason: format!("has {} values for {} layers", fractions.len(), layers.len()),
            });
        }
        let rule = PyramidDrop {
            stages: layers.into_iter().zip(fractions).collect(),
            own_layer: p.choice("score", &["own", "previous"])? == "own",
            contiguous: p.choice("positions", &["contiguous", "original"])? == "contiguous",
        };
        rule.counts(1)?;
        Ok(rule)
    }

    /// Image tokens kept after each stage for `n` original image tokens: `⌊n·ρ_s⌋` (the official `int()`).
    pub fn counts(&self, n: usize) -> Result<Vec<usize>> {
        let mut last: Option<(usize, f64)> = None;
        for &(layer, fraction) in &self.stages {
            let ascending = last.is_none_or(|(l, f)| layer > l && fraction <= f);
            if !(ascending && fraction > 0.0 && fraction <= 1.0) {
                return Err(PruneError::Param {
                    method: "pdrop".into(),
                    param: "layers".into(),
                    reason: format!(
                        "must have ascending layers and non-increasing fractions in (0, 1], got {:?}",
                        self.stages
                    ),
                });
            }
            last = Some((layer, fraction));
        }
        // Python's `int(n * ratio)`: the product in f64, truncated.
        Ok(self.stages.iter().map(|&(_, f)| ((n as f64 * f) as usize).min(n)).collect())
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

    fn spec(pairs: &[(&str, &str)]) -> Result<PyramidDrop> {
        PyramidDrop::from_pairs(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn stage_counts_truncate_like_the_official_int() {
        let p = PyramidDrop::default();
        assert_eq!(p.counts(576).unwrap(), vec![288, 144, 72]);
        assert_eq!(p.counts(2880).unwrap(), vec![1440, 720, 360]);
        // 579·0.5 = 289.5 -> 289 (round-half-even would give 290); 7·0.125 = 0.875 -> 0.
        assert_eq!(p.counts(579).unwrap(), vec![289, 144, 72]);
        assert_eq!(p.counts(7).unwrap(), vec![3, 1, 0]);
        let bad = PyramidDrop { stages: vec![(8, 0.5), (4, 0.25)], ..PyramidDrop::default() };
        assert!(bad.counts(10).is_err());
    }

    #[test]
    fn selects_by_last_instruction_attention() {
        let p = PyramidDrop { stages: vec![(1, 0.5)], ..PyramidDrop::default() };
        let row = [0.1, 0.4, 0.1, 0.3, 0.1];
        assert_eq!(p.select(0, 4, &row, 1..5).unwrap(), vec![0, 2]);
    }

    #[test]
    fn specs_take_the_official_defaults_and_literal_ratios() {
        assert_eq!(spec(&[]).unwrap(), PyramidDrop::default());
        let literal = spec(&[("layers", "2/4"), ("ratios", "0.6/0.09")]).unwrap();
        assert_eq!(literal.stages, vec![(2, 0.6), (4, 0.09)]);
        // lambda's powers are computed, not rounded to a decimal (0.3² = 0.09000000000000001).
        let powered = spec(&[("layers", "2/4"), ("lambda", "0.3")]).unwrap();
        assert_eq!(powered.stages[1].1, 0.3f64.powi(2));
        let opt = spec(&[("score", "previous"), ("positions", "original")]).unwrap();
        assert!(!opt.own_layer && !opt.contiguous);
        for (pairs, param) in [
            (vec![("layers", "2/4"), ("ratios", "0.5")], "ratios"),
            (vec![("ratios", "a/b/c")], "ratios"),
            (vec![("layers", "4/2")], "layers"),
            (vec![("layers", "x")], "layers"),
            (vec![("score", "best")], "score"),
            (vec![("positions", "shifted")], "positions"),
        ] {
            match spec(&pairs) {
                Err(PruneError::Param { param: p, .. }) => assert_eq!(p, param, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }
}
