//! SparseVLM: text "raters" chosen once, then at layers 2, 6 and 15 the visual tokens they attend to least are
//! dropped, and the best of the dropped are recycled as merged cluster tokens.
//!
//! ```text
//! raters:   m = mean over visual rows of softmax_text(V Tᵀ);  raters = {text j : m_j > mean(m)}
//! score_v = mean over raters of A^{(ℓ)}[rater, v]        keep top-k_ℓ (table below), ascending
//! recycle:  top 30 % of the pruned by score -> DPC-kNN with n_r/10 + 1 clusters -> one mean token per cluster
//! ```
//!
//! `k_ℓ` per `RETAIN_TOKN` (192: 300/200/110, 128: 303/110/36, 96: 238/48/26, 64: 66/30/17). Recycled tokens are
//! synthetic: they go after the kept visual tokens with the position of the last original visual token (§1.5).
//! Complexity: `O(Nv·Nt·D)` for the raters once, `O(R·N)` per layer. Source: Zhang et al., "SparseVLM: Visual
//! Token Sparsification for Efficient Vision-Language Model Inference", ICML 2025 (arXiv 2410.04417),
//! Gumpest/SparseVLMs `modelling_sparse_llama.py`, `score.py` (v1).

use super::fastv::top_image_tokens;
use super::image_columns;
use crate::backend::Backend;
use crate::error::{PruneError, Result};
use crate::primitives::{dpc_knn, top_k};
use std::ops::Range;

/// Layers at which SparseVLM prunes (0-based, as in the reference's `layer_idx`).
pub const LAYERS: [usize; 3] = [2, 6, 15];

/// Visual tokens kept after layers 2, 6 and 15 for a nominal `RETAIN_TOKN`.
pub fn keep_table(retain: usize) -> Result<[usize; 3]> {
    match retain {
        192 => Ok([300, 200, 110]),
        128 => Ok([303, 110, 36]),
        96 => Ok([238, 48, 26]),
        64 => Ok([66, 30, 17]),
        _ => Err(PruneError::Param {
            method: "sparsevlm".into(),
            param: "retain".into(),
            reason: format!("= {retain} has no published schedule (192, 128, 96 or 64)"),
        }),
    }
}

/// Text positions (indices into `text`) that act as raters.
pub fn raters<B: Backend>(backend: &B, visual: &B::Matrix, text: &B::Matrix) -> Result<Vec<usize>> {
    let (nv, _) = backend.shape(visual);
    let (nt, _) = backend.shape(text);
    if nt == 0 || nv == 0 {
        return Ok(Vec::new());
    }
    let logits = backend.matmul_t(visual, text)?;
    let mut m = vec![0f32; nt];
    for row in logits.chunks(nt) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        m.iter_mut().zip(&exp).for_each(|(acc, e)| *acc += e / sum / nv as f32);
    }
    let mean = m.iter().sum::<f32>() / nt as f32;
    Ok((0..nt).filter(|&j| m[j] > mean).collect())
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

/// Kept offsets at one pruning layer.
pub fn select(scores: &[f32], keep: usize) -> Vec<usize> {
    top_image_tokens(scores, keep.min(scores.len()))
}

/// Recycling: merged tokens `[c, D]` from the pruned tokens' features and scores.
pub fn recycle<B: Backend>(backend: &B, pruned: &B::Matrix, pruned_scores: &[f32]) -> Result<Option<B::Matrix>> {
    let count = (pruned_scores.len() as f64 * 0.3) as usize;
    if count == 0 {
        return Ok(None);
    }
    let best = top_k(pruned_scores, count);
    let candidates = backend.gather_rows(pruned, &best)?;
    let clusters = dpc_knn(backend, &candidates, count / 10 + 1, 7.min(count))?;
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
    }

    #[test]
    fn scores_average_raters_and_recycling_makes_clusters() {
        let rows = vec![vec![0.0, 0.5, 0.1, 0.4], vec![0.0, 0.1, 0.5, 0.4]];
        let s = scores(&rows, 1..4).unwrap();
        assert_eq!(select(&s, 1), vec![2]);
        assert_eq!(keep_table(64).unwrap(), [66, 30, 17]);
        assert!(keep_table(100).is_err());
        let pruned = ndarray::Array2::from_shape_fn((20, 3), |(i, j)| (i * (j + 1)) as f32);
        let merged = recycle(&CpuBackend, &pruned, &(0..20).map(|i| i as f32).collect::<Vec<_>>()).unwrap().unwrap();
        assert_eq!(merged.nrows(), 1);
    }
}
