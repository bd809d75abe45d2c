//! HoliTom (outer-LLM stage): segment the video where tokens stop being static, average static tokens over time,
//! and merge the dynamic ones by density peaks.
//!
//! ```text
//! sim[t][p] = cos(x_{t,p}, x_{t+1,p})
//! count[s][e] = #{p : sim[t][p] > τ for all t in [s, e)} · (e − s)
//! dp[i] = max( dp[i−1], max_{s ≥ i−W} dp[s] + count[s][i−1] )          (W = 1024; windows = the argmax path)
//! static p in a window → one token, the mean over the window's frames; the rest stay per frame (dynamic)
//! each frame's dynamic tokens keep round(b·(1 − D)) by attention, and b − that many DPC-kNN clusters (κ = 7)
//! of the remaining ones; a window's static tokens become b DPC-kNN clusters;  cluster = β·centre + (1 − β)·mean(others)
//! ```
//!
//! Budget: the reference rescales a keep ratio (`r' = min(r / ((total − reduced)/total), 1)`) and takes `ceil` per
//! frame, which can overshoot; here `k` is split over every frame's dynamic group and every window's static group in
//! proportion to their sizes (largest remainders), the same proportional rule made exact: at most `k` tokens, exactly
//! `k` unless averaging left fewer \[project\]. `D` (share merged rather than kept by attention) and the static
//! cluster count are unpublished: `D = 0.5` by default and static groups take their proportional share \[project\].
//! Defaults `τ = 0.65` (0.80 for 15–25 % budgets in the paper), `β = 0.6`. A merged token takes its centre's index;
//! a static token the index of its position in the window's first frame. The inner-LLM stage is
//! `in_decoder::holitom_inner`. Complexity: `O(F·W·n)` for the DP plus `O(m²·D)` DPC-kNN per group.
//! Source: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", NeurIPS 2025
//! (arXiv 2505.21334), cokeshao/HoliTom `holitom/llava_arch.py`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{dpc_knn, split_proportional, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// HoliTom's outer-LLM token merging.
#[derive(Debug, Clone, PartialEq)]
pub struct HoliTom {
    /// Static threshold on same-position cosine between consecutive frames.
    pub tau: f32,
    /// Longest window of the segmentation DP.
    pub max_window: usize,
    /// Share of each dynamic frame budget spent on merged clusters instead of top attention.
    pub d: f64,
    /// Weight of a cluster's centre in its merge.
    pub beta: f32,
}

/// A token as a weighted sum of original rows.
type Virtual = Vec<(usize, f32)>;

impl HoliTom {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 4] = [
        ParamSpec { name: "tau", default: "0.65", help: "static threshold on consecutive-frame cosine" },
        ParamSpec { name: "max_window", default: "1024", help: "longest temporal window of the segmentation" },
        ParamSpec { name: "d", default: "0.5", help: "share of a dynamic frame's budget given to merged clusters" },
        ParamSpec { name: "beta", default: "0.6", help: "weight of a cluster centre in its merge" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(HoliTom {
            tau: p.float_in("tau", -1.0, 1.0)? as f32,
            max_window: p.int_at_least("max_window", 1)?,
            d: p.float_in("d", 0.0, 1.0)?,
            beta: p.float_in("beta", 0.0, 1.0)? as f32,
        })
    }

    /// Optimal windows `(start, len)` of `frames` frames from `sim[t][p]` (transition t -> t+1).
    pub fn windows(&self, sim: &[Vec<f32>], frames: usize) -> Vec<(usize, usize)> {
        let mut dp = vec![0u64; frames + 1];
        let mut back = vec![0usize; frames + 1];
        for i in 1..=frames {
            dp[i] = dp[i - 1];
            back[i] = i - 1;
            let positions = sim.first().map_or(0, Vec::len);
            let mut static_mask = vec![true; positions];
            let lowest = (i - 1).saturating_sub(self.max_window - 1);
            for s in (lowest..i - 1).rev() {
                static_mask.iter_mut().zip(&sim[s]).for_each(|(m, &v)| *m &= v > self.tau);
                let count = static_mask.iter().filter(|&&m| m).count() as u64 * (i - 1 - s) as u64;
                if dp[s] + count > dp[i] {
                    dp[i] = dp[s] + count;
                    back[i] = s;
                }
            }
        }
        let mut out = Vec::new();
        let mut i = frames;
        while i > 0 {
            out.push((back[i], i - back[i]));
            i = back[i];
        }
        out.reverse();
        out
    }

    /// Merges `members` (virtual tokens, rows of `feats`) into `b` DPC-kNN clusters:
    /// `β·centre + (1 − β)·mean(others)`. Returns (representative, weights) per cluster.
    fn cluster<B: Backend>(
        &self,
        backend: &B,
        feats: &B::Matrix,
        members: &[(usize, Virtual)],
        b: usize,
    ) -> Result<Vec<(usize, Virtual)>> {
        if b == 0 || members.is_empty() {
            return Ok(Vec::new());
        }
        if b >= members.len() {
            return Ok(members.to_vec());
        }
        let rows: Vec<Virtual> = members.iter().map(|(_, v)| v.clone()).collect();
        let m = backend.combine_rows(feats, &rows, false)?;
        let clusters = dpc_knn(backend, &m, b, 7)?;
        let mut out = Vec::with_capacity(b);
        for (c, &centre) in clusters.centres.iter().enumerate() {
            let others: Vec<usize> =
                (0..members.len()).filter(|&i| i != centre && clusters.assignment[i] == c).collect();
            let centre_w = if others.is_empty() { 1.0 } else { self.beta };
            let mut weights: Virtual = members[centre].1.iter().map(|&(i, w)| (i, w * centre_w)).collect();
            for &o in &others {
                let share = (1.0 - self.beta) / others.len() as f32;
                weights.extend(members[o].1.iter().map(|&(i, w)| (i, w * share)));
            }
            out.push((members[centre].0, weights));
        }
        Ok(out)
    }
}

impl Pruner for HoliTom {
    fn name(&self) -> &'static str {
        "holitom"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::FrameGrid, Signal::ClsAttention]
    }

    fn exact_budget(&self) -> bool {
        false
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (views, frames, h, w) = tokens.grid(self.name())?;
        let attention = tokens.require_cls_attention(self.name())?;
        let n = h * w;
        let x = backend.normalize_rows(tokens.features())?;
        // Groups of virtual tokens: (is_static, members as (representative, weights)).
        let mut groups: Vec<(bool, Vec<(usize, Virtual)>)> = Vec::new();
        let mut window_count = 0;
        for v in 0..views {
            let base = v * frames;
            let mut sim = Vec::with_capacity(frames.saturating_sub(1));
            for t in 0..frames.saturating_sub(1) {
                let rows = |f: usize| ((base + f) * n..(base + f + 1) * n).collect::<Vec<_>>();
                sim.push(
                    backend
                        .rowwise_dots(&backend.gather_rows(&x, &rows(t))?, &backend.gather_rows(&x, &rows(t + 1))?)?,
                );
            }
            for (start, len) in self.windows(&sim, frames) {
                window_count += 1;
                let is_static: Vec<bool> =
                    (0..n).map(|p| len > 1 && (start..start + len - 1).all(|t| sim[t][p] > self.tau)).collect();
                let statics: Vec<(usize, Virtual)> = (0..n)
                    .filter(|&p| is_static[p])
                    .map(|p| {
                        let weights = (start..start + len).map(|f| ((base + f) * n + p, 1.0 / len as f32)).collect();
                        ((base + start) * n + p, weights)
                    })
                    .collect();
                if !statics.is_empty() {
                    groups.push((true, statics));
                }
                for f in start..start + len {
                    let dynamic: Vec<(usize, Virtual)> = (0..n)
                        .filter(|&p| !is_static[p])
                        .map(|p| ((base + f) * n + p, vec![((base + f) * n + p, 1.0)]))
                        .collect();
                    if !dynamic.is_empty() {
                        groups.push((false, dynamic));
                    }
                }
            }
        }
        let sizes: Vec<usize> = groups.iter().map(|(_, g)| g.len()).collect();
        let weights: Vec<f64> = sizes.iter().map(|&s| s as f64).collect();
        let budgets = split_proportional(k, &weights, &sizes);
        let mut out: Vec<(usize, Virtual)> = Vec::new();
        for ((is_static, members), &b) in groups.iter().zip(&budgets) {
            if *is_static || b >= members.len() {
                out.extend(self.cluster(backend, tokens.features(), members, b)?);
                continue;
            }
            let top = ((b as f64) * (1.0 - self.d)).round() as usize;
            let scores: Vec<f32> = members.iter().map(|(rep, _)| attention[*rep]).collect();
            let chosen = top_k(&scores, top);
            let mut taken = vec![false; members.len()];
            for &c in &chosen {
                taken[c] = true;
                out.push(members[c].clone());
            }
            let rest: Vec<(usize, Virtual)> =
                members.iter().zip(&taken).filter(|(_, t)| !**t).map(|(m, _)| m.clone()).collect();
            out.extend(self.cluster(backend, tokens.features(), &rest, b - top)?);
        }
        Ok(Selection::merged(backend, tokens.features(), out, false, k)?
            .with_note(format!("{window_count} temporal windows")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dp_groups_static_frames_into_one_window() {
        let h = HoliTom { tau: 0.65, max_window: 1024, d: 0.5, beta: 0.6 };
        // 4 frames, 2 positions: frames 0-2 static at both positions, 2 -> 3 changes everywhere.
        let sim = vec![vec![0.9, 0.9], vec![0.9, 0.9], vec![0.1, 0.2]];
        assert_eq!(h.windows(&sim, 4), vec![(0, 3), (3, 1)]);
        // Nothing static: every frame is its own window.
        assert_eq!(h.windows(&[vec![0.0], vec![0.0]], 3), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
