//! CDPruner: conditional DPP — a determinantal point process over query-weighted cosine similarity, solved by fast
//! greedy MAP inference.
//!
//! The kernel `L = diag(r)·S·diag(r)` rewards tokens that are both relevant (`r`) and unlike each other (`S`, the
//! cosine matrix); the greedy MAP picks the token with the largest remaining conditional variance `d²`:
//!
//! ```text
//! raw_i = mean_t( sign · cos(e_i, q_t) )                  (sign = −1 as in the official code)
//! r = (raw − min + 1e−6) / (max − min)                    (the epsilon in the numerator: the least relevant r > 0)
//! L = diag(r)·(X̂X̂ᵀ)·diag(r)
//! d²_i = L_ii;  for t < k:  j = argmax d²;  e = (L_j,: − C[:t, j]ᵀ C[:t, :]) / √d²_j;  C[t] = e;  d² −= e²;  d²_j = −∞
//! kept = sort(picks)
//! ```
//!
//! A row of `L` is `r_j · r ∘ (X̂ x̂_j)`, so the kernel is never stored: `O(k·N·D + k²·N)` time and `O(k·N)`
//! memory (the official code builds `N x N`). Source: Zhang et al., "Beyond Attention or Similarity: Maximizing
//! Conditional Diversity for Token Pruning in MLLMs", NeurIPS 2025 (arXiv 2506.10967); official code
//! Theia-4869/CDPruner, `llava/model/llava_arch.py`, `LlavaMetaForCausalLM.encode_images` (similarity, relevance,
//! kernel and the greedy loop); greedy MAP from Chen et al. 2018. Proven against a transcription of that function
//! by `tests/official_cdpruner.rs`.
//!
//! Inputs: `X` are the tokens' features (the official code normalises the projected `image_features`, with no
//! epsilon; here `x / (‖x‖ + 1e−8)`, so a zero row does not divide by zero). The relevance comes from the
//! `relevance` signal when given: it must be the official *raw* relevance, `mean_t(−cos(image_embeds_i,
//! text_embeds_t))` of the CLIP vision and text towers, before the min-max, which is applied here. Without it,
//! `raw` is computed from the `query` rows with `sign` (−1 by default, the official orientation, which is specific
//! to CLIP's embeddings): against the tokens' query space when they carry one (the pipeline's `--relevance
//! clip:MODEL` gives the checkpoint's layer −2 patch embeddings after post-layernorm and the visual projection and
//! the question's text embeddings: the official inputs), else against the features themselves (the `llm`
//! provider, OpenVINO GenAI's choice \[project\]).
//!
//! Deviations from the official code:
//! - **Exhausted tokens** \[project\]: a token whose conditional variance falls to `d²_i <= 1e−4 · L_ii` lies (up to
//!   float32 rounding) in the span of the picks; it leaves the argmax. In exact arithmetic its `d²` is 0 and the
//!   official loop would not pick it either while a positive one remains, but in float32 its rounding residue (about
//!   1e−7 · `L_ii`) can exceed the true variance of a low-relevance token and differs on every backend. When every
//!   token is exhausted before `k` picks (duplicates, or `k` above the kernel's rank, as when `k > D`) the official
//!   loop takes `√` of a non-positive number (NaN picks); here the rest is filled by relevance, highest first.
//! - **Constant relevance** \[project\]: `max = min` divides by zero officially; here every `r = 1` (plain
//!   diversity).
//! - **Ties** in the argmax go to the lowest index, as `torch.argmax` returns the first maximum.
//! - **Scope of the min-max** \[project\]: on LLaVA-NeXT the official `relevance.min()`/`max()` span every
//!   sub-image of the batch (`B·N` values) while the greedy loop runs per sub-image; here one call scales its own
//!   tokens, so per-sub-image calls scale each sub-image separately (equal for a single image, `B = 1`).
//! - `theta` applies the official code's commented-out sharpening `r ← exp(θ/(2(1−θ))·r)`; 0 (the default) is off,
//!   as in the official code.

use super::query::query_relevance;
use crate::backend::Backend;
use crate::columns::ColumnCache;
use crate::error::{PruneError, Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;
use rayon::prelude::*;

/// CDPruner's conditional DPP.
#[derive(Debug, Clone, PartialEq)]
pub struct CdPruner {
    /// Sign applied to query cosines (−1 reproduces the official code).
    pub sign: f32,
    /// Relevance sharpening `θ ∈ [0, 1)`; 0 = off.
    pub theta: f32,
}

impl CdPruner {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 2] = [
        ParamSpec { name: "sign", default: "-1", help: "-1 (official, CLIP-specific) or 1, on query cosines" },
        ParamSpec { name: "theta", default: "0", help: "relevance sharpening exp(θ/(2(1−θ))·r), 0 = off" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let sign = if p.choice("sign", &["1", "+1", "-1"])? == "-1" { -1.0 } else { 1.0 };
        let theta = p.float_in("theta", 0.0, 0.999)? as f32;
        Ok(CdPruner { sign, theta })
    }
}

impl Pruner for CdPruner {
    fn name(&self) -> &'static str {
        "cdpruner"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let x = backend.normalize_rows(tokens.features())?;
        let raw = match (tokens.relevance(), tokens.query()) {
            (Some(r), _) => r.to_vec(),
            (None, Some(q)) => match tokens.query_space() {
                // A dual encoder's patch embeddings: CDPruner's `image_embeds` (official: the CLIP tower's layer -2
                // patches, post-layernormed and projected), while the kernel's similarity stays on the features.
                Some(space) => query_relevance(backend, &backend.normalize_rows(space)?, q, false, self.sign)?,
                None => query_relevance(backend, &x, q, false, self.sign)?,
            },
            (None, None) => return Err(PruneError::MissingSignal { method: self.name(), signal: Signal::Query }),
        };
        let mut r = relevance_scale(&raw);
        if self.theta > 0.0 {
            let alpha = self.theta / (2.0 * (1.0 - self.theta));
            r.iter_mut().for_each(|v| *v = (alpha * *v).exp());
        }
        let n = tokens.len();
        let self_sim = backend.rowwise_dots(&x, &x)?;
        let diagonal: Vec<f32> = (0..n).map(|i| r[i] * r[i] * self_sim[i]).collect();
        // An exhausted token sits at −∞, like a picked one, so the argmax and the column speculation skip it.
        let mut d2: Vec<f32> = diagonal.iter().map(|&v| if v > 0.0 { v } else { f32::NEG_INFINITY }).collect();
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(k);
        let mut kept = Vec::with_capacity(k);
        let mut taken = vec![false; n];
        let mut columns = ColumnCache::new(backend, &x);
        while kept.len() < k {
            let j = argmax(&d2).ok_or(PruneError::Backend("empty variance vector".into()))?;
            if d2[j] == f32::NEG_INFINITY {
                break;
            }
            // The next picks are likely among the largest remaining conditional variances.
            let sims = columns.column(j, |m| top_k(&d2, m + 1))?;
            let inv = 1.0 / d2[j].sqrt();
            let coeffs: Vec<f32> = rows.iter().map(|c| c[j]).collect();
            // e = (r_j·r∘sims − Σ_t C[t][j]·C[t]) / √d²_j, accumulated row by row so each C[t] streams once.
            let mut e = vec![0f32; n];
            e.par_chunks_mut(2048).enumerate().for_each(|(chunk, out)| {
                let (start, len) = (chunk * 2048, out.len());
                for (o, i) in out.iter_mut().zip(start..) {
                    *o = r[j] * r[i] * sims[i];
                }
                for (c, row) in coeffs.iter().zip(&rows) {
                    out.iter_mut().zip(&row[start..start + len]).for_each(|(o, v)| *o -= c * v);
                }
                out.iter_mut().for_each(|o| *o *= inv);
            });
            d2.iter_mut().zip(&e).zip(&diagonal).for_each(|((d, v), &l)| {
                *d -= v * v;
                if *d <= EXHAUSTED * l {
                    *d = f32::NEG_INFINITY;
                }
            });
            d2[j] = f32::NEG_INFINITY;
            taken[j] = true;
            kept.push(j);
            rows.push(e);
        }
        let mut selection_note = None;
        if kept.len() < k {
            let rest: Vec<f32> = (0..n).map(|i| if taken[i] { f32::NEG_INFINITY } else { r[i] }).collect();
            let fill = top_k(&rest, k - kept.len());
            selection_note =
                Some(format!("kernel exhausted after {} picks; {} filled by relevance", kept.len(), fill.len()));
            kept.extend(fill);
        }
        let s = Selection::from_unsorted(kept, k);
        Ok(match selection_note {
            Some(note) => s.with_note(note),
            None => s,
        })
    }
}

/// A token is exhausted when its conditional variance is below this share of its own `L_ii`: float32 leaves about
/// 1e−7 of it as rounding residue for a token in the span of the picks, so 1e−4 separates the two by a wide margin.
const EXHAUSTED: f32 = 1e-4;

/// The official min-max of the raw relevance, `(raw − min + 1e−6) / (max − min)`; all ones when `max = min`, where
/// the official code divides by zero.
pub fn relevance_scale(raw: &[f32]) -> Vec<f32> {
    let lo = raw.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi - lo <= 0.0 {
        return vec![1.0; raw.len()];
    }
    raw.iter().map(|v| (v - lo + 1e-6) / (hi - lo)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn first_pick_is_most_relevant_then_diverse() {
        // Relevance favours 0 and its near-copy 1; the DPP's second pick is the diverse 2, not the copy.
        let x = array![[1.0f32, 0.0], [0.995, 0.0998], [0.0, 1.0], [-0.7, -0.7]];
        let t = TokenSet::from_array(x).unwrap().with_relevance(vec![1.0, 0.95, 0.6, 0.0]).unwrap();
        let cd = CdPruner { sign: -1.0, theta: 0.0 };
        assert_eq!(prune(&CpuBackend, &cd, &t, Budget::Keep(1)).unwrap().kept, vec![0]);
        assert_eq!(prune(&CpuBackend, &cd, &t, Budget::Keep(2)).unwrap().kept, vec![0, 2]);
    }

    #[test]
    fn the_official_min_max_keeps_the_least_relevant_token_pickable() {
        // (raw − min + 1e−6) / (max − min): over a range of 2 the least relevant keeps 5e−7, not 0.
        let r = relevance_scale(&[2.0, 1.0, 3.0]);
        assert!((r[1] - 5e-7).abs() < 1e-10 && (r[0] - 0.5).abs() < 1e-6 && (r[2] - 1.0).abs() < 1e-6);
        assert_eq!(relevance_scale(&[4.0, 4.0]), vec![1.0, 1.0]);
        // Token 1 duplicates token 0; token 2 is orthogonal and the least relevant. After token 0 the duplicate is
        // exhausted and token 2 still has d² = 1e−12 > 0, so the DPP (not the relevance fill) takes it.
        let x = array![[1.0f32, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        let t = TokenSet::from_array(x).unwrap().with_relevance(vec![0.9, 0.8, 0.0]).unwrap();
        let s = prune(&CpuBackend, &CdPruner { sign: -1.0, theta: 0.0 }, &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.kept, vec![0, 2]);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn duplicates_exhaust_the_kernel_and_are_filled_by_relevance() {
        let x = array![[1.0f32, 0.0], [1.0, 0.0], [1.0, 0.0]];
        let t = TokenSet::from_array(x).unwrap().with_relevance(vec![0.2, 1.0, 0.5]).unwrap();
        let s = prune(&CpuBackend, &CdPruner { sign: -1.0, theta: 0.0 }, &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.kept, vec![1, 2]);
        assert!(s.notes.iter().any(|n| n.contains("exhausted")));
    }

    #[test]
    fn needs_a_query_or_relevance() {
        let t = TokenSet::from_array(array![[1.0f32, 0.0], [0.0, 1.0]]).unwrap();
        let err = prune(&CpuBackend, &CdPruner { sign: -1.0, theta: 0.0 }, &t, Budget::Keep(1)).unwrap_err();
        assert!(matches!(err, PruneError::MissingSignal { signal: Signal::Query, .. }));
    }
}
