//! HoliTom (outer-LLM stage): segment the video where tokens stop being static, average static tokens over time,
//! and keep the dynamic ones by attention or merge them by density peaks.
//!
//! ```text
//! sim[t][p] = cos(x_{t,p}, x_{t+1,p})
//! count[s][e] = #{p : sim[t][p] > τ for all t in [s, e)} · (e − s)
//! dp[i] = max( dp[i−1], max_{s ≥ i−W} dp[s] + count[s][i−1] )     (W = 1024, strict >, shortest window first)
//! static p in a window → one token, the mean over the window's frames; the rest stay per frame (dynamic)
//! r' = min( r / ((F·n − dp[F]) / (F·n)), 1 )                        (the ratio rescaled for what averaging removed)
//! each frame's n_d dynamic tokens: c = ⌈n_d·r'⌉; the round(c·(1 − D)) with the most attention stay, and
//!   c − that many DPC-kNN centres of the others (κ = min(K, clusters)) merge the rest;
//! a window's n_s static tokens: round(n_s·r') DPC-kNN centres (κ = min(K, clusters));
//! a cluster with members = β·centre + (1 − β)·mean(members), alone = its centre       (round = half to even)
//! ```
//!
//! Defaults are the official ones: `τ = 0.65` (the scripts use 0.80 for 15–25 % budgets), `β = 0.6`, `D = 0`
//! (no script sets it, so every dynamic token kept is kept by attention and only static tokens are clustered),
//! `K = 7`, `W = 1024`. A merged token takes its centre's index; a static token the index of its position in the
//! window's first frame. The inner-LLM stage is `in_decoder::holitom_inner`. Complexity: `O(F·W·n)` for the DP
//! plus `O(m²·D)` DPC-kNN per group. Source: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large
//! Language Models", NeurIPS 2025 (arXiv 2505.21334); official code cokeshao/HoliTom `holitom/llava_arch.py`,
//! `LlavaMetaForCausalLM_holitom` (`select_static_windows`, `get_static_dynamic_features`,
//! `merge_tokens_by_attention_density`, `merge_tokens_by_density`, `merge_tokens_by_clustering`,
//! `cluster_dpc_knn`, and the video branch of `prepare_inputs_labels_for_multimodal`). Proven against a
//! transcription of those functions by `tests/official_holitom.rs`.
//!
//! Inputs the pipeline must hand over: the features are the pooled per-frame tokens (the official code works on
//! `get_2dPool(mm_projector(SigLIP))`), and the `cls_attention` signal is the official saliency: the last SigLIP
//! layer's attention averaged over heads and over every query (`attentions[-1].mean(1).mean(1)`, the attention
//! each patch *receives*), pooled by the same `get_2dPool` as the features.
//!
//! Deviations from the official code:
//! - **Budget** \[project\]: the official rule is [`HoliTom::select_ratio`] (a keep ratio, `⌈·⌉` per frame, so it
//!   returns more than `ratio·N` tokens). Through [`crate::prune`], whose contract is at most `k` tokens, `k` is
//!   split over every frame's dynamic group and every window's static group in proportion to their sizes (largest
//!   remainders): the same share `k / Σ sizes` as `r'`, made exact; exactly `k` unless averaging left fewer.
//! - **Density ties** break by index (the lower index counts as denser) instead of the official `rand · 1e−6`
//!   noise, and centre-score ties go to the lower index; with `κ = 1` every density is equal, so the official
//!   single centre is a random token and here it is the first.
//! - **Views** are separate videos, each with its own `r'` (the official loop over a batch of videos reassigns
//!   `retain_ratio` in place, so a second video would be rescaled twice).

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
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
    /// Share of each dynamic frame budget spent on merged clusters instead of top attention (official `D`).
    pub d: f64,
    /// Weight of a cluster's centre in its merge.
    pub beta: f32,
    /// Cap on DPC-kNN's neighbour count: `κ = min(K, clusters)` (official `K`).
    pub knn: usize,
}

impl Default for HoliTom {
    fn default() -> Self {
        HoliTom { tau: 0.65, max_window: 1024, d: 0.0, beta: 0.6, knn: 7 }
    }
}

/// A token as a weighted sum of original rows.
type Virtual = Vec<(usize, f32)>;

/// One group of virtual tokens that shares a budget: a window's static tokens or one frame's dynamic tokens.
struct Group {
    is_static: bool,
    /// The view (video) it belongs to.
    view: usize,
    /// `(representative index, weights)` per token.
    members: Vec<(usize, Virtual)>,
}

/// The segmentation of every view: the groups, the windows, and per view the tokens averaging removed.
struct Segmentation {
    groups: Vec<Group>,
    windows: usize,
    /// `(tokens, removed)` per view: `F·n` and the DP's `dp[F]`.
    views: Vec<(usize, usize)>,
}

impl HoliTom {
    /// Parameters and defaults (the official ones).
    pub const PARAMS: [ParamSpec; 5] = [
        ParamSpec { name: "tau", default: "0.65", help: "static threshold on consecutive-frame cosine" },
        ParamSpec { name: "max_window", default: "1024", help: "longest temporal window of the segmentation" },
        ParamSpec { name: "d", default: "0", help: "share of a dynamic frame's budget given to merged clusters" },
        ParamSpec { name: "beta", default: "0.6", help: "weight of a cluster centre in its merge" },
        ParamSpec { name: "knn", default: "7", help: "DPC-kNN neighbour cap K: min(K, clusters) neighbours" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(HoliTom {
            tau: p.float_in("tau", -1.0, 1.0)? as f32,
            max_window: p.int_at_least("max_window", 1)?,
            d: p.float_in("d", 0.0, 1.0)?,
            beta: p.float_in("beta", 0.0, 1.0)? as f32,
            knn: p.int_at_least("knn", 1)?,
        })
    }

    /// Optimal windows `(start, len)` of `frames` frames from `sim[t][p]` (transition t -> t+1).
    pub fn windows(&self, sim: &[Vec<f32>], frames: usize) -> Vec<(usize, usize)> {
        self.segment(sim, frames).0
    }

    /// The DP's windows and its value `dp[F]`, the tokens that averaging static positions removes.
    fn segment(&self, sim: &[Vec<f32>], frames: usize) -> (Vec<(usize, usize)>, usize) {
        let mut dp = vec![0u64; frames + 1];
        let mut back = vec![0usize; frames + 1];
        for i in 1..=frames {
            dp[i] = dp[i - 1];
            back[i] = i - 1;
            let positions = sim.first().map_or(0, Vec::len);
            let mut static_mask = vec![true; positions];
            let lowest = (i - 1).saturating_sub(self.max_window - 1);
            // Shortest window first with a strict `>`, as the official loop over `window_size` ascending.
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
        (out, dp[frames] as usize)
    }

    /// Merges `members` (virtual tokens, rows of `feats`) into `b` DPC-kNN clusters with `min(K, b)` neighbours:
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
        let clusters = dpc_knn(backend, &m, b, self.knn.min(b))?;
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

    /// Windows every view and splits its tokens into static groups (one per multi-frame window) and dynamic
    /// groups (one per frame), in the official order.
    fn groups<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>) -> Result<Segmentation> {
        let (views, frames, h, w) = tokens.grid(self.name())?;
        let n = h * w;
        let x = backend.normalize_rows(tokens.features())?;
        let mut groups = Vec::new();
        let mut windows = 0;
        let mut per_view = Vec::with_capacity(views);
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
            let (spans, removed) = self.segment(&sim, frames);
            per_view.push((frames * n, removed));
            for (start, len) in spans {
                windows += 1;
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
                    groups.push(Group { is_static: true, view: v, members: statics });
                }
                for f in start..start + len {
                    let dynamic: Vec<(usize, Virtual)> = (0..n)
                        .filter(|&p| !is_static[p])
                        .map(|p| ((base + f) * n + p, vec![((base + f) * n + p, 1.0)]))
                        .collect();
                    if !dynamic.is_empty() {
                        groups.push(Group { is_static: false, view: v, members: dynamic });
                    }
                }
            }
        }
        Ok(Segmentation { groups, windows, views: per_view })
    }

    /// Reduces every group to its budget: static groups to `b` clusters, a dynamic frame to its
    /// `round(b·(1 − D))` most attended tokens plus `b − that` clusters of the others.
    fn reduce<B: Backend>(
        &self,
        backend: &B,
        tokens: &TokenSet<B::Matrix>,
        groups: &[Group],
        budgets: &[usize],
    ) -> Result<Vec<(usize, Virtual)>> {
        let attention = tokens.require_cls_attention(self.name())?;
        let mut out: Vec<(usize, Virtual)> = Vec::new();
        for (group, &b) in groups.iter().zip(budgets) {
            let members = &group.members;
            if group.is_static || b >= members.len() {
                out.extend(self.cluster(backend, tokens.features(), members, b)?);
                continue;
            }
            // Python's round(): half to even, as `round(ceil(n·r') · (1 − D))`.
            let top = ((b as f64) * (1.0 - self.d)).round_ties_even() as usize;
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
        Ok(out)
    }

    /// The official budget rule for a keep ratio `r ∈ (0, 1]`: per view `r' = min(r / ((F·n − removed)/(F·n)), 1)`,
    /// `⌈n_d·r'⌉` for each frame's dynamic tokens and `round(n_s·r')` clusters for each window's static tokens. It
    /// can return more than `round(r·N)` tokens (the `⌈·⌉` per frame), which [`crate::prune`] does not allow; call
    /// it directly for the official counts.
    pub fn select_ratio<B: Backend>(
        &self,
        backend: &B,
        tokens: &TokenSet<B::Matrix>,
        ratio: f64,
    ) -> Result<Selection<B::Matrix>> {
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(PruneError::Budget {
                value: format!("ratio {ratio}"),
                reason: "a kept fraction must be in (0, 1]",
            });
        }
        tokens.require_cls_attention(self.name())?;
        let requested = ((ratio * tokens.len() as f64).round_ties_even() as usize).min(tokens.len());
        if tokens.is_empty() {
            return Ok(Selection::pruned(Vec::new(), 0));
        }
        let seg = self.groups(backend, tokens)?;
        // The same float expressions as the official Python, so `⌈·⌉` and `round` see the same values.
        let rescaled: Vec<f64> = seg
            .views
            .iter()
            .map(|&(total, removed)| {
                let total = total as f64;
                (ratio / ((total - removed as f64) / total)).min(1.0)
            })
            .collect();
        let budgets: Vec<usize> = seg
            .groups
            .iter()
            .map(|g| {
                let exact = g.members.len() as f64 * rescaled[g.view];
                if g.is_static {
                    exact.round_ties_even() as usize
                } else {
                    exact.ceil() as usize
                }
            })
            .collect();
        let out = self.reduce(backend, tokens, &seg.groups, &budgets)?;
        let count = out.len();
        Ok(Selection::merged(backend, tokens.features(), out, false, requested)?
            .with_note(format!("{} temporal windows", seg.windows))
            .with_note(format!("official ratio rule: {count} tokens for ratio {ratio}")))
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
        let seg = self.groups(backend, tokens)?;
        let sizes: Vec<usize> = seg.groups.iter().map(|g| g.members.len()).collect();
        let weights: Vec<f64> = sizes.iter().map(|&s| s as f64).collect();
        let budgets = split_proportional(k, &weights, &sizes);
        let out = self.reduce(backend, tokens, &seg.groups, &budgets)?;
        Ok(Selection::merged(backend, tokens.features(), out, false, k)?
            .with_note(format!("{} temporal windows", seg.windows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dp_groups_static_frames_into_one_window() {
        let h = HoliTom::default();
        // 4 frames, 2 positions: frames 0-2 static at both positions, 2 -> 3 changes everywhere.
        let sim = vec![vec![0.9, 0.9], vec![0.9, 0.9], vec![0.1, 0.2]];
        assert_eq!(h.windows(&sim, 4), vec![(0, 3), (3, 1)]);
        // Nothing static: every frame is its own window.
        assert_eq!(h.windows(&[vec![0.0], vec![0.0]], 3), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn the_ratio_rule_checks_its_ratio_and_signals() {
        use crate::{CpuBackend, Layout, PruneError};
        // Frame 1 negates frame 0: every consecutive cosine is −1, so nothing is static.
        let x = ndarray::Array2::from_shape_fn((8, 3), |(i, j)| {
            let v = if i % 4 == j || i % 4 == 3 { 1.0 } else { 0.0 };
            if i < 4 {
                v
            } else {
                -v
            }
        });
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(2, 2, 2)).unwrap();
        let h = HoliTom::default();
        let missing = h.select_ratio(&CpuBackend, &t, 0.5).unwrap_err();
        assert!(matches!(missing, PruneError::MissingSignal { signal: Signal::ClsAttention, .. }));
        let t = t.with_cls_attention(vec![1.0; 8]).unwrap();
        for bad in [0.0, 1.5, f64::NAN] {
            assert!(matches!(h.select_ratio(&CpuBackend, &t, bad), Err(PruneError::Budget { .. })), "{bad}");
        }
        // Ratio 1 keeps every token of a video with nothing static: r' = 1 and ⌈n·1⌉ = n per frame.
        assert_eq!(h.select_ratio(&CpuBackend, &t, 1.0).unwrap().kept, (0..8).collect::<Vec<_>>());
    }
}
