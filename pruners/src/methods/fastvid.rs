//! FastVID: cut the video into segments of similar frames (DySeg), then in each frame keep salient tokens by
//! attention and merge the rest into density-peak anchors (STPrune: ATS + DTM).
//!
//! ```text
//! DySeg:  g_f = frame f's global feature;  cut after f when cos(g_f, g_{f+1}) < τ, and at the c − 1 least similar
//!         transitions
//! R = k div F tokens per frame;  S = R − int(R·d) salient (top attention);  C = int(R·d) context
//! anchors: in a segment of L frames, every p-th frame counted from its end gets A = (C·L) div ceil(L/p) anchors,
//!          the others none; a frame's anchors are the top-A DPC-kNN scores (κ = 4) of its non-salient tokens
//! DTM:    a frame with A = C (a single-frame segment, or p = 1) merges its own non-salient tokens;
//!         in a segment of L > 1, each anchor frame (A > C) merges every non-salient token of the whole segment,
//!         separately from the other anchor frames (a token joins one anchor of each anchor frame)
//!         merge: every member joins its most similar anchor (cosine); the anchor itself is a member;
//!         anchor' = w·anchor + (1 − w)·mean(members),  w = max(1/(count + 1), β)
//! ```
//!
//! Output: salient tokens and merged anchors, ascending by original index (the official final `argsort`), at most
//! `k`. Defaults `τ = 0.9`, `c = 8`, `d = 0.4`, `p = 4`, `β = 0.6`, as the official lmms-eval integration
//! (`lmms_eval/models/llava_onevision.py`; its retention ratio 0.10 is about `--ratio 0.1`). This is the official
//! block of LunarShen/FastVID `fastvid_llavaonevision/LLaVA-NeXT/llava/model/language_model/
//! modeling_qwen2.py` (`Qwen2Model.forward`, the `FastVID` section); proof: `pruners/tests/official_fastvid.rs`
//! against the transcription `tests/official/fastvid/make_fastvid.py`. Complexity `O(N·D)` plus DPC-kNN per frame
//! with anchors (`O(n²·D)`) and the assignment `O(L·n·A·D)` per anchor frame.
//! Source: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025
//! (arXiv 2503.11187).
//!
//! Deviations from the official code:
//! - **Global frame features** come from a separate pooled embedding (the vision abstract) there; the mean of the
//!   frame's L2-normalised tokens stands in \[project\] (the pruner sees the tokens only).
//! - **Budget**: the official per-frame count is `int(n·retention_ratio)`; here `R = k div F` (views × frames), so
//!   `k = F·int(n·ratio)` gives the official result and the output is at most `k`.
//! - **Impossible counts** raise in the official code (`topk` with `c − 1` above the transitions, or an anchor
//!   count above a frame's non-salient tokens); here the cuts take every transition and the anchors every token.
//! - **Noise**: the official density gets `rand·1e-6` to break ties; ties break by the lowest index instead (as
//!   `primitives::dpc_knn`), so results are deterministic. Views are segmented independently.
//! - `merge=pooled` \[project, opt-in\]: in a multi-frame segment the anchors of all anchor frames form one target
//!   set and every non-salient token joins exactly one of them (no token counted once per anchor frame).

use crate::backend::{Backend, Weighted};
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, dpc_knn, dynamic_segments, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// One output token: its original index and the weighted rows it is made of.
type Group = (usize, Vec<Weighted>);

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
    /// Multi-frame segments merge into the pooled anchors of all anchor frames (`merge=pooled`) instead of each
    /// anchor frame's own (the official code).
    pub pooled: bool,
}

impl FastVid {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 6] = [
        ParamSpec { name: "tau", default: "0.9", help: "cut between frames whose similarity is below tau" },
        ParamSpec { name: "segments", default: "8", help: "also cut at the segments-1 least similar transitions" },
        ParamSpec { name: "d", default: "0.4", help: "share of each frame's budget given to context anchors" },
        ParamSpec { name: "p", default: "4", help: "anchors come from every p-th frame of a segment" },
        ParamSpec { name: "beta", default: "0.6", help: "minimum weight of an anchor in its merge" },
        ParamSpec {
            name: "merge",
            default: "official",
            help: "official (each anchor frame merges the whole segment) | pooled (each token joins one anchor)",
        },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(FastVid {
            tau: p.float_in("tau", -1.0, 1.0)? as f32,
            segments: p.int_at_least("segments", 1)?,
            d: p.float_in("d", 0.0, 1.0)?,
            p: p.int_at_least("p", 1)?,
            beta: p.float_in("beta", 0.0, 1.0)? as f32,
            pooled: p.choice("merge", &["official", "pooled"])? == "pooled",
        })
    }

    /// DySeg: segments `(first frame, length)` of one view from consecutive-frame similarities.
    pub fn segment(&self, transitions: &[f32]) -> Vec<(usize, usize)> {
        dynamic_segments(transitions, self.tau, self.segments)
    }

    /// Anchor count of every frame of a segment of `len` frames with `context` context tokens per frame: every
    /// p-th frame counted from the end gets `(context·len) div ceil(len/p)`, the others 0.
    pub fn anchor_counts(&self, len: usize, context: usize) -> Vec<usize> {
        let share = context * len / len.div_ceil(self.p);
        (0..len).map(|j| if (len - 1 - j).is_multiple_of(self.p) { share } else { 0 }).collect()
    }

    /// One DTM merge: every member (global index) joins its most similar anchor by cosine over the normalised
    /// rows `x` (lowest anchor on ties, as `argmax`); each anchor becomes `w·anchor + (1 − w)·mean(members)` with
    /// `w = max(1/(count + 1), β)`. Returns `(anchor, weighted rows)` groups; an anchor among its own members
    /// gets both weights on one row.
    fn merge<B: Backend>(
        &self,
        backend: &B,
        x: &B::Matrix,
        anchors: &[usize],
        members: &[usize],
    ) -> Result<Vec<Group>> {
        if anchors.is_empty() {
            return Ok(Vec::new());
        }
        let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); anchors.len()];
        let targets = backend.gather_rows(x, anchors)?;
        for block in members.chunks(1024) {
            let sims = backend.matmul_t(&backend.gather_rows(x, block)?, &targets)?;
            for (r, &u) in block.iter().enumerate() {
                assigned[argmax(&sims[r * anchors.len()..(r + 1) * anchors.len()]).unwrap_or(0)].push(u);
            }
        }
        Ok(anchors
            .iter()
            .zip(assigned)
            .map(|(&a, members)| {
                let count = members.len();
                let w = (1.0 / (count as f32 + 1.0)).max(self.beta);
                let share = (1.0 - w) / count.max(1) as f32;
                let mut group = vec![(a, w)];
                for u in members {
                    if u == a {
                        group[0].1 += share;
                    } else {
                        group.push((u, share));
                    }
                }
                (a, group)
            })
            .collect())
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
        // One count for every frame, as the official `frame_retain_num`.
        let retain = k / units.max(1);
        let salient_count = retain - (retain as f64 * self.d) as usize;
        let context = retain - salient_count;
        let mut groups: Vec<Group> = Vec::new();
        // Per frame: the non-salient tokens (global indices, ascending) and the anchor count.
        let mut rest: Vec<Vec<usize>> = Vec::with_capacity(units);
        for f in 0..units {
            let salient = top_k(&attention[f * n..(f + 1) * n], salient_count);
            let mut is_salient = vec![false; n];
            for &p in &salient {
                is_salient[p] = true;
                groups.push((f * n + p, vec![(f * n + p, 1.0)]));
            }
            rest.push((0..n).filter(|&p| !is_salient[p]).map(|p| f * n + p).collect());
        }
        // A frame's anchors: the top `count` DPC-kNN scores among its non-salient tokens.
        let anchors_of = |f: usize, count: usize| -> Result<Vec<usize>> {
            if count == 0 || rest[f].is_empty() {
                return Ok(Vec::new());
            }
            let clusters = dpc_knn(backend, &backend.gather_rows(tokens.features(), &rest[f])?, count, 4)?;
            Ok(clusters.centres.into_iter().map(|c| rest[f][c]).collect())
        };
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
                let seg: Vec<usize> = (first + start..first + start + len).collect();
                let counts = self.anchor_counts(len, context);
                // Frames whose count equals the per-frame context merge within themselves (the official
                // "single-frame" path selects them by that equality, whatever their segment).
                for (&f, &count) in seg.iter().zip(&counts) {
                    if count == context {
                        groups.extend(self.merge(backend, &x, &anchors_of(f, count)?, &rest[f])?);
                    }
                }
                if len == 1 {
                    continue;
                }
                let members: Vec<usize> = seg.iter().flat_map(|&f| rest[f].iter().copied()).collect();
                let mut pooled = Vec::new();
                for (&f, &count) in seg.iter().zip(&counts) {
                    if count > context {
                        let anchors = anchors_of(f, count)?;
                        if self.pooled {
                            pooled.extend(anchors);
                        } else {
                            groups.extend(self.merge(backend, &x, &anchors, &members)?);
                        }
                    }
                }
                groups.extend(self.merge(backend, &x, &pooled, &members)?);
            }
        }
        Ok(Selection::merged(backend, tokens.features(), groups, false, k)?
            .with_note(format!("{segment_count} segments")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fastvid() -> FastVid {
        FastVid { tau: 0.9, segments: 2, d: 0.4, p: 4, beta: 0.6, pooled: false }
    }

    #[test]
    fn dyseg_cuts_below_tau_and_at_the_least_similar_transitions() {
        // Transitions after frames 0..4; only 2 -> 3 is below tau; c = 2 adds nothing new.
        assert_eq!(fastvid().segment(&[0.99, 0.95, 0.5, 0.97]), vec![(0, 3), (3, 2)]);
        // No transition below tau: the least similar one is still cut (c = 2).
        assert_eq!(fastvid().segment(&[0.99, 0.95, 0.98]), vec![(0, 2), (2, 2)]);
        assert_eq!(fastvid().segment(&[]), vec![(0, 1)]);
    }

    #[test]
    fn anchors_go_to_every_p_th_frame_from_the_segment_end() {
        // 5 frames, p = 4: frames 4 and 0 get (3·5) div 2 = 7 each; a single frame keeps its own 3.
        assert_eq!(fastvid().anchor_counts(5, 3), vec![7, 0, 0, 0, 7]);
        assert_eq!(fastvid().anchor_counts(3, 3), vec![0, 0, 9]);
        assert_eq!(fastvid().anchor_counts(1, 3), vec![3]);
        assert_eq!(FastVid { p: 1, ..fastvid() }.anchor_counts(3, 2), vec![2, 2, 2]);
    }
}
