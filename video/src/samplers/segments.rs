//! Temporal segments of a video from global frame features (FastVID's DySeg), for the pruners and for reports.
//!
//! Cut between frames `t` and `t + 1` when `cos(g_t, g_{t+1}) < τ`, and at the `c − 1` least similar transitions
//! (`τ = 0.9`, `c = 8` in FastVID). The rule itself lives in `tokensieve_pruners::primitives::dynamic_segments`, the
//! same function the FastVID pruner uses, so a segmentation reported here is the one that pruner applies.
//! `O(F·d)` for the similarities.

use tokensieve_pruners::primitives::dynamic_segments;

/// A run of consecutive frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First frame (index into the embeddings).
    pub start: usize,
    /// Number of frames.
    pub len: usize,
}

/// Segments of frames with `embeddings` (one per frame).
pub fn segments(embeddings: &[Vec<f32>], tau: f32, min_segments: usize) -> Vec<Segment> {
    if embeddings.is_empty() {
        return Vec::new();
    }
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b) + 1e-8)
    };
    let transitions: Vec<f32> = embeddings.windows(2).map(|w| cos(&w[0], &w[1])).collect();
    dynamic_segments(&transitions, tau, min_segments).into_iter().map(|(start, len)| Segment { start, len }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scene_cut_splits_the_video() {
        let e = vec![vec![1.0, 0.0], vec![0.99, 0.05], vec![0.0, 1.0], vec![0.02, 1.0]];
        assert_eq!(segments(&e, 0.9, 1), vec![Segment { start: 0, len: 2 }, Segment { start: 2, len: 2 }]);
        assert_eq!(segments(&e[..1], 0.9, 8), vec![Segment { start: 0, len: 1 }]);
        assert!(segments(&[], 0.9, 8).is_empty());
    }
}
