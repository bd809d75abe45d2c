//! DyCoke temporal token merging: inside windows of 4 frames, drop the tokens that did not change.
//!
//! ```text
//! window = frames w, w+1, w+2, w+3:  frame w kept whole;
//! frames w+1, w+2 compared with frame w, frame w+3 with frame w+2, position by position (cosine);
//! each compared frame keeps its m tokens LEAST similar to their reference
//! ```
//!
//! Budget: with `dycoke_k` given (reference knob, the fraction dropped in compared frames, paper 0.3) each compared
//! frame keeps `int((1 − dycoke_k)·n)` and the budget is only an upper bound. Otherwise `m` follows the budget:
//! `k − (whole frames)·n` split evenly over compared frames (largest remainders), so exactly `k` are kept. A budget
//! below the whole frames' tokens is an error: the method never prunes a window's first frame. A final partial
//! window applies the same rule to the frames it has \[project\]. Views are processed independently. The decode-time
//! dynamic KV part of DyCoke lives in the decoder (`in_decoder::dycoke_kv`). Complexity `O(N·D)`.
//! Source: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models", CVPR 2025
//! (arXiv 2411.15024), KD-TAO/DyCoke `llava_arch.py::dycole_ttm`.

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{bottom_k, split_proportional};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// DyCoke's temporal token merging stage.
#[derive(Debug, Clone, PartialEq)]
pub struct DyCoke {
    /// Frames per window.
    pub window: usize,
    /// Reference drop fraction in compared frames; `None` follows the budget.
    pub dycoke_k: Option<f64>,
}

impl DyCoke {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 2] = [
        ParamSpec { name: "window", default: "4", help: "frames per window (the first is kept whole)" },
        ParamSpec {
            name: "dycoke_k",
            default: "budget",
            help: "fraction dropped in compared frames (paper 0.3), or `budget`",
        },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let dycoke_k = match p.text("dycoke_k")? {
            "budget" => None,
            _ => Some(p.float_in("dycoke_k", 0.0, 1.0)?),
        };
        Ok(DyCoke { window: p.int_at_least("window", 2)?, dycoke_k })
    }

    /// The reference frame of frame `j` within its window (`None` for the kept first frame): the paper's window of
    /// 4 compares frames 1 and 2 with frame 0 and frame 3 with frame 2; longer windows continue in pairs.
    fn reference(j: usize) -> Option<usize> {
        match j {
            0 => None,
            1 | 2 => Some(0),
            _ => Some(if j % 2 == 1 { j - 1 } else { j - 2 }),
        }
    }
}

impl Pruner for DyCoke {
    fn name(&self) -> &'static str {
        "dycoke"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::FrameGrid]
    }

    fn exact_budget(&self) -> bool {
        self.dycoke_k.is_none()
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (views, frames, h, w) = tokens.grid(self.name())?;
        let per_frame = h * w;
        // (global frame, reference global frame) for every compared frame; whole frames separately.
        let mut whole = Vec::new();
        let mut compared = Vec::new();
        for v in 0..views {
            for start in (0..frames).step_by(self.window) {
                for j in 0..self.window.min(frames - start) {
                    let f = v * frames + start + j;
                    match Self::reference(j) {
                        None => whole.push(f),
                        Some(r) => compared.push((f, v * frames + start + r)),
                    }
                }
            }
        }
        let fixed = whole.len() * per_frame;
        let shares = match self.dycoke_k {
            Some(p) => vec![((1.0 - p) * per_frame as f64) as usize; compared.len()],
            None => {
                if k < fixed {
                    return Err(PruneError::BudgetTooSmall {
                        method: self.name(),
                        minimum: fixed,
                        asked: k,
                        reason: "the first frame of every window is kept whole",
                    });
                }
                split_proportional(k - fixed, &vec![1.0; compared.len()], &vec![per_frame; compared.len()])
            }
        };
        let x = backend.normalize_rows(tokens.features())?;
        let mut kept: Vec<usize> = whole.iter().flat_map(|&f| f * per_frame..(f + 1) * per_frame).collect();
        for (&(f, r), &m) in compared.iter().zip(&shares) {
            let rows = |g: usize| (g * per_frame..(g + 1) * per_frame).collect::<Vec<_>>();
            let sims =
                backend.rowwise_dots(&backend.gather_rows(&x, &rows(f))?, &backend.gather_rows(&x, &rows(r))?)?;
            kept.extend(bottom_k(&sims, m).into_iter().map(|p| f * per_frame + p));
        }
        let total = kept.len();
        if total > k {
            return Err(PruneError::BudgetTooSmall {
                method: self.name(),
                minimum: total,
                asked: k,
                reason: "dycoke_k keeps more tokens than the budget allows",
            });
        }
        Ok(Selection::from_unsorted(kept, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, Layout};

    #[test]
    fn keeps_first_frames_whole_and_the_changed_tokens_elsewhere() {
        // 4 frames of 2 tokens. Frame 1 changes at position 1 only; frame 2 at position 0; frame 3 equals frame 2.
        let f0 = [[1.0f32, 0.0], [0.0, 1.0]];
        let f1 = [[1.0f32, 0.0], [1.0, 0.0]];
        let f2 = [[0.0f32, 1.0], [0.0, 1.0]];
        let rows: Vec<f32> = [f0, f1, f2, f2].iter().flatten().flatten().copied().collect();
        let x = ndarray::Array2::from_shape_vec((8, 2), rows).unwrap();
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(4, 1, 2)).unwrap();
        let d = DyCoke { window: 4, dycoke_k: None };
        // Whole frame 0 (2 tokens) + one token in each of frames 1, 2, 3.
        let s = prune(&CpuBackend, &d, &t, Budget::Keep(5)).unwrap();
        assert_eq!(s.kept, vec![0, 1, 3, 4, 6]);
        let err = prune(&CpuBackend, &d, &t, Budget::Keep(1)).unwrap_err();
        assert!(matches!(err, PruneError::BudgetTooSmall { minimum: 2, .. }));
    }
}
