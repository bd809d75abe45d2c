//! FastV: at decoder layer `K`, keep the image tokens the last token attends to most.
//!
//! ```text
//! a = A^{(K−1)}[last, image span]   (softmax over the whole row first, then sliced; mean over heads)
//! keep top round(N·(1 − R)) of a, ascending; layers ≥ K run on prefix + kept image tokens + suffix
//! ```
//!
//! Position ids stay the original ones of the kept tokens. Defaults `K = 2`, `R = 0.5`; `K >= 1` is required (the
//! scores come from the previous layer). Complexity `O(N log N)` given the row. Source: Chen et al., "An Image is
//! Worth 1/2 Tokens After Layer 2", ECCV 2024 (arXiv 2403.06764), pkunlp-icler/FastV `modeling_llama.py`.

use super::image_columns;
use crate::budget::Budget;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use crate::primitives::top_k;
use std::ops::Range;

/// FastV settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastV {
    /// Layer at which tokens are removed (0-based, `>= 1`).
    pub layer: usize,
    /// Fraction of image tokens dropped.
    pub ratio: f64,
}

impl Default for FastV {
    fn default() -> Self {
        FastV { layer: 2, ratio: 0.5 }
    }
}

/// FastV's parameters in the project's spec syntax (`fastv:layer=K,ratio=R`).
pub const PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "layer", default: "2", help: "decoder layer where image tokens are dropped (>= 1)" },
    ParamSpec { name: "ratio", default: "0.5", help: "fraction of the image tokens dropped, in [0, 1)" },
];

impl FastV {
    /// Parses `fastv`, `fastv:layer=3,ratio=0.75` (other in-decoder methods: [`super::InDecoder::from_spec`]).
    pub fn from_spec(spec: &str) -> Result<Self> {
        match super::InDecoder::from_spec(spec)? {
            super::InDecoder::FastV(rule) => Ok(rule),
            other => Err(PruneError::Param {
                method: other.name().into(),
                param: "in-decoder method".into(),
                reason: "is not FastV".into(),
            }),
        }
    }

    /// FastV from parsed `key=value` pairs.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("fastv", &PARAMS, given)?;
        let rule = FastV { layer: p.get("layer")?, ratio: p.get("ratio")? };
        rule.validate()?;
        Ok(rule)
    }

    /// Validates the settings.
    pub fn validate(&self) -> Result<()> {
        if self.layer == 0 {
            return Err(PruneError::Param {
                method: "fastv".into(),
                param: "layer".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(PruneError::Param {
                method: "fastv".into(),
                param: "ratio".into(),
                reason: format!("= {} must be in [0, 1) (fraction dropped)", self.ratio),
            });
        }
        Ok(())
    }

    /// Kept image tokens, as offsets into the image span, from the last token's attention row of layer `K − 1`.
    pub fn select(&self, last_row: &[f32], image: Range<usize>) -> Result<Vec<usize>> {
        self.validate()?;
        let scores = image_columns(last_row, &image, "fastv attention row")?;
        let k = Budget::Ratio(1.0 - self.ratio).resolve(scores.len())?.k;
        Ok(top_image_tokens(scores, k))
    }
}

/// The `k` highest scores' offsets, ascending (shared by FastV, PyramidDrop and the other attention rankers).
pub fn top_image_tokens(scores: &[f32], k: usize) -> Vec<usize> {
    let mut kept = top_k(scores, k);
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_attended_half_of_the_image_span() {
        // Sequence: 2 prefix tokens, 4 image tokens (2..6), 1 text token.
        let row = [0.3, 0.1, 0.05, 0.2, 0.01, 0.15, 0.19];
        assert_eq!(FastV::default().select(&row, 2..6).unwrap(), vec![1, 3]);
        assert!(FastV { layer: 0, ratio: 0.5 }.select(&row, 2..6).is_err());
        assert!(FastV::default().select(&row, 2..9).is_err());
        assert!(FastV::default().select(&[f32::NAN; 7], 2..6).is_err());
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults() {
        assert_eq!(FastV::from_spec("fastv").unwrap(), FastV::default());
        assert_eq!(FastV::from_spec("fastv:layer=3,ratio=0.75").unwrap(), FastV { layer: 3, ratio: 0.75 });
        assert!(FastV::from_spec("fastv:layer=0").is_err());
        assert!(FastV::from_spec("fastv:ratio=1").is_err());
        assert!(FastV::from_spec("fastv:k=2").unwrap_err().to_string().contains("unknown"));
        assert!(FastV::from_spec("pdrop").unwrap_err().to_string().contains("not FastV"));
    }
}
