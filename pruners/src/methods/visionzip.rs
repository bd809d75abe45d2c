//! VisionZip: keep the dominant tokens the CLS token attends to, and fold the rest into a few contextual tokens.
//!
//! ```text
//! dominant   = top-d of CLS attention
//! R          = the other tokens in original order;  targets = R[::max(1, |R|/c)][:c]
//! assign(u)  = argmax_t cos(key_u, key_t)          for every non-target u in R
//! contextual = h_t + mean(h_assigned)              (official; `merge=mean` gives mean(t ∪ assigned), AngelSlim)
//! ```
//!
//! The budget `k` splits as the paper's 54 + 10 (of 64): `dominant = round(k·54/64)`, `contextual = k − dominant`,
//! unless `dominant=` is given. Output is ascending by index (the reference emits dominant then contextual; the
//! decoder sees the same set). Contextual tokens take their target's position. With nothing assigned a contextual
//! token is its target's features \[project\]. Complexity: `O(N log N)` for the ranking plus `O(|R|·c·Dk)` for the
//! assignment. Keys are the ViT keys averaged over heads; without keys the features stand in (noted).
//! Source: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025
//! (arXiv 2412.04467), dvlab-research/VisionZip `visionzip/clip_encoder.py`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// VisionZip dominant + contextual tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionZip {
    /// Dominant tokens; `None` derives `round(k·54/64)`.
    pub dominant: Option<usize>,
    /// `official` (target + mean of assigned) or `mean` (mean of target and assigned).
    pub merge: &'static str,
}

impl VisionZip {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 2] = [
        ParamSpec {
            name: "dominant",
            default: "auto",
            help: "dominant tokens (auto = round(k*54/64)); the rest are contextual",
        },
        ParamSpec { name: "merge", default: "official", help: "official (target + mean) | mean (AngelSlim)" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let dominant = match p.text("dominant")? {
            "auto" => None,
            _ => Some(p.get("dominant")?),
        };
        Ok(VisionZip { dominant, merge: p.choice("merge", &["official", "mean"])? })
    }
}

impl Pruner for VisionZip {
    fn name(&self) -> &'static str {
        "visionzip"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::ClsAttention]
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let attention = tokens.require_cls_attention(self.name())?;
        let dominant_count = self.dominant.unwrap_or_else(|| (k as f64 * 54.0 / 64.0).round() as usize).clamp(1, k);
        let contextual = k - dominant_count;
        let dominant = top_k(attention, dominant_count);
        let mut is_dominant = vec![false; n];
        dominant.iter().for_each(|&i| is_dominant[i] = true);
        let rest: Vec<usize> = (0..n).filter(|&i| !is_dominant[i]).collect();
        let mut groups: Vec<(usize, Vec<(usize, f32)>)> = dominant.iter().map(|&i| (i, vec![(i, 1.0)])).collect();
        let mut note = None;
        if contextual > 0 && !rest.is_empty() {
            let step = (rest.len() / contextual).max(1);
            let targets: Vec<usize> = rest.iter().step_by(step).take(contextual).copied().collect();
            let mut is_target = vec![false; n];
            targets.iter().for_each(|&t| is_target[t] = true);
            let others: Vec<usize> = rest.iter().copied().filter(|&i| !is_target[i]).collect();
            let metric = match tokens.keys() {
                Some(keys) => keys,
                None => {
                    note = Some("no keys: features used as the matching metric");
                    tokens.features()
                }
            };
            let metric = backend.normalize_rows(metric)?;
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); targets.len()];
            if !others.is_empty() {
                let sims = backend
                    .matmul_t(&backend.gather_rows(&metric, &others)?, &backend.gather_rows(&metric, &targets)?)?;
                for (r, &u) in others.iter().enumerate() {
                    let best = argmax(&sims[r * targets.len()..(r + 1) * targets.len()]).unwrap_or(0);
                    members[best].push(u);
                }
            }
            for (&t, assigned) in targets.iter().zip(members) {
                let group = if assigned.is_empty() {
                    vec![(t, 1.0)]
                } else if self.merge == "mean" {
                    std::iter::once(t).chain(assigned).map(|i| (i, 1.0)).collect()
                } else {
                    let w = 1.0 / assigned.len() as f32;
                    std::iter::once((t, 1.0)).chain(assigned.into_iter().map(|i| (i, w))).collect()
                };
                groups.push((t, group));
            }
        }
        let s = Selection::merged(backend, tokens.features(), groups, self.merge == "mean", k)?;
        Ok(match note {
            Some(n) => s.with_note(n),
            None => s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn dominant_by_attention_and_contextual_is_target_plus_mean() {
        let x = array![[10.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0], [2.0, 0.1]];
        let keys = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [0.1, 1.0], [1.0, 0.1]];
        let t = TokenSet::from_array(x)
            .unwrap()
            .with_cls_attention(vec![0.9, 0.0, 0.05, 0.03, 0.02])
            .unwrap()
            .with_keys(&CpuBackend, keys)
            .unwrap();
        let vz = VisionZip { dominant: Some(1), merge: "official" };
        let s = prune(&CpuBackend, &vz, &t, Budget::Keep(3)).unwrap();
        // Dominant: 0. Rest = [1, 2, 3, 4], step 2 -> targets 1 and 3; 2 and 4 match key-wise... 2 -> (1 or 3)?
        // keys: 2 = [1,0] is closer to 3 = [0.1, 1] (cos 0.0995) than to 1 = [0, 1] (cos 0); 4 likewise.
        assert_eq!(s.kept, vec![0, 1, 3]);
        assert_eq!(s.sizes, vec![1, 1, 3]);
        let m = s.merged.unwrap();
        assert_eq!(m.row(1).to_vec(), vec![0.0, 1.0]);
        // Target 3 + mean(2, 4) = [0, 3] + [1.5, 0.05].
        assert!((m[[2, 0]] - 1.5).abs() < 1e-6 && (m[[2, 1]] - 3.05).abs() < 1e-6);
    }
}
