//! FastVID: cut the video into segments of similar frames, then in each segment keep salient tokens by attention
//! and merge the rest into density-peak anchors.
//!
//! ```text
//! DySeg:   g_f = mean of frame f's normalised tokens;  cut after f when cos(g_f, g_{f+1}) < τ,
//!          and after the c − 1 least similar transitions
//! STPrune: per frame keep m_f (budget split evenly); ctx_f = int(m_f·d) context, m_f − ctx_f salient (top attention)
//!          anchor frames = every p-th frame counted from the segment end; quota = Σctx_f // ceil(len/p) per frame,
//!          chosen by DPC-kNN score (κ = 4) among the frame's non-salient tokens
//!          every other non-salient token of the segment joins its most similar anchor (cosine):
//!          anchor' = w·anchor + (1 − w)·mean(assigned),  w = max(1/(cnt + 1), β)
//! ```
//!
//! Output: salient tokens and merged anchors, ascending, at most `k`. Defaults: `τ = 0.9`, `c = 8`, `d = 0.4`,
//! `p = 4`, `β = 0.6`. FastVID's global frame features come from a separate pooled embedding; the mean normalised
//! token stands in \[project\]. Complexity: `O(N·D)` plus DPC-kNN per anchor frame (`O(n²·D)`) and the assignment
//! `O(N·anchors·D)`. Source: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models",
//! NeurIPS 2025 (arXiv 2503.11187), LunarShen/FastVID `modeling_qwen2.py`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, dpc_knn, dynamic_segments, split_proportional, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// FastVID (DySeg + STPrune).
#[derive(Debug, Clone, PartialEq)]
pub struct FastVid {
    /// Similarity below which consecutive frames are cut.
    pub tau: f32,
    /// Minimum number of segments (cuts at the `c − 1` least similar transitions).
    pub segments: usize,
    /// Share of each frame's budget given to context anchors.
    pub d: f64,
    /// Anchor frame stride.
    pub p: usize,
    /// Minimum weight of an anchor in its merge.
    pub beta: f32,
}

impl FastVid {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 5] = [
        ParamSpec { name: "tau", default: "0.9", help: "cut between frames whose similarity is below tau" },
        ParamSpec { name: "segments", default: "8", help: "also cut at the segments-1 least similar transitions" },
        ParamSpec { name: "d", default: "0.4", help: "share of each frame's budget given to context anchors" },
        ParamSpec { name: "p", default: "4", help: "anchors come from every p-th frame of a segment" },
        ParamSpec { name: "beta", default: "0.6", help: "minimum weight of an anchor in its merge" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(FastVid {
            tau: p.float_in("tau", -1.0, 1.0)? as f32,
            segments: p.int_at_least("segments", 1)?,
            d: p.float_in("d", 0.0, 1.0)?,
            p: p.int_at_least("p", 1)?,
            beta: p.float_in("beta", 0.0, 1.0)? as f32,
        })
    }

    /// DySeg: segments `(first frame, length)` of one view from consecutive-frame similarities.
    pub fn segment(&self, transitions: &[f32]) -> Vec<(usize, usize)> {
        dynamic_segments(transitions, self.tau, self.segments)
    }
}

impl Pruner for FastVid {
    fn name(&self) -> &'static str {
        "fastvid"
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
        let units = views * frames;
        let x = backend.normalize_rows(tokens.features())?;
        let frame_rows = |f: usize| (f * n..(f + 1) * n).collect::<Vec<_>>();
        let means: Vec<Vec<(usize, f32)>> =
            (0..units).map(|f| frame_rows(f).into_iter().map(|i| (i, 1.0)).collect()).collect();
        let global = backend.normalize_rows(&backend.combine_rows(&x, &means, true)?)?;
        let budget = split_proportional(k, &vec![1.0; units], &vec![n; units]);
        let mut salient_all = Vec::new();
        let mut anchor_groups: Vec<(usize, Vec<(usize, f32)>)> = Vec::new();
        let mut segment_count = 0;
        for v in 0..views {
            let first = v * frames;
            let transitions: Vec<f32> = if frames > 1 {
                let a: Vec<usize> = (first..first + frames - 1).collect();
                let b: Vec<usize> = (first + 1..first + frames).collect();
                backend.rowwise_dots(&backend.gather_rows(&global, &a)?, &backend.gather_rows(&global, &b)?)?
            } else {
                Vec::new()
            };
            for (start, len) in self.segment(&transitions) {
                segment_count += 1;
                let seg_frames: Vec<usize> = (first + start..first + start + len).collect();
                let mut salient_mask = vec![false; len * n];
                let mut ctx_total = 0;
                for (j, &f) in seg_frames.iter().enumerate() {
                    let ctx = (budget[f] as f64 * self.d) as usize;
                    ctx_total += ctx;
                    for p in top_k(&attention[f * n..(f + 1) * n], budget[f] - ctx) {
                        salient_mask[j * n + p] = true;
                        salient_all.push(f * n + p);
                    }
                }
                let anchor_frames: Vec<usize> = (0..len).rev().step_by(self.p).collect();
                let quota = ctx_total / len.div_ceil(self.p);
                let mut anchors = Vec::new();
                for &j in &anchor_frames {
                    let candidates: Vec<usize> =
                        (0..n).filter(|&p| !salient_mask[j * n + p]).map(|p| seg_frames[j] * n + p).collect();
                    if quota == 0 || candidates.is_empty() {
                        continue;
                    }
                    let clusters = dpc_knn(backend, &backend.gather_rows(tokens.features(), &candidates)?, quota, 4)?;
                    anchors.extend(clusters.centres.into_iter().map(|c| candidates[c]));
                }
                if anchors.is_empty() {
                    continue;
                }
                let mut is_anchor = vec![false; len * n];
                anchors.iter().for_each(|&a| is_anchor[a - seg_frames[0] * n] = true);
                let others: Vec<usize> = (0..len * n)
                    .filter(|&q| !salient_mask[q] && !is_anchor[q])
                    .map(|q| seg_frames[0] * n + q)
                    .collect();
                let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); anchors.len()];
                let targets = backend.gather_rows(&x, &anchors)?;
                for block in others.chunks(1024) {
                    let sims = backend.matmul_t(&backend.gather_rows(&x, block)?, &targets)?;
                    for (r, &u) in block.iter().enumerate() {
                        assigned[argmax(&sims[r * anchors.len()..(r + 1) * anchors.len()]).unwrap_or(0)].push(u);
                    }
                }
                for (&a, members) in anchors.iter().zip(assigned) {
                    let cnt = members.len();
                    let wa = if cnt == 0 { 1.0 } else { (1.0 / (cnt as f32 + 1.0)).max(self.beta) };
                    let share = if cnt == 0 { 0.0 } else { (1.0 - wa) / cnt as f32 };
                    let group = std::iter::once((a, wa)).chain(members.into_iter().map(|u| (u, share))).collect();
                    anchor_groups.push((a, group));
                }
            }
        }
        let all: Vec<(usize, Vec<(usize, f32)>)> =
            salient_all.into_iter().map(|i| (i, vec![(i, 1.0)])).chain(anchor_groups).collect();
        Ok(Selection::merged(backend, tokens.features(), all, false, k)?.with_note(format!("{segment_count} segments")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fastvid() -> FastVid {
        FastVid { tau: 0.9, segments: 2, d: 0.4, p: 4, beta: 0.6 }
    }

    #[test]
    fn dyseg_cuts_below_tau_and_at_the_least_similar_transitions() {
        // Transitions after frames 0..4; only 2 -> 3 is below tau; c = 2 adds nothing new.
        assert_eq!(fastvid().segment(&[0.99, 0.95, 0.5, 0.97]), vec![(0, 3), (3, 2)]);
        // No transition below tau: the least similar one is still cut (c = 2).
        assert_eq!(fastvid().segment(&[0.99, 0.95, 0.98]), vec![(0, 2), (2, 2)]);
        assert_eq!(fastvid().segment(&[]), vec![(0, 1)]);
    }
}
