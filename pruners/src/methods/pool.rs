//! Pooling baseline: average the tokens of each frame over a coarser uniform grid.
//!
//! The budget is split over frames (largest remainders); a frame of `H x W` tokens allowed `m` outputs is pooled
//! onto a `gh x gw` grid with `gh·gw <= m` and the aspect ratio of the frame (`gh = round(√(m·H/W))`, clamped to
//! `1..=H`, then `gw = min(W, m / gh)`); each cell's output is the mean of its tokens (bilinear-free average
//! pooling, as LLaVA-OneVision's 2x2 video pooling), represented by the token nearest the cell's centre. A flat
//! layout is one row of `N` tokens cut into `k` contiguous runs. Adaptive: at most `k` tokens, exactly `k` when each
//! frame's share factors onto its grid. `O(N·D)`.

use crate::backend::Backend;
use crate::error::Result;
use crate::layout::Layout;
use crate::params::Params;
use crate::primitives::split_proportional;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// Uniform spatial pooling to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool;

impl Pool {
    /// Builds from parameters (there are none).
    pub fn from_params(_: &Params) -> Result<Self> {
        Ok(Pool)
    }
}

/// Bin `i` of `parts` near-equal bins over `0..len`: `[i·len/parts, (i+1)·len/parts)`.
fn bin(i: usize, parts: usize, len: usize) -> std::ops::Range<usize> {
    (i * len / parts)..((i + 1) * len / parts)
}

impl Pruner for Pool {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn exact_budget(&self) -> bool {
        false
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let (height, width) = match tokens.layout() {
            Layout::Flat => (1, n),
            Layout::Grid { height, width, .. } => (height, width),
        };
        let units = tokens.layout().frame_count();
        let per_unit = height * width;
        let shares = split_proportional(k, &vec![1.0; units], &vec![per_unit; units]);
        let mut groups: Vec<(usize, Vec<(usize, f32)>)> = Vec::new();
        for (unit, &m) in shares.iter().enumerate() {
            if m == 0 {
                continue;
            }
            let gh = ((m as f64 * height as f64 / width as f64).sqrt().round() as usize).clamp(1, height.min(m));
            let gw = (m / gh).clamp(1, width);
            for r in 0..gh {
                for c in 0..gw {
                    let (rows, cols) = (bin(r, gh, height), bin(c, gw, width));
                    let centre = (rows.start + rows.end - 1) / 2 * width + (cols.start + cols.end - 1) / 2;
                    let members: Vec<(usize, f32)> =
                        rows.flat_map(|y| cols.clone().map(move |x| (unit * per_unit + y * width + x, 1.0))).collect();
                    groups.push((unit * per_unit + centre, members));
                }
            }
        }
        Selection::merged(backend, tokens.features(), groups, true, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, Layout};

    #[test]
    fn pools_a_4x4_frame_to_2x2_means() {
        let x = ndarray::Array2::from_shape_fn((16, 1), |(i, _)| i as f32);
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(1, 4, 4)).unwrap();
        let s = prune(&CpuBackend, &Pool, &t, Budget::Keep(4)).unwrap();
        assert_eq!(s.kept, vec![0, 2, 8, 10]);
        assert_eq!(s.sizes, vec![4, 4, 4, 4]);
        let m = s.merged.unwrap();
        // Top-left cell: tokens 0, 1, 4, 5 -> mean 2.5.
        assert_eq!(m.column(0).to_vec(), vec![2.5, 4.5, 10.5, 12.5]);
        assert_eq!(s.sizes.iter().sum::<usize>(), 16);
    }
}
