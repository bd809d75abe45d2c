//! DyCoke's decode-time dynamic KV: at layer 3, every decoding step, re-select the image tokens the new token
//! attends to when its attention has moved.
//!
//! ```text
//! a_t = A^{(3)}[current token, image span]      (mean over heads)
//! if no selection yet or cos(a_t, a_{t−1}) < 0.9:  keep = top (1 − p) of a_t   (p = 0.8 -> 20 %)
//! layers >= 3 attend to the kept image tokens only (the full cache is kept and gathered)
//! ```
//!
//! Complexity `O(N)` per step. Source: DyCoke (CVPR 2025), KD-TAO/DyCoke `modeling_qwen2.py`.

use super::fastv::top_image_tokens;
use crate::budget::Budget;
use crate::error::Result;

/// State of the per-step selection.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicKv {
    /// Fraction of image tokens pruned.
    pub prune: f64,
    /// Cosine below which the selection is refreshed.
    pub threshold: f32,
    previous: Option<Vec<f32>>,
    kept: Vec<usize>,
}

impl DynamicKv {
    /// With the paper's defaults (`p = 0.8`, threshold 0.9).
    pub fn new() -> Self {
        DynamicKv { prune: 0.8, threshold: 0.9, previous: None, kept: Vec::new() }
    }

    /// Feeds one step's image attention; returns the image offsets layers >= 3 should attend to and whether the
    /// selection changed.
    pub fn step(&mut self, attention: &[f32]) -> Result<(&[usize], bool)> {
        let cos = self.previous.as_ref().map(|p| {
            let dot: f32 = p.iter().zip(attention).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (norm(p) * norm(attention) + 1e-8)
        });
        let refresh =
            cos.is_none_or(|c| c < self.threshold) || self.previous.as_ref().map(Vec::len) != Some(attention.len());
        if refresh {
            let k = Budget::Ratio((1.0 - self.prune).max(f64::MIN_POSITIVE)).resolve(attention.len())?.k;
            self.kept = top_image_tokens(attention, k);
        }
        self.previous = Some(attention.to_vec());
        Ok((&self.kept, refresh))
    }
}

impl Default for DynamicKv {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_only_when_attention_moves() {
        let mut kv = DynamicKv::new();
        let a = [0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0, 0.0];
        let (kept, changed) = kv.step(&a).unwrap();
        assert!(changed);
        assert_eq!(kept, &[0, 1]);
        let (_, changed) = kv.step(&a).unwrap();
        assert!(!changed);
        let moved = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.5];
        let (kept, changed) = kv.step(&moved).unwrap();
        assert!(changed);
        assert_eq!(kept, &[8, 9]);
    }
}
