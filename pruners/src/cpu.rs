//! The default backend: `ndarray` matrices on the CPU, rayon across rows.
//!
//! The greedy selectors make about `k` passes over the `N x D` matrix, so their speed is the memory bandwidth of
//! [`CpuBackend::dots_with_row`]: it streams the matrix once, splits rows across threads, and keeps eight partial sums
//! per dot product so the compiler can vectorise the loop. Block products go to `matrixmultiply` through
//! `ndarray::dot`.

use crate::backend::{Backend, Weighted};
use crate::error::{PruneError, Result};
use crate::simd::{dot, dot_many};
use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// The ndarray backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// Rows per rayon task: big enough to amortise scheduling, small enough to balance two to many cores.
const ROWS_PER_TASK: usize = 64;
/// Size of the last-level cache (Linux sysfs), 32 MiB when unknown: above it a pass over a matrix is memory-bound.
fn last_level_cache_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        (0..8)
            .rev()
            .find_map(|i| {
                let text = std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size")).ok()?;
                let text = text.trim();
                let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
                let value: usize = digits.parse().ok()?;
                Some(match unit {
                    "K" => value << 10,
                    "M" => value << 20,
                    _ => value,
                })
            })
            .unwrap_or(32 << 20)
    })
}
/// Rows per block of the blocked all-pairs products.
const BLOCK_ROWS: usize = 256;

fn standard(m: &Array2<f32>) -> std::borrow::Cow<'_, [f32]> {
    match m.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(m.iter().copied().collect()),
    }
}

impl Backend for CpuBackend {
    type Matrix = Array2<f32>;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn upload(&self, host: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        Ok(host.as_standard_layout().into_owned())
    }

    fn upload_owned(&self, host: Array2<f32>) -> Result<Array2<f32>> {
        Ok(if host.is_standard_layout() { host } else { host.as_standard_layout().into_owned() })
    }

    fn download(&self, m: &Array2<f32>) -> Result<Array2<f32>> {
        Ok(m.clone())
    }

    fn shape(&self, m: &Array2<f32>) -> (usize, usize) {
        m.dim()
    }

    fn first_non_finite(&self, m: &Array2<f32>) -> Result<Option<(usize, f32)>> {
        Ok(m.iter().enumerate().find(|(_, v)| !v.is_finite()).map(|(i, v)| (i, *v)))
    }

    fn normalize_rows(&self, m: &Array2<f32>) -> Result<Array2<f32>> {
        let mut out = m.as_standard_layout().into_owned();
        let d = out.ncols().max(1);
        let data = out.as_slice_mut().expect("standard layout is contiguous");
        data.par_chunks_mut(d).for_each(|row| {
            let inv = 1.0 / (dot(row, row).sqrt() + 1e-8);
            row.iter_mut().for_each(|v| *v *= inv);
        });
        Ok(out)
    }

    fn row_norms(&self, m: &Array2<f32>) -> Result<Vec<f32>> {
        let data = standard(m);
        let d = m.ncols().max(1);
        Ok(data.par_chunks(d).map(|row| dot(row, row).sqrt()).collect())
    }

    fn dots_with_row(&self, m: &Array2<f32>, j: usize) -> Result<Vec<f32>> {
        let (n, d) = m.dim();
        if j >= n {
            return Err(PruneError::Backend(format!("row {j} out of range for {n} rows")));
        }
        let data = standard(m);
        let pivot = &data[j * d..(j + 1) * d];
        let mut out = vec![0f32; n];
        if d == 0 {
            return Ok(out);
        }
        out.par_chunks_mut(ROWS_PER_TASK).zip(data.par_chunks(ROWS_PER_TASK * d)).for_each(|(o, rows)| {
            for (slot, row) in o.iter_mut().zip(rows.chunks_exact(d)) {
                *slot = dot(row, pivot);
            }
        });
        Ok(out)
    }

    fn dots_with_rows(&self, m: &Array2<f32>, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let (n, d) = m.dim();
        if let Some(&bad) = rows.iter().find(|&&j| j >= n) {
            return Err(PruneError::Backend(format!("row {bad} out of range for {n} rows")));
        }
        let data = standard(m);
        let b = rows.len();
        if d == 0 || b == 0 {
            return Ok(vec![vec![0f32; n]; b]);
        }
        let pivots: Vec<&[f32]> = rows.iter().map(|&j| &data[j * d..(j + 1) * d]).collect();
        // One pass over the matrix: each row is loaded once and dotted with every pivot while it is in cache.
        let blocks: Vec<Vec<f32>> = data
            .par_chunks(ROWS_PER_TASK * d)
            .map(|chunk| {
                let mut out = vec![0f32; chunk.len() / d * b];
                for (row, slot) in chunk.chunks_exact(d).zip(out.chunks_exact_mut(b)) {
                    dot_many(row, &pivots, slot);
                }
                out
            })
            .collect();
        let mut columns = vec![Vec::with_capacity(n); b];
        for block in &blocks {
            for row in block.chunks_exact(b) {
                columns.iter_mut().zip(row).for_each(|(c, v)| c.push(*v));
            }
        }
        Ok(columns)
    }

    fn speculative_columns(&self, m: &Array2<f32>) -> usize {
        // Matrices larger than the last-level cache make a pass memory-bound; then 15 extra dot products per row
        // cost less than the row's trip from memory. A matrix that fits in cache makes a pass arithmetic-bound,
        // and speculation would only add work.
        if m.len() * 4 > last_level_cache_bytes() {
            15
        } else {
            0
        }
    }

    fn matmul_t(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Vec<f32>> {
        if a.ncols() != b.ncols() {
            return Err(PruneError::Backend(format!("matmul_t: widths {} and {} differ", a.ncols(), b.ncols())));
        }
        let product = a.dot(&b.t());
        Ok(product.as_standard_layout().iter().copied().collect())
    }

    fn nearest_neighbour_dots(&self, a: &Array2<f32>) -> Result<Vec<f32>> {
        // The Gram matrix is symmetric: each block pair (I, J >= I) is multiplied once and updates the maxima of
        // both I's rows and J's rows, halving the O(N²·D) work. Each task keeps its own maxima; they are merged.
        let n = a.nrows();
        let starts: Vec<usize> = (0..n).step_by(BLOCK_ROWS).collect();
        let merged = starts
            .par_iter()
            .map(|&si| {
                let mut best = vec![f32::NEG_INFINITY; n];
                let ei = (si + BLOCK_ROWS).min(n);
                let rows = a.slice(s![si..ei, ..]);
                for &sj in starts.iter().filter(|&&sj| sj >= si) {
                    let ej = (sj + BLOCK_ROWS).min(n);
                    let block = rows.dot(&a.slice(s![sj..ej, ..]).t());
                    for (r, row) in block.axis_iter(Axis(0)).enumerate() {
                        let i = si + r;
                        for (c, &v) in row.iter().enumerate() {
                            let j = sj + c;
                            if i != j {
                                best[i] = best[i].max(v);
                                best[j] = best[j].max(v);
                            }
                        }
                    }
                }
                best
            })
            .reduce(
                || vec![f32::NEG_INFINITY; n],
                |mut x, y| {
                    x.iter_mut().zip(y).for_each(|(p, q)| *p = p.max(q));
                    x
                },
            );
        Ok(merged)
    }

    fn rowwise_dots(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Vec<f32>> {
        if a.dim() != b.dim() {
            return Err(PruneError::Backend(format!("rowwise_dots: shapes {:?} and {:?} differ", a.dim(), b.dim())));
        }
        let d = a.ncols().max(1);
        let (da, db) = (standard(a), standard(b));
        Ok(da.par_chunks(d).zip(db.par_chunks(d)).map(|(x, y)| dot(x, y)).collect())
    }

    fn gather_rows(&self, m: &Array2<f32>, idx: &[usize]) -> Result<Array2<f32>> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= m.nrows()) {
            return Err(PruneError::Backend(format!("gather: row {bad} out of range for {} rows", m.nrows())));
        }
        Ok(m.select(Axis(0), idx))
    }

    fn combine_rows(&self, m: &Array2<f32>, groups: &[Vec<Weighted>], normalize: bool) -> Result<Array2<f32>> {
        let d = m.ncols();
        let mut out = Array2::<f32>::zeros((groups.len(), d));
        let data = standard(m);
        if let Some(&(bad, _)) = groups.iter().flatten().find(|(i, _)| *i >= m.nrows()) {
            return Err(PruneError::Backend(format!("combine: row {bad} out of range for {} rows", m.nrows())));
        }
        let rows = out.as_slice_mut().expect("fresh arrays are contiguous");
        rows.par_chunks_mut(d.max(1)).zip(groups.par_iter()).for_each(|(row, group)| {
            let mut total = 0f32;
            for &(i, w) in group {
                total += w;
                for (o, v) in row.iter_mut().zip(&data[i * d..(i + 1) * d]) {
                    *o += w * v;
                }
            }
            if normalize && total != 0.0 {
                row.iter_mut().for_each(|o| *o /= total);
            }
        });
        Ok(out)
    }

    fn max_rows(&self, m: &Array2<f32>, groups: &[Vec<usize>]) -> Result<Array2<f32>> {
        let mut out = Array2::<f32>::from_elem((groups.len(), m.ncols()), f32::NEG_INFINITY);
        for (mut row, group) in out.axis_iter_mut(Axis(0)).zip(groups) {
            for &i in group {
                if i >= m.nrows() {
                    return Err(PruneError::Backend(format!("max: row {i} out of range for {} rows", m.nrows())));
                }
                row.zip_mut_with(&m.row(i), |o, v| *o = o.max(*v));
            }
        }
        Ok(out)
    }

    fn concat_rows(&self, parts: &[Array2<f32>]) -> Result<Array2<f32>> {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| PruneError::Backend(format!("concat: {e}")))
    }
}
