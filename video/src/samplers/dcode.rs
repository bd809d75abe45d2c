//! D-CoDe frame selection: a uniform share of the frames plus the frames least similar, on average, to those
//! already chosen.
//!
//! ```text
//! n_u = int(n · uniform_ratio);  S = linspace(0, F − 1, n_u) (truncated)
//! repeat n − n_u times:  S ∪= argmin_{j ∉ S} mean_{s ∈ S} cos(e_j, e_s)
//! ```
//!
//! A running sum of similarities makes the greedy phase `O(n·F)` after `O(n·F·d)` for the similarities needed
//! (no `F x F` matrix). With `n_u = 0` the mean over an empty set is undefined in the reference; frame 0 seeds the
//! greedy phase \[project\]. `n >= F` returns every frame. Ties go to the lower index.
//! Source: D-CoDe, EMNLP 2025 (arXiv 2510.08818), hukcc/D-CoDe `Dcode.py::supp_frame_selection`. Defaults from its
//! scripts: EgoSchema `n = 15`, ratio 0.85.

use super::uniform::{uniform_indices, Uniform};
use super::SampleError;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b) + 1e-8)
}

/// `n` frame indices of the frames with `embeddings` (one per frame), ascending.
pub fn select(embeddings: &[Vec<f32>], n: usize, uniform_ratio: f64) -> Result<Vec<usize>, SampleError> {
    let frames = embeddings.len();
    if frames == 0 {
        return Err(SampleError::NoFrames);
    }
    if !(0.0..=1.0).contains(&uniform_ratio) {
        return Err(SampleError::Param {
            sampler: "dcode",
            reason: format!("uniform_ratio {uniform_ratio} must be in [0, 1]"),
        });
    }
    if n >= frames {
        return Ok((0..frames).collect());
    }
    let n_uniform = (n as f64 * uniform_ratio) as usize;
    let mut chosen = if n_uniform == 0 { vec![0] } else { uniform_indices(frames, n_uniform, Uniform::Inclusive)? };
    chosen.dedup();
    let mut taken = vec![false; frames];
    let mut sums = vec![0f32; frames];
    for &s in &chosen {
        taken[s] = true;
        sums.iter_mut().zip(embeddings).for_each(|(acc, e)| *acc += cosine(e, &embeddings[s]));
    }
    while chosen.len() < n {
        let next = (0..frames).filter(|&j| !taken[j]).min_by(|&a, &b| sums[a].total_cmp(&sums[b]).then(a.cmp(&b)));
        let Some(next) = next else { break };
        taken[next] = true;
        chosen.push(next);
        sums.iter_mut().zip(embeddings).for_each(|(acc, e)| *acc += cosine(e, &embeddings[next]));
    }
    chosen.sort_unstable();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_frames_unlike_the_uniform_ones() {
        // 10 frames; all similar except frames 3 and 6, which differ from everything and from each other.
        let mut e: Vec<Vec<f32>> = (0..10).map(|i| vec![1.0, 0.01 * i as f32, 0.0]).collect();
        e[3] = vec![0.0, 1.0, 0.0];
        e[6] = vec![0.0, 0.0, 1.0];
        // n = 5, ratio 0.6 -> 3 uniform frames (0, 4, 9) + 2 diverse (3 and 6).
        assert_eq!(select(&e, 5, 0.6).unwrap(), vec![0, 3, 4, 6, 9]);
        assert_eq!(select(&e, 2, 0.0).unwrap(), vec![0, 3]);
        assert_eq!(select(&e, 20, 0.85).unwrap().len(), 10);
        assert_eq!(select(&[], 3, 0.5), Err(SampleError::NoFrames));
    }
}
