//! The small set of tensor operations every method is written against, so that each algorithm exists once and
//! runs on ndarray (the default, [`crate::CpuBackend`]) and on `tch::Tensor` (feature `torch`, CUDA when present).
//!
//! The split follows the cost: operations over the `N x D` feature matrix (row dot products, products of two
//! matrices, gathers and weighted merges of rows) are backend operations; bookkeeping over `N`-long score vectors
//! (argmax, top-k, masks) happens on the host in plain `Vec<f32>`, identically for both backends. That costs one
//! `N`-float transfer per greedy step on a GPU and nothing on the CPU.

use crate::error::Result;
use ndarray::{Array2, ArrayView2};

/// One weighted source row of a merged output row.
pub type Weighted = (usize, f32);

/// Tensor operations over row-major `f32` matrices of shape `[rows, cols]`.
pub trait Backend: Sync {
    /// The matrix type (`Array2<f32>` or `tch::Tensor`).
    type Matrix: Send;

    /// Short name for reports (`cpu`, `torch:cuda:0`, ...).
    fn name(&self) -> String;

    /// Copies a host matrix into the backend.
    fn upload(&self, host: ArrayView2<'_, f32>) -> Result<Self::Matrix>;

    /// Moves a host matrix into the backend: [`Backend::upload`] by default; the CPU backend keeps the array
    /// itself, so a caller done with its matrix never holds two copies of it.
    fn upload_owned(&self, host: Array2<f32>) -> Result<Self::Matrix> {
        self.upload(host.view())
    }

    /// Copies a backend matrix to the host.
    fn download(&self, m: &Self::Matrix) -> Result<Array2<f32>>;

    /// `(rows, cols)`.
    fn shape(&self, m: &Self::Matrix) -> (usize, usize);

    /// Flat index and value of the first NaN or infinity, if any.
    fn first_non_finite(&self, m: &Self::Matrix) -> Result<Option<(usize, f32)>>;

    /// Each row divided by `‖row‖₂ + 1e-8`; zero rows stay zero (ALGORITHMS.md §0).
    fn normalize_rows(&self, m: &Self::Matrix) -> Result<Self::Matrix>;

    /// `‖row‖₂` of every row.
    fn row_norms(&self, m: &Self::Matrix) -> Result<Vec<f32>>;

    /// `m · m[j]`: the dot product of every row with row `j` (one pass over the matrix).
    fn dots_with_row(&self, m: &Self::Matrix, j: usize) -> Result<Vec<f32>>;

    /// `m · m[j]` for every `j` in `rows`, one column per entry. The default calls [`Backend::dots_with_row`] for
    /// each; backends that can compute several columns in one pass over `m` override it (see
    /// [`crate::columns::ColumnCache`]).
    fn dots_with_rows(&self, m: &Self::Matrix, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        rows.iter().map(|&j| self.dots_with_row(m, j)).collect()
    }

    /// How many extra columns a greedy step should compute speculatively in the same pass over `m` (0 = none).
    /// Worth it when a pass is bound by memory bandwidth rather than arithmetic, so the extra dot products are free.
    fn speculative_columns(&self, m: &Self::Matrix) -> usize {
        let _ = m;
        0
    }

    /// `a · bᵀ`, row-major `[a.rows, b.rows]` on the host. For the blocks that need it (query relevance, DPC-kNN,
    /// bipartite matching); never called on the whole `N x N` problem by the greedy methods.
    fn matmul_t(&self, a: &Self::Matrix, b: &Self::Matrix) -> Result<Vec<f32>>;

    /// For every row `i`, the largest `a[i] · a[j]` over `j != i` (the nearest neighbour's similarity), computed in
    /// row blocks so memory stays `O(block · N)`. `-inf` when there is a single row.
    fn nearest_neighbour_dots(&self, a: &Self::Matrix) -> Result<Vec<f32>>;

    /// `a[i] · b[i]` for every row `i` of two matrices of the same shape.
    fn rowwise_dots(&self, a: &Self::Matrix, b: &Self::Matrix) -> Result<Vec<f32>>;

    /// The rows `idx`, in that order.
    fn gather_rows(&self, m: &Self::Matrix, idx: &[usize]) -> Result<Self::Matrix>;

    /// One output row per group: `Σ w·m[i]`, divided by `Σ w` when `normalize` (a weighted mean, P6).
    fn combine_rows(&self, m: &Self::Matrix, groups: &[Vec<Weighted>], normalize: bool) -> Result<Self::Matrix>;

    /// One output row per group: the element-wise maximum of its rows.
    fn max_rows(&self, m: &Self::Matrix, groups: &[Vec<usize>]) -> Result<Self::Matrix>;

    /// The rows of several matrices stacked in order.
    fn concat_rows(&self, parts: &[Self::Matrix]) -> Result<Self::Matrix>;
}
