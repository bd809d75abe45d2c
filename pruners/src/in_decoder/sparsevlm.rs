//! SparseVLM (v1): text "raters" chosen once from the decoder's input embeddings, then at a few decoder layers the
//! visual tokens the raters attend to least are dropped, and the best of the dropped are recycled as merged cluster
//! tokens placed after the kept visual tokens.
//!
//! ```text
//! raters:   m = mean over visual rows of softmax_text(V Tᵀ);  raters = {text j : m_j > mean(m)}  (once, layer-0 input)
//! at layer ℓ ∈ {2, 6, 15}:  score_v = mean over raters r of A^{(ℓ)}[r, v]   (softmax over every key, mean over heads)
//!           keep the top min(k_ℓ, n − 1) of the n visual tokens present (n counts earlier recycled tokens too)
//! recycle:  of the n_p dropped, the n_r = int(0.3·n_p) + 1 best by score -> DPC-kNN (P4) with c = int(n_r/10) + 1
//!           clusters and κ = c neighbours -> one mean token per cluster, in centre-score order
//! layers > ℓ run on  prefix | kept visual | c recycled | text
//! ```
//!
//! `k_ℓ` per `RETAIN_TOKN` (192: 300/200/110, 128: 303/110/36, 96: 238/48/26, 64: 66/30/17). The hidden states that
//! are kept and recycled are layer ℓ's outputs, so in tokensieve's decoder (which drops *before* a layer, reading
//! the attention of the layer before) the stages sit before layers `ℓ + 1`.
//!
//! Complexity: `O(Nv·Nt·D)` for the raters (once), `O(R·S)` per stage for the rater rows (recomputed, §1.8), and
//! `O(n_r²·D)` for the recycling's DPC-kNN. Source: Zhang et al., "SparseVLM: Visual Token Sparsification for
//! Efficient Vision-Language Model Inference", ICML 2025 (arXiv 2410.04417); official code Gumpest/SparseVLMs,
//! `llava/model/language_model/modelling_sparse_llama.py` (`LlamaDynamicvitModel.forward`), `score.py`
//! (`attn_postprocess_topk`, the tables) and `utils.py` (`cluster_and_merge`), `USE_VERSION=1_0`.
//! The selection (raters, `stage`: kept offsets and recycled tokens from given attention rows) is proven against a
//! transcription of those functions by `tests/official_sparsevlm.rs`; the rule in a decoder by
//! `models/tests/in_decoder_rules.rs`.
//!
//! Deviations from the official code:
//! - **Positions** \[project, §1.5\]: by default kept tokens keep their original position ids and recycled tokens
//!   take the id of the last original visual token; `positions=contiguous` renumbers the pruned sequence as the
//!   reference does (`position_ids[:, :len]`, decoding at each layer's cache length).
//! - **Raters when none stands out** \[project\]: when no text token's `m` exceeds the mean (one text token, or all
//!   equal) the reference averages over no rows (NaN scores); here every text token rates. With no text after the
//!   span at all nothing is dropped.
//! - **Ties** break by the lowest index (§1.7) instead of `torch.topk`'s unspecified order, and DPC-kNN breaks
//!   density ties by index (the earlier, better-scored candidate counts as denser) instead of adding `rand · 1e-6`
//!   to the densities. Exact density ties are common here, not corner cases: with one cluster `κ = 1` and every
//!   density is `exp(0)` (harmless: the one cluster is the mean of all candidates either way), and with `κ = 2`
//!   mutual nearest neighbours share their density, where the official centre is then chosen by the noise.
//! - **Merged means** divide by the member count; the reference divides by `count + 1e-6` (relative 1e-6).
//! - **Layers and counts** are parameters (`layers`, `counts`) so decoders shallower than 16 layers can run the
//!   rule; the defaults are the reference's.
//! - SparseVLM+ (`USE_VERSION=2_0`: gravity correction, top-14 heads, no merging) is not implemented.

use super::fastv::top_image_tokens;
use super::{image_columns, StagePlan};
use crate::backend::Backend;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use crate::primitives::{dpc_knn, top_k};
use std::ops::Range;

/// Layers at which SparseVLM prunes (0-based, as in the reference's `layer_idx`).
pub const LAYERS: [usize; 3] = [2, 6, 15];

/// SparseVLM's parameters in the project's spec syntax (`sparsevlm:retain=192,layers=2/6/15`).
pub const PARAMS: [ParamSpec; 5] = [
    ParamSpec {
        name: "retain",
        default: "192",
        help: "nominal RETAIN_TOKN choosing the published schedule (192, 128, 96, 64)",
    },
    ParamSpec {
        name: "layers",
        default: "2/6/15",
        help: "layers (0-based, ascending, `/`-separated) whose rater attention decides; tokens leave after them",
    },
    ParamSpec {
        name: "counts",
        default: "table",
        help: "visual tokens kept after each layer, `/`-separated, or `table` (the schedule of `retain`)",
    },
    ParamSpec {
        name: "recycle",
        default: "true",
        help: "merge the best 30 % of the dropped tokens into cluster tokens",
    },
    ParamSpec {
        name: "positions",
        default: "original",
        help: "original (kept ids, recycled at the last visual id) | contiguous (the reference's renumbering)",
    },
];

/// SparseVLM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseVlm {
    /// The nominal `RETAIN_TOKN` (recorded; `counts` holds the schedule actually used).
    pub retain: usize,
    /// Layers whose attention decides (0-based, ascending); tokens are removed from the layer after each.
    pub layers: Vec<usize>,
    /// Visual tokens kept after each of `layers` (before recycling adds its cluster tokens).
    pub counts: Vec<usize>,
    /// Token recycling on or off.
    pub recycle: bool,
    /// Renumber positions contiguously after each stage (the reference) instead of keeping the original ids.
    pub contiguous: bool,
}

impl Default for SparseVlm {
    fn default() -> Self {
        SparseVlm {
            retain: 192,
            layers: LAYERS.to_vec(),
            counts: vec![300, 200, 110],
            recycle: true,
            contiguous: false,
        }
    }
}

fn param_error(param: &str, reason: String) -> PruneError {
    PruneError::Param { method: "sparsevlm".into(), param: param.into(), reason }
}

/// Parses `a/b/c` into numbers; the error names `param`.
fn slash_list(text: &str, param: &str) -> Result<Vec<usize>> {
    text.split('/')
        .map(|l| l.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| param_error(param, format!("= `{text}` is not `/`-separated whole numbers")))
}

/// Visual tokens kept after layers 2, 6 and 15 for a nominal `RETAIN_TOKN`.
pub fn keep_table(retain: usize) -> Result<[usize; 3]> {
    match retain {
        192 => Ok([300, 200, 110]),
        128 => Ok([303, 110, 36]),
        96 => Ok([238, 48, 26]),
        64 => Ok([66, 30, 17]),
        _ => Err(param_error("retain", format!("= {retain} has no published schedule (192, 128, 96 or 64)"))),
    }
}

impl SparseVlm {
    /// SparseVLM from parsed `key=value` pairs.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("sparsevlm", &PARAMS, given)?;
        let retain: usize = p.get("retain")?;
        let layers = slash_list(p.text("layers")?, "layers")?;
        let counts = match p.text("counts")? {
            "table" => {
                let table = keep_table(retain)?;
                if layers.len() != table.len() {
                    return Err(param_error(
                        "counts",
                        format!("= table has 3 entries but {} layers are given: write the counts", layers.len()),
                    ));
                }
                table.to_vec()
            }
            text => slash_list(text, "counts")?,
        };
        let rule = SparseVlm {
            retain,
            layers,
            counts,
            recycle: p.get("recycle")?,
            contiguous: p.choice("positions", &["original", "contiguous"])? == "contiguous",
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Validates the settings.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() || self.layers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(param_error("layers", format!("= {:?} must be one or more ascending layers", self.layers)));
        }
        if self.counts.len() != self.layers.len() {
            return Err(param_error(
                "counts",
                format!("has {} entries for {} layers", self.counts.len(), self.layers.len()),
            ));
        }
        if self.counts.contains(&0) {
            return Err(param_error("counts", format!("= {:?} must all be at least 1", self.counts)));
        }
        Ok(())
    }

    /// The layers before which tokens are removed (`ℓ + 1` for each deciding layer `ℓ`).
    pub fn drop_layers(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l + 1).collect()
    }

    /// One stage: `rows` are the attention rows of every query after the span (the text, in order), `raters`
    /// index them, `span` is the visual span as it is now (recycled tokens included) and `hidden` its hidden states
    /// `[span.len(), D]` at this point (layer `ℓ`'s outputs). Returns the kept offsets and the recycled tokens.
    pub fn stage<B: Backend>(
        &self,
        backend: &B,
        stage: usize,
        rows: &[Vec<f32>],
        raters: &[usize],
        span: Range<usize>,
        hidden: &B::Matrix,
    ) -> Result<StagePlan<B::Matrix>> {
        let n = span.len();
        let keep_all = || StagePlan::keep((0..n).collect());
        let count = *self
            .counts
            .get(stage)
            .ok_or_else(|| param_error("stage", format!("= {stage} but there are {} stages", self.counts.len())))?;
        let rater_rows: Vec<Vec<f32>> = raters.iter().filter_map(|&r| rows.get(r).cloned()).collect();
        if n == 0 || rater_rows.is_empty() {
            return Ok(keep_all());
        }
        let (hn, _) = backend.shape(hidden);
        if hn != n {
            return Err(PruneError::Shape {
                tensor: "sparsevlm hidden states",
                got: vec![hn],
                expected: format!("{n} rows (the visual span)"),
            });
        }
        let scores = scores(&rater_rows, span)?;
        let kept = select(&scores, count.min(n - 1));
        if !self.recycle {
            return Ok(StagePlan::keep(kept));
        }
        let mut is_kept = vec![false; n];
        kept.iter().for_each(|&i| is_kept[i] = true);
        let pruned: Vec<usize> = (0..n).filter(|&i| !is_kept[i]).collect();
        let pruned_scores: Vec<f32> = pruned.iter().map(|&i| scores[i]).collect();
        let extra = recycle(backend, &backend.gather_rows(hidden, &pruned)?, &pruned_scores)?;
        Ok(StagePlan { kept, replace: None, extra })
    }
}

/// Text positions (indices into `text`) that act as raters; every text position when none exceeds the mean.
pub fn raters<B: Backend>(backend: &B, visual: &B::Matrix, text: &B::Matrix) -> Result<Vec<usize>> {
    let (nv, _) = backend.shape(visual);
    let (nt, _) = backend.shape(text);
    if nt == 0 || nv == 0 {
        return Ok(Vec::new());
    }
    let logits = backend.matmul_t(visual, text)?;
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(PruneError::NonFinite { tensor: "sparsevlm visual x text logits", index: i, value: logits[i] });
    }
    let mut m = vec![0f32; nt];
    for row in logits.chunks(nt) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        m.iter_mut().zip(&exp).for_each(|(acc, e)| *acc += e / sum / nv as f32);
    }
    let mean = m.iter().sum::<f32>() / nt as f32;
    let chosen: Vec<usize> = (0..nt).filter(|&j| m[j] > mean).collect();
    Ok(if chosen.is_empty() { (0..nt).collect() } else { chosen })
}

/// Mean attention of the rater rows over the image columns.
pub fn scores(rater_rows: &[Vec<f32>], image: Range<usize>) -> Result<Vec<f32>> {
    let mut out = vec![0f32; image.len()];
    for row in rater_rows {
        let cols = image_columns(row, &image, "sparsevlm rater row")?;
        out.iter_mut().zip(cols).for_each(|(o, v)| *o += v / rater_rows.len() as f32);
    }
    Ok(out)
}

/// Kept offsets at one pruning layer (the `keep` best, ascending).
pub fn select(scores: &[f32], keep: usize) -> Vec<usize> {
    top_image_tokens(scores, keep.min(scores.len()))
}

/// Recycling: merged tokens `[c, D]` from the pruned tokens' features (rows in sequence order) and scores; `None`
/// when nothing was pruned. The `int(0.3·n) + 1` best are clustered into `int(n_r/10) + 1` groups with as many
/// neighbours in the density, and each cluster becomes its mean; clusters come in centre-score order.
pub fn recycle<B: Backend>(backend: &B, pruned: &B::Matrix, pruned_scores: &[f32]) -> Result<Option<B::Matrix>> {
    if pruned_scores.is_empty() {
        return Ok(None);
    }
    let count = ((pruned_scores.len() as f64 * 0.3) as usize + 1).min(pruned_scores.len());
    let best = top_k(pruned_scores, count);
    let candidates = backend.gather_rows(pruned, &best)?;
    let clusters_wanted = count / 10 + 1;
    let clusters = dpc_knn(backend, &candidates, clusters_wanted, clusters_wanted)?;
    let groups: Vec<Vec<(usize, f32)>> = (0..clusters.centres.len())
        .map(|c| (0..count).filter(|&i| clusters.assignment[i] == c).map(|i| (i, 1.0)).collect())
        .collect();
    Ok(Some(backend.combine_rows(&candidates, &groups, true)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use ndarray::array;

    #[test]
    fn raters_are_the_text_tokens_vision_looks_at() {
        let visual = array![[1.0f32, 0.0], [0.9, 0.1]];
        let text = array![[5.0f32, 0.0], [0.0, 5.0], [-5.0, 0.0]];
        assert_eq!(raters(&CpuBackend, &visual, &text).unwrap(), vec![0]);
        // One text token: nobody exceeds the mean, so it rates.
        assert_eq!(raters(&CpuBackend, &visual, &array![[1.0f32, 2.0]]).unwrap(), vec![0]);
    }

    #[test]
    fn scores_average_raters_and_recycling_makes_clusters() {
        let rows = vec![vec![0.0, 0.5, 0.1, 0.4], vec![0.0, 0.1, 0.5, 0.4]];
        let s = scores(&rows, 1..4).unwrap();
        assert_eq!(select(&s, 1), vec![2]);
        assert_eq!(keep_table(64).unwrap(), [66, 30, 17]);
        assert!(keep_table(100).is_err());
        // 20 pruned: the int(6) + 1 = 7 best form int(7/10) + 1 = 1 cluster, their mean.
        let pruned = ndarray::Array2::from_shape_fn((20, 3), |(i, j)| (i * (j + 1)) as f32);
        let merged = recycle(&CpuBackend, &pruned, &(0..20).map(|i| i as f32).collect::<Vec<_>>()).unwrap().unwrap();
        assert_eq!(merged.nrows(), 1);
        let mean_of_best: f32 = (13..20).map(|i| i as f32).sum::<f32>() / 7.0;
        assert!((merged[[0, 0]] - mean_of_best).abs() < 1e-5);
        // 40 pruned: 13 recycled into 2 clusters.
        let pruned = ndarray::Array2::from_shape_fn((40, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 + 0.01 * i as f32);
        let merged = recycle(&CpuBackend, &pruned, &(0..40).map(|i| i as f32).collect::<Vec<_>>()).unwrap().unwrap();
        assert_eq!(merged.nrows(), 2);
        assert!(recycle(&CpuBackend, &ndarray::Array2::<f32>::zeros((0, 2)), &[]).unwrap().is_none());
    }

    #[test]
    fn a_stage_keeps_at_most_all_but_one_and_recycles_the_rest() {
        // Span 1..5 (4 visual tokens), 2 text rows after it; the second text token rates.
        let rows = vec![vec![0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.0], vec![0.1, 0.4, 0.02, 0.3, 0.08, 0.05, 0.05]];
        let hidden = array![[1.0f32, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]];
        let rule = SparseVlm { counts: vec![10], layers: vec![0], ..SparseVlm::default() };
        let plan = rule.stage(&CpuBackend, 0, &rows, &[1], 1..5, &hidden).unwrap();
        assert_eq!(plan.kept, vec![0, 2, 3], "min(10, n - 1) = 3 kept");
        let extra = plan.extra.unwrap();
        assert_eq!(extra.row(0).to_vec(), vec![0.0, 1.0], "the one dropped token becomes one cluster");
        let off = SparseVlm { recycle: false, ..rule.clone() };
        assert!(off.stage(&CpuBackend, 0, &rows, &[1], 1..5, &hidden).unwrap().extra.is_none());
        assert_eq!(rule.stage(&CpuBackend, 0, &rows, &[], 1..5, &hidden).unwrap().kept, vec![0, 1, 2, 3]);
        assert!(rule.stage(&CpuBackend, 3, &rows, &[1], 1..5, &hidden).is_err(), "no fourth stage");
    }
}
