//! HoliTom's inner-LLM stage: at layer `HOLITOM_k`, keep the image tokens the last token attends to most and fold
//! each dropped token into its most similar kept token.
//!
//! ```text
//! keep top (1 − r) of the last-token attention (r = 0.5);  for each dropped i in order:
//! h_{s(i)} ← (h_{s(i)} + h_i) / 2        (s(i) = the most cosine-similar kept token; later tokens weigh more)
//! ```
//!
//! The sequential halving is order-dependent and reproduced for parity; `true_mean` averages instead. Both are
//! linear in the original rows, so the result is one weighted combination per kept token. Complexity
//! `O(N·k·D)`. Source: HoliTom (NeurIPS 2025), cokeshao/HoliTom `holitom/modeling_qwen2.py`.

use super::fastv::top_image_tokens;
use crate::backend::Backend;
use crate::budget::Budget;
use crate::error::Result;
use crate::primitives::argmax;

/// Kept offsets and the merged hidden states `[k, D]` of the image tokens `hidden` (rows in sequence order).
pub fn merge<B: Backend>(
    backend: &B,
    hidden: &B::Matrix,
    attention: &[f32],
    r: f64,
    true_mean: bool,
) -> Result<(Vec<usize>, B::Matrix)> {
    let n = attention.len();
    let k = Budget::Ratio((1.0 - r).clamp(f64::MIN_POSITIVE, 1.0)).resolve(n)?.k;
    let kept = top_image_tokens(attention, k);
    let mut is_kept = vec![false; n];
    kept.iter().for_each(|&i| is_kept[i] = true);
    let x = backend.normalize_rows(hidden)?;
    let targets = backend.gather_rows(&x, &kept)?;
    let dropped: Vec<usize> = (0..n).filter(|&i| !is_kept[i]).collect();
    let mut weights: Vec<Vec<f32>> = kept
        .iter()
        .map(|&s| {
            let mut w = vec![0f32; n];
            w[s] = 1.0;
            w
        })
        .collect();
    let mut members: Vec<usize> = vec![1; kept.len()];
    if !dropped.is_empty() && !kept.is_empty() {
        let sims = backend.matmul_t(&backend.gather_rows(&x, &dropped)?, &targets)?;
        for (r_i, &i) in dropped.iter().enumerate() {
            let s = argmax(&sims[r_i * kept.len()..(r_i + 1) * kept.len()]).unwrap_or(0);
            members[s] += 1;
            let w = &mut weights[s];
            if true_mean {
                let m = members[s] as f32;
                w.iter_mut().for_each(|v| *v *= (m - 1.0) / m);
                w[i] += 1.0 / m;
            } else {
                w.iter_mut().for_each(|v| *v *= 0.5);
                w[i] += 0.5;
            }
        }
    }
    let groups: Vec<Vec<(usize, f32)>> = weights
        .iter()
        .map(|w| w.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, v)| (i, *v)).collect())
        .collect();
    Ok((kept, backend.combine_rows(hidden, &groups, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use ndarray::array;

    #[test]
    fn sequential_halving_weighs_later_tokens_more() {
        let h = array![[1.0f32, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]];
        let attn = [0.9, 0.01, 0.02, 0.5];
        let (kept, merged) = merge(&CpuBackend, &h, &attn, 0.5, false).unwrap();
        assert_eq!(kept, vec![0, 3]);
        // Token 0 absorbs 1 then 2: ((h0 + h1)/2 + h2)/2.
        assert!((merged[[0, 0]] - ((1.0 + 0.9) / 2.0 + 0.8) / 2.0).abs() < 1e-6);
        let (_, mean) = merge(&CpuBackend, &h, &attn, 0.5, true).unwrap();
        assert!((mean[[0, 0]] - 0.9).abs() < 1e-6);
    }
}
