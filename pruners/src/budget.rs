//! The budget: how many visual tokens leave a selector for one unit (ALGORITHMS.md §1.1).
//!
//! The project counts tokens **kept**. A fraction `f ∈ (0, 1]` resolves to `k = clamp(round_half_even(f·N), 1, N)`,
//! Python's `round()`, which is what AngelSlim, FastV and DivPrune do. Papers that state a *drop* ratio `d` map to
//! `Ratio(1 - d)`; absolute counts (ToDRE's 288 of 2880, CDPruner's `visual_token_num`, VisionZip's
//! `dominant + contextual`) map to `Keep(count)`.

use crate::error::{PruneError, Result};

/// How many tokens to keep.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Keep this many tokens (at least 1). More than `N` keeps all `N` and is reported as clamped.
    Keep(usize),
    /// Keep this fraction of the tokens, `0 < f <= 1`.
    Ratio(f64),
}

/// A budget resolved against a token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedBudget {
    /// Tokens to keep, `0 <= k <= N` (0 only when `N = 0`).
    pub k: usize,
    /// True when a `Keep` count above `N` was lowered to `N`.
    pub clamped: bool,
}

impl Budget {
    /// Checks the budget's domain without a token count.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Budget::Keep(0) => Err(PruneError::Budget { value: "keep 0".into(), reason: "keep at least 1 token" }),
            Budget::Keep(_) => Ok(()),
            Budget::Ratio(f) if !(f > 0.0 && f <= 1.0) => {
                Err(PruneError::Budget { value: format!("ratio {f}"), reason: "a kept fraction must be in (0, 1]" })
            }
            Budget::Ratio(_) => Ok(()),
        }
    }

    /// Resolves the budget for `n` tokens: the one place where fractions become counts.
    pub fn resolve(&self, n: usize) -> Result<ResolvedBudget> {
        self.validate()?;
        if n == 0 {
            return Ok(ResolvedBudget { k: 0, clamped: false });
        }
        Ok(match *self {
            Budget::Keep(k) => ResolvedBudget { k: k.min(n), clamped: k > n },
            Budget::Ratio(f) => {
                let k = (f * n as f64).round_ties_even() as usize;
                ResolvedBudget { k: k.clamp(1, n), clamped: false }
            }
        })
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Keep(k) => write!(f, "keep {k}"),
            Budget::Ratio(r) => write!(f, "ratio {r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rounds_half_to_even_like_python() {
        // 0.5 * 5 = 2.5 -> 2 (Python round), 0.5 * 7 = 3.5 -> 4.
        assert_eq!(Budget::Ratio(0.5).resolve(5).unwrap().k, 2);
        assert_eq!(Budget::Ratio(0.5).resolve(7).unwrap().k, 4);
        // DivPrune's SUBSET_RATIO on LLaVA-1.5: round(0.098 * 576) = 56.
        assert_eq!(Budget::Ratio(0.098).resolve(576).unwrap().k, 56);
        // llmc's reduction 0.778 -> keep 128 of 576.
        assert_eq!(Budget::Ratio(1.0 - 0.778).resolve(576).unwrap().k, 128);
    }

    #[test]
    fn tiny_ratio_keeps_one_and_keep_above_n_clamps() {
        assert_eq!(Budget::Ratio(1e-6).resolve(10).unwrap(), ResolvedBudget { k: 1, clamped: false });
        assert_eq!(Budget::Keep(50).resolve(10).unwrap(), ResolvedBudget { k: 10, clamped: true });
        assert_eq!(Budget::Keep(3).resolve(0).unwrap().k, 0);
    }

    #[test]
    fn invalid_budgets_are_typed_errors() {
        for b in [Budget::Keep(0), Budget::Ratio(0.0), Budget::Ratio(1.5), Budget::Ratio(f64::NAN), Budget::Ratio(-0.1)]
        {
            assert!(matches!(b.resolve(10), Err(PruneError::Budget { .. })), "{b}");
        }
    }
}
