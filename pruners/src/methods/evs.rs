//! EVS (Efficient Video Sampling): keep the tokens that changed since the previous frame, the first frame whole.
//!
//! ```text
//! d[f, p] = 1 − cos(x[f, p], x[f−1, p])      (f ≥ 1: the token at the same grid position one frame earlier)
//! d[0, p] = 255                               (the first frame always survives)
//! keep the top k of d over the whole video, by d descending then index ascending (a stable argsort)
//! k = max(n, int(N·(1 − rate)))               (`rate`, vLLM's `--video-pruning-rate`), or the budget (`rate=budget`)
//! ```
//!
//! `n` tokens per frame, `N` in all. This is vLLM's `compute_retention_mask` / `compute_retained_tokens_count`
//! (`vllm/multimodal/evs.py`, also in SGLang's `srt/multimodal/evs`), which vLLM applies to Qwen2.5-VL and Qwen3-VL
//! video tokens after the merger (a frame there is a temporal patch). Source: Bagrov et al., "Efficient Video
//! Sampling: Pruning Temporally Redundant Tokens for Faster VLM Inference", arXiv 2510.14624. Complexity `O(N·D)`
//! for the cosines plus `O(N log N)` for the order.
//!
//! Deviations \[project\]:
//! - `rate=budget` (the default) keeps exactly the pipeline's `k`; vLLM's own count comes with `rate=<q>`, which
//!   the budget must allow (a [`PruneError::BudgetTooSmall`] otherwise, like DyCoke's own count) and which runs
//!   under a budget of every token too ([`Pruner::fixed_count`]): `ask --pruner evs:rate=0.75` is vLLM's
//!   `--video-pruning-rate 0.75`.
//!   Either way fewer than one frame's tokens is refused: the first frame is kept whole.
//! - Several camera views are separate videos: each view's first frame scores 255 and the previous frame is the
//!   view's own; the top k is taken over all views, as over the frames of one (vLLM sees one video at a time).
//! - Cosine of unit-normalised rows (a zero row stays zero); torch's `cosine_similarity` divides by
//!   `max(‖a‖·‖b‖, 1e-8)`: the same for any non-degenerate token.

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::top_k;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// EVS settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evs {
    /// vLLM's pruning rate `q` in `[0, 1)`; `None` follows the budget.
    pub rate: Option<f64>,
}

impl Evs {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 1] = [ParamSpec {
        name: "rate",
        default: "budget",
        help: "vLLM's video_pruning_rate q (keeps max(n, int(N·(1−q)))), or `budget` (keep the budget)",
    }];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let rate = match p.text("rate")? {
            "budget" => None,
            _ => Some(p.float_in("rate", 0.0, 1.0)?),
        };
        Ok(Evs { rate })
    }
}

/// vLLM's `compute_retained_tokens_count`: `max(n, int(N·(1 − q)))`, the product in f64 as Python computes it.
pub fn retained_count(per_frame: usize, frames: usize, rate: f64) -> usize {
    (((per_frame * frames) as f64 * (1.0 - rate)) as usize).max(per_frame)
}

impl Pruner for Evs {
    fn name(&self) -> &'static str {
        "evs"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::FrameGrid]
    }

    fn exact_budget(&self) -> bool {
        self.rate.is_none()
    }

    fn fixed_count(&self) -> bool {
        self.rate.is_some()
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (views, frames, h, w) = tokens.grid(self.name())?;
        let n = h * w;
        let floor = views * n;
        let count = match self.rate {
            Some(q) => (0..views).map(|_| retained_count(n, frames, q)).sum::<usize>(),
            None => k,
        };
        if count > k || k < floor {
            return Err(PruneError::BudgetTooSmall {
                method: self.name(),
                minimum: count.max(floor),
                asked: k,
                reason: "the first frame is kept whole (and rate=<q> fixes its own count; rate=budget follows k)",
            });
        }
        let x = backend.normalize_rows(tokens.features())?;
        let mut score = vec![255.0f32; tokens.len()];
        let (now, before): (Vec<usize>, Vec<usize>) = (0..views * frames)
            .filter(|g| g % frames != 0)
            .flat_map(|g| (0..n).map(move |p| (g * n + p, (g - 1) * n + p)))
            .unzip();
        if !now.is_empty() {
            let sims = backend.rowwise_dots(&backend.gather_rows(&x, &now)?, &backend.gather_rows(&x, &before)?)?;
            for (&i, s) in now.iter().zip(sims) {
                score[i] = 1.0 - s;
            }
        }
        Ok(Selection::from_unsorted(top_k(&score, count), k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, Layout, Method};
    use ndarray::Array2;

    /// Three frames of 2 x 2 tokens: frame 1 repeats frame 0 but for position 3, frame 2 repeats frame 1 but for
    /// position 0 (the same change, so the two changed tokens score exactly alike).
    fn video() -> TokenSet<Array2<f32>> {
        let e = |i: usize| -> Vec<f32> { (0..4).map(|j| if j == i { 1.0 } else { 0.1 }).collect() };
        let frames = [[e(0), e(1), e(2), e(3)], [e(0), e(1), e(2), e(0)], [e(3), e(1), e(2), e(0)]];
        let rows: Vec<f32> = frames.iter().flatten().flatten().copied().collect();
        TokenSet::new(&CpuBackend, Array2::from_shape_vec((12, 4), rows).unwrap())
            .unwrap()
            .with_layout(Layout::frames(3, 2, 2))
            .unwrap()
    }

    #[test]
    fn the_first_frame_and_the_changed_tokens_survive() {
        let tokens = video();
        let keep = |spec: &str, k: usize| {
            let method = Method::from_spec(spec).unwrap().0;
            prune(&CpuBackend, &method, &tokens, Budget::Keep(k)).map(|s| s.kept)
        };
        // The first frame (0-3), then the changed tokens 7 (frame 1, position 3) and 8 (frame 2, position 0), which
        // tie: the lower index first.
        assert_eq!(keep("evs", 5).unwrap(), [0, 1, 2, 3, 7]);
        assert_eq!(keep("evs", 6).unwrap(), [0, 1, 2, 3, 7, 8]);
        // vLLM's count: max(4, int(12 · 0.5)) = 6 for rate 0.5, at most the budget.
        assert_eq!(retained_count(4, 3, 0.5), 6);
        assert_eq!(retained_count(4, 3, 0.9), 4, "never below one frame");
        assert_eq!(keep("evs:rate=0.5", 8).unwrap(), [0, 1, 2, 3, 7, 8], "its own count under a larger budget");
        assert_eq!(keep("evs:rate=0.5", 12).unwrap(), [0, 1, 2, 3, 7, 8], "and when the budget keeps everything");
        assert!(matches!(keep("evs:rate=0.5", 5), Err(PruneError::BudgetTooSmall { minimum: 6, .. })));
        assert!(matches!(keep("evs", 3), Err(PruneError::BudgetTooSmall { minimum: 4, .. })));
        // Without a grid there are no frames to compare.
        let flat = TokenSet::new(&CpuBackend, tokens.features().clone()).unwrap();
        let method = Method::from_spec("evs").unwrap().0;
        assert!(prune(&CpuBackend, &method, &flat, Budget::Keep(5)).is_err());
    }
}
