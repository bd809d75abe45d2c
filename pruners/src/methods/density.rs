//! LangDC-style density-adaptive budgets: rich clips get more of the video's token budget than static ones.
//!
//! LangDC lets a small captioning LM decide: long captions (rich clips) mean more tokens. This training-free
//! stand-in keeps visual tokens and measures richness directly:
//!
//! ```text
//! τ_c = mean over consecutive frame pairs and positions of (1 − cos(x_{f,p}, x_{f+1,p}))     (temporal change)
//! σ_c = 1 − ‖mean over the clip's tokens of x̂‖₂                                            (spatial spread)
//! ρ_c = w·τ_c + (1 − w)·σ_c   (single-frame clips: σ_c)
//! b_c = b_min + (B − C·b_min)·ρ_c / Σρ   (largest remainders, capped at N_c, excess re-split by ρ)
//! ```
//!
//! If `B < C·b_min` the floor becomes `⌊B/C⌋` and the remainder goes to the richest clips. Each clip then runs the
//! inner selector (default ToDRE stage 1) for its `b_c` tokens. Clips are `clip_frames` consecutive frames of one
//! view (LangDC's chunk size 4); a flat layout is a single clip. Complexity: `O(N·D)` for richness plus the inner
//! selector per clip. Defaults: `clip_frames = 4`, `w = 0.5`, `b_min = 1`, `inner = todre`.
//! Source: Wang et al., "Seeing More, Saying More: Lightweight Language Experts are Dynamic Video Token
//! Compressors" (LangDC), EMNLP 2025 (arXiv 2509.00969); stand-in specified in ALGORITHMS.md §3.4.2 \[project\].

use crate::backend::Backend;
use crate::error::Result;
use crate::params::{ParamSpec, Params};
use crate::primitives::{split_proportional, top_k};
use crate::pruner::{prune, Pruner};
use crate::selection::Selection;
use crate::token_set::TokenSet;
use crate::{Budget, Method};

/// Inner selectors a clip may use (all keep exactly their share).
pub const INNER: [&str; 5] = ["todre", "kcenter", "divprune", "mmr", "random"];

/// Density-adaptive allocation across clips.
#[derive(Debug, Clone, PartialEq)]
pub struct Density {
    /// Frames per clip.
    pub clip_frames: usize,
    /// Weight of temporal change against spatial spread.
    pub w: f64,
    /// Floor per clip.
    pub b_min: usize,
    /// Inner selector name (one of [`INNER`]).
    pub inner: &'static str,
}

impl Density {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 4] = [
        ParamSpec { name: "clip_frames", default: "4", help: "frames per clip (LangDC's chunk size)" },
        ParamSpec { name: "w", default: "0.5", help: "weight of temporal change vs spatial spread" },
        ParamSpec { name: "b_min", default: "1", help: "tokens every clip keeps at least" },
        ParamSpec {
            name: "inner",
            default: "todre",
            help: "selector inside each clip: todre | kcenter | divprune | mmr | random",
        },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(Density {
            clip_frames: p.int_at_least("clip_frames", 1)?,
            w: p.float_in("w", 0.0, 1.0)?,
            b_min: p.get("b_min")?,
            inner: p.choice("inner", &INNER)?,
        })
    }

    /// Token budgets per clip for total `budget` given richness `rho` and clip sizes.
    pub fn allocate(&self, budget: usize, rho: &[f64], sizes: &[usize]) -> Vec<usize> {
        let clips = rho.len();
        let mut floor = self.b_min;
        let mut base = vec![0usize; clips];
        if budget < clips * floor {
            floor = budget / clips;
            let remainder = budget - floor * clips;
            let rho32: Vec<f32> = rho.iter().map(|&r| r as f32).collect();
            for c in top_k(&rho32, remainder) {
                base[c] += 1;
            }
        }
        base.iter_mut().zip(sizes).for_each(|(b, &s)| *b = (*b + floor).min(s));
        let rest = budget.saturating_sub(base.iter().sum());
        let caps: Vec<usize> = sizes.iter().zip(&base).map(|(s, b)| s - b).collect();
        split_proportional(rest, rho, &caps).iter().zip(&base).map(|(extra, b)| extra + b).collect()
    }
}

/// Clips as `(first token, frames)`: consecutive frames within each view.
fn clips(frames_per_view: usize, views: usize, clip_frames: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for v in 0..views {
        let mut f = 0;
        while f < frames_per_view {
            let len = clip_frames.min(frames_per_view - f);
            out.push((v * frames_per_view + f, len));
            f += len;
        }
    }
    out
}

impl Pruner for Density {
    fn name(&self) -> &'static str {
        "density"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let layout = tokens.layout();
        let per_frame = layout.tokens_per_frame(n);
        let views = match layout {
            crate::Layout::Grid { views, .. } => views,
            crate::Layout::Flat => 1,
        };
        let clip_list = clips(layout.frames_per_view(), views, self.clip_frames);
        let x = backend.normalize_rows(tokens.features())?;
        let mut rho = Vec::with_capacity(clip_list.len());
        let mut members = Vec::with_capacity(clip_list.len());
        for &(first_frame, len) in &clip_list {
            let idx: Vec<usize> = (first_frame * per_frame..(first_frame + len) * per_frame).collect();
            let mean =
                backend.download(&backend.combine_rows(&x, &[idx.iter().map(|&i| (i, 1.0)).collect()], true)?)?;
            let spread = 1.0 - mean.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let richness = if len < 2 {
                spread
            } else {
                let a: Vec<usize> = idx[..(len - 1) * per_frame].to_vec();
                let b: Vec<usize> = idx[per_frame..].to_vec();
                let cos = backend.rowwise_dots(&backend.gather_rows(&x, &a)?, &backend.gather_rows(&x, &b)?)?;
                let change = cos.iter().map(|c| 1.0 - *c as f64).sum::<f64>() / cos.len() as f64;
                self.w * change + (1.0 - self.w) * spread
            };
            rho.push(richness.max(0.0));
            members.push(idx);
        }
        let sizes: Vec<usize> = members.iter().map(Vec::len).collect();
        let budgets = self.allocate(k, &rho, &sizes);
        let (inner, _) = Method::build(self.inner, &[])?;
        let mut kept = Vec::with_capacity(k);
        for (idx, &b) in members.iter().zip(&budgets) {
            if b == 0 {
                continue;
            }
            let clip = tokens.subset(backend, idx)?;
            let chosen = prune(backend, &inner, &clip, Budget::Keep(b))?;
            kept.extend(chosen.kept.into_iter().map(|i| idx[i]));
        }
        let summary: Vec<String> = budgets.iter().zip(&rho).map(|(b, r)| format!("{b}@{r:.3}")).collect();
        Ok(Selection::from_unsorted(kept, k)
            .with_note(format!("clip budgets (tokens@richness): {}", summary.join(" "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Budget, CpuBackend, Layout};

    fn density() -> Density {
        Density { clip_frames: 2, w: 0.5, b_min: 1, inner: "todre" }
    }

    #[test]
    fn allocation_is_exact_floored_and_capped() {
        let d = density();
        assert_eq!(d.allocate(10, &[1.0, 1.0], &[100, 100]), vec![5, 5]);
        assert_eq!(d.allocate(10, &[0.0, 1.0], &[100, 100]), vec![1, 9]);
        assert_eq!(d.allocate(10, &[0.0, 1.0], &[100, 4]), vec![6, 4]);
        // Budget below the floors: one each to the richest.
        assert_eq!(d.allocate(2, &[0.1, 0.5, 0.3], &[9, 9, 9]), vec![0, 1, 1]);
        assert_eq!(d.allocate(7, &[0.0, 0.0], &[9, 9]), vec![4, 3]);
    }

    #[test]
    fn the_changing_clip_gets_the_larger_share() {
        // 4 frames of 4 tokens, clips of 2 frames. Clip 0 is static (frame 1 = frame 0); clip 1 changes.
        let static_frame = [[1.0f32, 0.0, 0.0], [0.9, 0.1, 0.0], [0.8, 0.0, 0.2], [1.0, 0.1, 0.1]];
        let mut rows: Vec<f32> = Vec::new();
        for _ in 0..2 {
            rows.extend(static_frame.iter().flatten());
        }
        rows.extend([[0.0f32, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]].iter().flatten());
        rows.extend([[0.0f32, 0.0, -1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [-1.0, 0.0, 0.0]].iter().flatten());
        let x = ndarray::Array2::from_shape_vec((16, 3), rows).unwrap();
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(4, 2, 2)).unwrap();
        let s = prune(&CpuBackend, &density(), &t, Budget::Keep(6)).unwrap();
        assert_eq!(s.kept.len(), 6);
        let in_second = s.kept.iter().filter(|&&i| i >= 8).count();
        assert!(in_second >= 4, "changing clip got {in_second} of 6: {:?}", s.notes);
    }
}
