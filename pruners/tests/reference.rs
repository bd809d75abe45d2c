//! The matrix-free selectors against direct transcriptions of their reference formulas (full `N x N` matrices,
//! f64), and the speculative column passes against plain ones: identical picks (ALGORITHMS.md §5.2 item 7).

mod common;

use common::{inputs, random_matrix};
use ndarray::{Array2, ArrayView2};
use tokensieve_pruners::backend::Weighted;
use tokensieve_pruners::primitives::SplitMix64;
use tokensieve_pruners::{prune, Backend, Budget, CpuBackend, Method, Result, TokenSet};

/// The CPU backend with speculation forced on, as it runs on matrices larger than the cache.
struct Speculating(usize);

impl Backend for Speculating {
    type Matrix = Array2<f32>;
    fn name(&self) -> String {
        "cpu-speculating".into()
    }
    fn upload(&self, host: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        CpuBackend.upload(host)
    }
    fn download(&self, m: &Array2<f32>) -> Result<Array2<f32>> {
        CpuBackend.download(m)
    }
    fn shape(&self, m: &Array2<f32>) -> (usize, usize) {
        CpuBackend.shape(m)
    }
    fn first_non_finite(&self, m: &Array2<f32>) -> Result<Option<(usize, f32)>> {
        CpuBackend.first_non_finite(m)
    }
    fn normalize_rows(&self, m: &Array2<f32>) -> Result<Array2<f32>> {
        CpuBackend.normalize_rows(m)
    }
    fn row_norms(&self, m: &Array2<f32>) -> Result<Vec<f32>> {
        CpuBackend.row_norms(m)
    }
    fn dots_with_row(&self, m: &Array2<f32>, j: usize) -> Result<Vec<f32>> {
        CpuBackend.dots_with_row(m, j)
    }
    fn dots_with_rows(&self, m: &Array2<f32>, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        CpuBackend.dots_with_rows(m, rows)
    }
    fn speculative_columns(&self, _: &Array2<f32>) -> usize {
        self.0
    }
    fn matmul_t(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Vec<f32>> {
        CpuBackend.matmul_t(a, b)
    }
    fn nearest_neighbour_dots(&self, a: &Array2<f32>) -> Result<Vec<f32>> {
        CpuBackend.nearest_neighbour_dots(a)
    }
    fn rowwise_dots(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Vec<f32>> {
        CpuBackend.rowwise_dots(a, b)
    }
    fn gather_rows(&self, m: &Array2<f32>, idx: &[usize]) -> Result<Array2<f32>> {
        CpuBackend.gather_rows(m, idx)
    }
    fn combine_rows(&self, m: &Array2<f32>, groups: &[Vec<Weighted>], normalize: bool) -> Result<Array2<f32>> {
        CpuBackend.combine_rows(m, groups, normalize)
    }
    fn max_rows(&self, m: &Array2<f32>, groups: &[Vec<usize>]) -> Result<Array2<f32>> {
        CpuBackend.max_rows(m, groups)
    }
    fn concat_rows(&self, parts: &[Array2<f32>]) -> Result<Array2<f32>> {
        CpuBackend.concat_rows(parts)
    }
}

/// Cosine matrix in f64.
fn cosine(x: &Array2<f32>) -> Vec<Vec<f64>> {
    let rows: Vec<Vec<f64>> = x
        .rows()
        .into_iter()
        .map(|r| {
            let norm = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() + 1e-8;
            r.iter().map(|v| *v as f64 / norm).collect()
        })
        .collect();
    rows.iter().map(|a| rows.iter().map(|b| a.iter().zip(b).map(|(p, q)| p * q).sum()).collect()).collect()
}

fn argbest(v: &[f64], better: impl Fn(f64, f64) -> bool, skip: &[bool]) -> usize {
    let mut best: Option<usize> = None;
    for i in 0..v.len() {
        if !skip[i] && best.is_none_or(|b| better(v[i], v[b])) {
            best = Some(i);
        }
    }
    best.expect("a candidate")
}

fn todre_reference(x: &Array2<f32>, pivot: usize, k: usize) -> Vec<usize> {
    let s = cosine(x);
    let mut taken = vec![false; x.nrows()];
    taken[pivot] = true;
    let mut kept = vec![pivot];
    while kept.len() < k {
        let sums: Vec<f64> = (0..x.nrows()).map(|v| kept.iter().map(|&u| s[v][u]).sum()).collect();
        let c = argbest(&sums, |a, b| a < b, &taken);
        taken[c] = true;
        kept.push(c);
    }
    kept.sort_unstable();
    kept
}

fn divprune_reference(x: &Array2<f32>, k: usize) -> Vec<usize> {
    let s = cosine(x);
    let n = x.nrows();
    let nn: Vec<f64> =
        (0..n).map(|i| (0..n).filter(|&j| j != i).map(|j| 1.0 - s[i][j]).fold(f64::INFINITY, f64::min)).collect();
    let first = argbest(&nn, |a, b| a > b, &vec![false; n]);
    let mut taken = vec![false; n];
    taken[first] = true;
    let mut kept = vec![first];
    while kept.len() < k {
        let mins: Vec<f64> =
            (0..n).map(|j| kept.iter().map(|&s_| 1.0 - s[s_][j]).fold(f64::INFINITY, f64::min)).collect();
        let c = argbest(&mins, |a, b| a > b, &taken);
        taken[c] = true;
        kept.push(c);
    }
    kept.sort_unstable();
    kept
}

fn mmr_reference(x: &Array2<f32>, importance: &[f32], k: usize, lambda: f64) -> Vec<usize> {
    let s = cosine(x);
    let n = x.nrows();
    let (lo, hi) =
        importance.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v as f64), h.max(v as f64)));
    let imp: Vec<f64> = importance.iter().map(|&v| (v as f64 - lo) / (hi - lo + 1e-6)).collect();
    let mut taken = vec![false; n];
    let mut kept: Vec<usize> = Vec::new();
    while kept.len() < k {
        let score: Vec<f64> = (0..n)
            .map(|v| {
                if kept.is_empty() {
                    imp[v]
                } else {
                    lambda * imp[v] - (1.0 - lambda) * kept.iter().map(|&u| s[v][u]).fold(f64::NEG_INFINITY, f64::max)
                }
            })
            .collect();
        let c = argbest(&score, |a, b| a > b, &taken);
        taken[c] = true;
        kept.push(c);
    }
    kept.sort_unstable();
    kept
}

fn cdpruner_reference(x: &Array2<f32>, relevance: &[f32], k: usize) -> Vec<usize> {
    let s = cosine(x);
    let n = x.nrows();
    let (lo, hi) =
        relevance.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v as f64), h.max(v as f64)));
    // The official min-max (Theia-4869/CDPruner): the epsilon sits in the numerator.
    let r: Vec<f64> = relevance.iter().map(|&v| (v as f64 - lo + 1e-6) / (hi - lo)).collect();
    let kernel: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| r[i] * s[i][j] * r[j]).collect()).collect();
    let mut d2: Vec<f64> = (0..n).map(|i| kernel[i][i]).collect();
    let mut c: Vec<Vec<f64>> = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..k {
        let j = (0..n).max_by(|&a, &b| d2[a].total_cmp(&d2[b]).then(b.cmp(&a))).expect("tokens");
        let e: Vec<f64> =
            (0..n).map(|i| (kernel[j][i] - c.iter().map(|row| row[j] * row[i]).sum::<f64>()) / d2[j].sqrt()).collect();
        for i in 0..n {
            d2[i] -= e[i] * e[i];
        }
        d2[j] = f64::NEG_INFINITY;
        c.push(e);
        kept.push(j);
    }
    kept.sort_unstable();
    kept
}

#[test]
fn matrix_free_selectors_pick_what_the_matrix_formulas_pick() {
    let data = inputs(21, 1, 15, 20, 64);
    let (n, k) = (300, 60);
    let tokens = TokenSet::from_array(data.features.clone())
        .unwrap()
        .with_cls_attention(data.cls.clone())
        .unwrap()
        .with_importance(data.importance.clone())
        .unwrap()
        .with_relevance(data.importance.clone())
        .unwrap();
    let pivot = tokensieve_pruners::primitives::argmax(&data.cls).unwrap();
    let run =
        |spec: &str| prune(&CpuBackend, &Method::from_spec(spec).unwrap().0, &tokens, Budget::Keep(k)).unwrap().kept;
    assert_eq!(run("todre:pivot=cls"), todre_reference(&data.features, pivot, k));
    assert_eq!(run("divprune"), divprune_reference(&data.features, k));
    assert_eq!(run("mmr:importance=external"), mmr_reference(&data.features, &data.importance, k, 0.5));
    assert_eq!(run("cdpruner"), cdpruner_reference(&data.features, &data.importance, k));
    assert_eq!(tokens.len(), n);
}

#[test]
fn speculative_passes_change_the_pass_count_not_the_picks() {
    let mut rng = SplitMix64::new(5);
    let x = random_matrix(&mut rng, 500, 48);
    let query = random_matrix(&mut rng, 4, 48);
    let cls: Vec<f32> = (0..500).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
    let plain =
        TokenSet::from_array(x).unwrap().with_cls_attention(cls).unwrap().with_query(&CpuBackend, query).unwrap();
    let spec = Speculating(15);
    for name in ["todre", "kcenter", "divprune", "mmr", "cdpruner", "density"] {
        let (m, _) = Method::from_spec(name).unwrap();
        for k in [1, 7, 100, 250] {
            let a = prune(&CpuBackend, &m, &plain, Budget::Keep(k)).unwrap();
            let b = prune(&spec, &m, &plain, Budget::Keep(k)).unwrap();
            assert_eq!(a.kept, b.kept, "{name} k={k}");
        }
    }
}
