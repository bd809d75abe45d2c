//! Shared test inputs: seeded random token sets with every side signal, built for any backend.

#![allow(dead_code)]

use ndarray::Array2;
use tokensieve_pruners::primitives::SplitMix64;
use tokensieve_pruners::{Backend, Layout, TokenSet};

/// Continuous random values in [-1, 1) (no ties, as parity needs).
pub fn random_matrix(rng: &mut SplitMix64, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
}

/// Host-side inputs of one sample.
pub struct Inputs {
    pub features: Array2<f32>,
    pub keys: Array2<f32>,
    pub query: Array2<f32>,
    pub cls: Vec<f32>,
    pub importance: Vec<f32>,
    pub layout: Layout,
}

/// `frames x h x w` tokens of width `d`, with keys, query, CLS attention and importance.
pub fn inputs(seed: u64, frames: usize, h: usize, w: usize, d: usize) -> Inputs {
    let mut rng = SplitMix64::new(seed);
    let n = frames * h * w;
    let features = random_matrix(&mut rng, n, d);
    // Consecutive frames share structure, so temporal methods see real redundancy.
    let mut features = features;
    for f in 1..frames {
        for p in 0..h * w {
            if (p + f) % 3 != 0 {
                let prev = features.row((f - 1) * h * w + p).to_owned();
                let mut row = features.row_mut(f * h * w + p);
                row.zip_mut_with(&prev, |x, y| *x = 0.9 * y + 0.1 * *x);
            }
        }
    }
    let keys = random_matrix(&mut rng, n, 16);
    let query = random_matrix(&mut rng, 3, d);
    let cls: Vec<f32> = random_matrix(&mut rng, n, 1).iter().map(|v| (3.0 * v).exp()).collect();
    let importance: Vec<f32> = random_matrix(&mut rng, n, 1).iter().copied().collect();
    Inputs { features, keys, query, cls, importance, layout: Layout::frames(frames, h, w) }
}

/// The token set on `backend` with every signal except relevance.
pub fn token_set<B: Backend>(backend: &B, i: &Inputs) -> TokenSet<B::Matrix> {
    TokenSet::new(backend, backend.upload(i.features.view()).unwrap())
        .unwrap()
        .with_layout(i.layout)
        .unwrap()
        .with_keys(backend, backend.upload(i.keys.view()).unwrap())
        .unwrap()
        .with_query(backend, backend.upload(i.query.view()).unwrap())
        .unwrap()
        .with_cls_attention(i.cls.clone())
        .unwrap()
        .with_importance(i.importance.clone())
        .unwrap()
}
