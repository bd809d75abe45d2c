//! VisionZip: keep the dominant tokens the CLS token attends to, and fold the rest into a few contextual tokens.
//!
//! ```text
//! dominant   = d tokens: the CLS token + the top-(d − 1) patches of a = Σ_heads attn[h, CLS, patches]
//! R          = the other patches in original order;  targets = R[::max(1, |R| // c)][:c]
//! assign(u)  = argmax_t cos(key_u, key_t)          for every non-target u in R   (first target on ties)
//! contextual = h_t + Σ h_assigned / max(1, |assigned|)   (official; `merge=mean` gives mean(t ∪ assigned), AngelSlim)
//! ```
//!
//! The budget `k` splits as the paper's 54 + 10 (of 64): `dominant d = round(k·54/64)`, `contextual c = k − d`,
//! unless `dominant=` is given. Complexity: `O(N log N)` for the ranking plus `O(|R|·c·Dk)` for the assignment.
//!
//! **The CLS slot.** The official `visionzip(model, dominant, contextual)` passes `dominant − 1` to the encoder,
//! which keeps that many patches by attention and emits the CLS hidden state as the first dominant token, so the
//! decoder gets `1 + (d − 1) + c` rows. tokensieve's token set holds patch rows only (no CLS row), so the default
//! `cls=slot` keeps exactly the official patch rows, `d − 1` dominant patches and `c` contextual tokens, and returns
//! `k − 1` tokens: the official output less its CLS row (a pipeline that has the CLS hidden state can put it back
//! in front). `cls=patch` \[project\] gives the CLS slot to one more patch (`d` patches, `k` tokens), which also
//! moves one patch out of the contextual pool.
//!
//! Signals the pipeline must give for the official behaviour, all from ViT layer −2 (`attentions[-2]`,
//! `hidden_states[-2]`, the keys of `layers[-2]`): `a` = the CLS row of the attention probabilities (softmax over
//! CLS + patches), patch columns, summed or averaged over heads (the ranking is the same); keys = the `k_proj`
//! output of that layer reshaped to heads and **averaged over heads**, patch rows; features = the hidden states,
//! patch rows, **before the projector** (the official code merges them and then applies `mm_projector`). Without
//! keys the features stand in as the matching metric \[project, noted\].
//!
//! Other deviations from the official code, all \[project\]: the output is ascending by index (the official emits
//! CLS, the dominant patches ascending, then the contextual tokens in target order; the decoder sees the same set),
//! contextual tokens take their target's position; `c = 0` keeps no contextual token (the official divides by
//! zero) and `|R| < c` gives `|R|` contextual tokens (the official has a shape error); attention ties go to the
//! lower index (`torch.topk` is unspecified); norms have a `1e-8` guard.
//!
//! Proof: `tests/official_visionzip.rs` against the transcription `tests/official/visionzip/make_visionzip.py`.
//! Source: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025
//! (arXiv 2412.04467), dvlab-research/VisionZip `visionzip/clip_encoder.py::CLIPVisionTower_VisionZip::forward`,
//! `visionzip/main.py::visionzip` (the `dominant − 1`), `visionzip/utils.py::CLIPAttention_forward` (the keys).

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
    /// Dominant tokens, the CLS slot included when `cls = "slot"`; `None` derives `round(k·54/64)`.
    pub dominant: Option<usize>,
    /// `official` (target + mean of assigned) or `mean` (mean of target and assigned).
    pub merge: &'static str,
    /// `slot` (official: one dominant token is the CLS token, absent here, so `k − 1` tokens are returned) or
    /// `patch` (that slot goes to one more patch, `k` tokens).
    pub cls: &'static str,
}

impl VisionZip {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 3] = [
        ParamSpec {
            name: "dominant",
            default: "auto",
            help: "dominant tokens (auto = round(k*54/64)), the CLS slot included; the rest are contextual",
        },
        ParamSpec { name: "merge", default: "official", help: "official (target + mean) | mean (AngelSlim)" },
        ParamSpec {
            name: "cls",
            default: "slot",
            help: "slot (official: the CLS token is a dominant token; it has no row here, so k-1 are returned) | patch",
        },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let dominant = match p.text("dominant")? {
            "auto" => None,
            _ => Some(p.get("dominant")?),
        };
        Ok(VisionZip {
            dominant,
            merge: p.choice("merge", &["official", "mean"])?,
            cls: p.choice("cls", &["slot", "patch"])?,
        })
    }
}

impl Pruner for VisionZip {
    fn name(&self) -> &'static str {
        "visionzip"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::ClsAttention]
    }

    fn exact_budget(&self) -> bool {
        // The official CLS slot has no row in the token set.
        self.cls == "patch"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let attention = tokens.require_cls_attention(self.name())?;
        let dominant_count = self.dominant.unwrap_or_else(|| (k as f64 * 54.0 / 64.0).round() as usize).clamp(1, k);
        let contextual = k - dominant_count;
        let dominant_patches = match self.cls {
            "slot" => dominant_count - 1,
            _ => dominant_count,
        };
        let dominant = top_k(attention, dominant_patches);
        let mut is_dominant = vec![false; n];
        dominant.iter().for_each(|&i| is_dominant[i] = true);
        let rest: Vec<usize> = (0..n).filter(|&i| !is_dominant[i]).collect();
        let mut groups: Vec<(usize, Vec<(usize, f32)>)> = dominant.iter().map(|&i| (i, vec![(i, 1.0)])).collect();
        let mut notes = Vec::new();
        if self.cls == "slot" {
            notes.push(format!("cls slot: {dominant_patches} dominant patches + the CLS token, which has no row here"));
        }
        if contextual > 0 && !rest.is_empty() {
            let step = (rest.len() / contextual).max(1);
            let targets: Vec<usize> = rest.iter().step_by(step).take(contextual).copied().collect();
            let mut is_target = vec![false; n];
            targets.iter().for_each(|&t| is_target[t] = true);
            let others: Vec<usize> = rest.iter().copied().filter(|&i| !is_target[i]).collect();
            let metric = match tokens.keys() {
                Some(keys) => keys,
                None => {
                    notes.push("no keys: features used as the matching metric".into());
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
        let mut s = Selection::merged(backend, tokens.features(), groups, self.merge == "mean", k)?;
        s.notes.extend(notes);
        Ok(s)
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
        let vz = VisionZip { dominant: Some(1), merge: "official", cls: "patch" };
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

    #[test]
    fn the_cls_slot_takes_one_dominant_place_and_no_row() {
        let x = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.2], [0.3, 0.9], [0.2, 0.1]];
        let t = TokenSet::from_array(x).unwrap().with_cls_attention(vec![0.1, 0.5, 0.05, 0.3, 0.02, 0.03]).unwrap();
        let slot = VisionZip { dominant: Some(2), merge: "official", cls: "slot" };
        let s = prune(&CpuBackend, &slot, &t, Budget::Keep(3)).unwrap();
        // One dominant patch (1) besides the CLS slot; rest [0, 2, 3, 4, 5], c = 1 -> target 0, all merged into it.
        assert_eq!(s.kept, vec![0, 1]);
        assert_eq!(s.sizes, vec![5, 1]);
        let patch = VisionZip { cls: "patch", ..slot };
        // Two dominant patches (1, 3); rest [0, 2, 4, 5] -> target 0.
        assert_eq!(prune(&CpuBackend, &patch, &t, Budget::Keep(3)).unwrap().kept, vec![0, 1, 3]);
    }
}
