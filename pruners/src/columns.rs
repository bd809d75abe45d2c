//! Columns `X · x_j` of the greedy selectors, computed several per pass when a pass is memory-bound.
//!
//! A greedy step (ToDRE, k-center, DivPrune, MMR, CDPruner) needs the similarity column of the token it just
//! picked, which costs one pass over the `N x D` matrix. When the matrix does not fit in cache the pass is bound by
//! memory bandwidth and the arithmetic units idle, so on a miss the cache also computes the columns of the tokens
//! most likely to be picked next (the method's current best scores) in the same pass. A later pick that hits
//! costs no pass at all. Columns never change, so the results are identical to computing each column on demand;
//! only the number of passes drops. Memory: at most `capacity` columns, `O(capacity · N)`.

use crate::backend::Backend;
use crate::error::Result;
use std::collections::{HashMap, VecDeque};

/// A bounded cache of similarity columns of one matrix.
pub struct ColumnCache<'a, B: Backend> {
    backend: &'a B,
    matrix: &'a B::Matrix,
    speculate: usize,
    capacity: usize,
    columns: HashMap<usize, Vec<f32>>,
    order: VecDeque<usize>,
    passes: usize,
}

impl<'a, B: Backend> ColumnCache<'a, B> {
    /// A cache over `matrix`, speculating as much as the backend advises.
    pub fn new(backend: &'a B, matrix: &'a B::Matrix) -> Self {
        let speculate = backend.speculative_columns(matrix);
        ColumnCache {
            backend,
            matrix,
            speculate,
            capacity: 4 * (speculate + 1),
            columns: HashMap::new(),
            order: VecDeque::new(),
            passes: 0,
        }
    }

    /// The column of `j`. On a miss, `candidates` (best first) supplies the tokens worth computing alongside.
    pub fn column(&mut self, j: usize, candidates: impl FnOnce(usize) -> Vec<usize>) -> Result<&[f32]> {
        if !self.columns.contains_key(&j) {
            let mut wanted = vec![j];
            if self.speculate > 0 {
                let extra = candidates(self.speculate + self.columns.len());
                wanted.extend(
                    extra.into_iter().filter(|c| *c != j && !self.columns.contains_key(c)).take(self.speculate),
                );
            }
            let computed = self.backend.dots_with_rows(self.matrix, &wanted)?;
            self.passes += 1;
            for (c, col) in wanted.into_iter().zip(computed) {
                self.columns.insert(c, col);
                self.order.push_back(c);
            }
            // A batch is at most a quarter of the capacity, so the oldest entries never include `j`.
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.columns.remove(&old);
                }
            }
        }
        Ok(&self.columns[&j])
    }

    /// Passes over the matrix so far.
    pub fn passes(&self) -> usize {
        self.passes
    }
}
