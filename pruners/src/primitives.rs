//! Shared primitives (ALGORITHMS.md §1.9): argmax/argmin and top-k with lowest-index ties, min-max scaling,
//! largest-remainder splits, percentiles, a seeded RNG and DPC-kNN clustering.

use crate::backend::Backend;
use crate::error::Result;

/// Index of the largest value; the lowest index wins ties. `None` for an empty slice.
pub fn argmax(v: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Index of the smallest value; the lowest index wins ties. `None` for an empty slice.
pub fn argmin(v: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|(_, b)| x < b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// The `k` indices of the largest values, by value descending then index ascending (P2).
pub fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let order = |a: &usize, b: &usize| v[*b].total_cmp(&v[*a]).then(a.cmp(b));
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

/// The `k` indices of the smallest values, by value ascending then index ascending.
pub fn bottom_k(v: &[f32], k: usize) -> Vec<usize> {
    let negated: Vec<f32> = v.iter().map(|x| -x).collect();
    top_k(&negated, k)
}

/// `(s - min) / (max - min + 1e-6)` (P3); a constant vector becomes all zeros.
pub fn min_max(v: &[f32]) -> Vec<f32> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    v.iter().map(|x| (x - lo) / (hi - lo + 1e-6)).collect()
}

/// Splits `total` into integer parts proportional to `weights` (largest remainders, lowest index first on ties),
/// each part capped by `caps[i]`; what a capped part cannot take goes to the others, in proportion, until stable.
pub fn split_proportional(total: usize, weights: &[f64], caps: &[usize]) -> Vec<usize> {
    let n = weights.len();
    let mut parts = vec![0usize; n];
    let mut remaining = total.min(caps.iter().sum());
    let mut open: Vec<bool> = caps.iter().map(|&c| c > 0).collect();
    while remaining > 0 && open.iter().any(|&o| o) {
        let weight_sum: f64 = (0..n).filter(|&i| open[i]).map(|i| weights[i].max(0.0)).sum();
        let share = |i: usize| {
            if weight_sum > 0.0 {
                remaining as f64 * weights[i].max(0.0) / weight_sum
            } else {
                remaining as f64 / open.iter().filter(|&&o| o).count() as f64
            }
        };
        let mut add = vec![0usize; n];
        let mut given = 0usize;
        let mut remainders = Vec::new();
        for i in (0..n).filter(|&i| open[i]) {
            let exact = share(i);
            add[i] = exact.floor() as usize;
            given += add[i];
            remainders.push((i, exact - exact.floor()));
        }
        remainders.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (i, _) in remainders.into_iter().take(remaining - given) {
            add[i] += 1;
        }
        remaining = 0;
        for i in 0..n {
            let room = caps[i] - parts[i];
            let taken = add[i].min(room);
            parts[i] += taken;
            remaining += add[i] - taken;
            if parts[i] == caps[i] {
                open[i] = false;
            }
        }
    }
    parts
}

/// NumPy's default percentile (linear interpolation between closest ranks), `q` in `[0, 100]`.
pub fn percentile(v: &[f32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut sorted: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// SplitMix64: a tiny, seedable, portable generator, so a seed means the same picks on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..bound` (`bound > 0`), without modulo bias.
    pub fn below(&mut self, bound: usize) -> usize {
        let bound = bound as u64;
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % bound) as usize;
            }
        }
    }

    /// `k` distinct indices of `0..n`, uniformly (partial Fisher-Yates), in draw order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            pool.swap(i, j);
        }
        pool.truncate(k.min(n));
        pool
    }
}

/// FastVID's DySeg: cut a sequence of frames wherever the similarity of consecutive frames (`transitions[t]`
/// compares frame `t` with `t + 1`) is below `tau`, and also at the `min_segments − 1` least similar transitions.
/// Returns `(first frame, length)` of every segment, in order. `O(F log F)`.
pub fn dynamic_segments(transitions: &[f32], tau: f32, min_segments: usize) -> Vec<(usize, usize)> {
    let frames = transitions.len() + 1;
    let mut cut: Vec<bool> = transitions.iter().map(|&s| s < tau).collect();
    bottom_k(transitions, min_segments.saturating_sub(1)).into_iter().for_each(|t| cut[t] = true);
    let mut out = Vec::new();
    let mut start = 0;
    for (t, _) in cut.iter().enumerate().filter(|(_, c)| **c) {
        out.push((start, t + 1 - start));
        start = t + 1;
    }
    out.push((start, frames - start));
    out
}

/// Result of DPC-kNN clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// Centre token of each cluster, by score descending.
    pub centres: Vec<usize>,
    /// Cluster (index into `centres`) of every token.
    pub assignment: Vec<usize>,
}

/// Density-peak clustering with `k` nearest neighbours (P4), as the `cluster_dpc_knn` helper of SparseVLM, HoliTom
/// and FastVID: `dist = ‖x_i − x_j‖₂ / √D`, `ρ_i = exp(−mean of the κ smallest squared distances)` (self included),
/// `δ_i` = distance to the nearest denser token (the largest distance for the densest), centres = top `c` of `ρ·δ`.
/// Ties in density break by index (the lower index counts as denser) instead of the reference's 1e-6 noise.
/// `O(N²D)` time and `O(N²)` memory: the algorithm needs every pairwise distance.
pub fn dpc_knn<B: Backend>(backend: &B, x: &B::Matrix, clusters: usize, neighbours: usize) -> Result<Clusters> {
    let (n, d) = backend.shape(x);
    if n == 0 {
        return Ok(Clusters { centres: Vec::new(), assignment: Vec::new() });
    }
    let gram = backend.matmul_t(x, x)?;
    let sq: Vec<f32> = (0..n).map(|i| gram[i * n + i]).collect();
    let scale = 1.0 / (d.max(1) as f32);
    let dist: Vec<f32> =
        (0..n * n).map(|ij| ((sq[ij / n] + sq[ij % n] - 2.0 * gram[ij]) * scale).max(0.0).sqrt()).collect();
    let kappa = neighbours.clamp(1, n);
    let density: Vec<f32> = (0..n)
        .map(|i| {
            let mut row: Vec<f32> = dist[i * n..(i + 1) * n].to_vec();
            row.select_nth_unstable_by(kappa - 1, f32::total_cmp);
            let mean_sq = row[..kappa].iter().map(|v| v * v).sum::<f32>() / kappa as f32;
            (-mean_sq).exp()
        })
        .collect();
    let max_dist = dist.iter().copied().fold(0f32, f32::max);
    let denser = |j: usize, i: usize| density[j] > density[i] || (density[j] == density[i] && j < i);
    let score: Vec<f32> = (0..n)
        .map(|i| {
            let delta = (0..n).filter(|&j| denser(j, i)).map(|j| dist[i * n + j]).fold(f32::INFINITY, f32::min);
            let delta = if delta.is_finite() { delta } else { max_dist };
            density[i] * delta
        })
        .collect();
    let centres = top_k(&score, clusters.clamp(1, n));
    let assignment = (0..n)
        .map(|i| {
            if let Some(c) = centres.iter().position(|&c| c == i) {
                return c;
            }
            let to_centres: Vec<f32> = centres.iter().map(|&c| dist[i * n + c]).collect();
            argmin(&to_centres).unwrap_or(0)
        })
        .collect();
    Ok(Clusters { centres, assignment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pick_the_lowest_index() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmin(&[2.0, 0.0, 0.0]), Some(1));
        assert_eq!(top_k(&[1.0, 5.0, 5.0, 2.0, 5.0], 3), vec![1, 2, 4]);
        assert_eq!(bottom_k(&[1.0, 5.0, 1.0, 2.0], 2), vec![0, 2]);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn min_max_of_constant_is_zero() {
        assert_eq!(min_max(&[2.0, 2.0]), vec![0.0, 0.0]);
        let m = min_max(&[0.0, 1.0, 2.0]);
        assert!((m[2] - 1.0).abs() < 1e-5 && m[0] == 0.0);
    }

    #[test]
    fn proportional_split_is_exact_and_respects_caps() {
        assert_eq!(split_proportional(10, &[1.0, 1.0, 2.0], &[100, 100, 100]), vec![3, 2, 5]);
        // The middle part is capped at 1; its excess flows to the others in proportion.
        assert_eq!(split_proportional(10, &[1.0, 8.0, 1.0], &[100, 1, 100]), vec![5, 1, 4]);
        assert_eq!(split_proportional(7, &[0.0, 0.0], &[10, 10]), vec![4, 3]);
        assert_eq!(split_proportional(50, &[1.0, 1.0], &[3, 4]), vec![3, 4]);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 25) == 1.75; 75 -> 3.25.
        assert!((percentile(&[4.0, 1.0, 3.0, 2.0], 25.0) - 1.75).abs() < 1e-12);
        assert!((percentile(&[4.0, 1.0, 3.0, 2.0], 75.0) - 3.25).abs() < 1e-12);
    }

    #[test]
    fn sampling_is_seeded_and_distinct() {
        let a = SplitMix64::new(7).sample(100, 10);
        assert_eq!(a, SplitMix64::new(7).sample(100, 10));
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), 10);
        assert_ne!(a, SplitMix64::new(8).sample(100, 10));
    }

    #[test]
    fn dpc_finds_two_blobs() {
        let backend = crate::CpuBackend;
        let x = ndarray::array![[0.0f32, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.2]];
        let c = dpc_knn(&backend, &x, 2, 2).unwrap();
        assert_eq!(c.assignment[0], c.assignment[1]);
        assert_eq!(c.assignment[1], c.assignment[2]);
        assert_eq!(c.assignment[3], c.assignment[4]);
        assert_ne!(c.assignment[0], c.assignment[3]);
        for (ci, &centre) in c.centres.iter().enumerate() {
            assert_eq!(c.assignment[centre], ci);
        }
    }
}
