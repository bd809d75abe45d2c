//! The libtorch backend: the same methods on `tch::Tensor`, on CUDA when available and on the CPU otherwise.
//!
//! Matrices live on the backend's device as f32 (inputs in f16/bf16 are converted, since scores are computed in
//! f32, ALGORITHMS.md §1.7); `N`-long score vectors come back to the host once per greedy step. Every call runs
//! under `no_grad`. Weighted merges are one `index_add_` of scaled rows, so no dense `groups x N` matrix is built.

use crate::backend::{Backend, Weighted};
use crate::error::{PruneError, Result};
use ndarray::{Array2, ArrayView2};
use tch::{Device, Kind, Tensor};

/// The tch backend on one device.
#[derive(Debug, Clone, Copy)]
pub struct TchBackend {
    device: Device,
}

fn err(e: tch::TchError) -> PruneError {
    PruneError::Backend(e.to_string())
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t =
        t.f_to_device(Device::Cpu).map_err(err)?.f_to_kind(Kind::Float).map_err(err)?.f_contiguous().map_err(err)?;
    let flat = t.f_reshape([-1]).map_err(err)?;
    Vec::<f32>::try_from(&flat).map_err(err)
}

fn index(idx: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v).to_device(device)
}

impl TchBackend {
    /// A backend on `device`.
    pub fn new(device: Device) -> Self {
        TchBackend { device }
    }

    /// CUDA device 0 when available, else the CPU.
    pub fn cuda_if_available() -> Self {
        TchBackend { device: Device::cuda_if_available() }
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Moves a tensor of any float kind onto this backend as contiguous f32.
    pub fn adopt(&self, t: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            t.f_to_device(self.device)
                .and_then(|t| t.f_to_kind(Kind::Float))
                .and_then(|t| t.f_contiguous())
                .map_err(err)
        })
    }
}

impl Backend for TchBackend {
    type Matrix = Tensor;

    fn name(&self) -> String {
        format!("torch:{:?}", self.device).to_lowercase()
    }

    fn upload(&self, host: ArrayView2<'_, f32>) -> Result<Tensor> {
        let (r, c) = host.dim();
        // One copy into libtorch: a row-major view is read in place (a transposed or strided one is laid out first).
        let standard = host.as_standard_layout();
        let flat = match standard.as_slice() {
            Some(data) => Tensor::from_slice(data),
            None => Tensor::from_slice(&standard.iter().copied().collect::<Vec<f32>>()),
        };
        flat.f_reshape([r as i64, c as i64]).and_then(|t| t.f_to_device(self.device)).map_err(err)
    }

    fn download(&self, m: &Tensor) -> Result<Array2<f32>> {
        let (r, c) = self.shape(m);
        Array2::from_shape_vec((r, c), to_vec(m)?).map_err(|e| PruneError::Backend(e.to_string()))
    }

    fn shape(&self, m: &Tensor) -> (usize, usize) {
        let s = m.size();
        match s.as_slice() {
            [r, c] => (*r as usize, *c as usize),
            [r] => (*r as usize, 1),
            _ => (0, 0),
        }
    }

    fn first_non_finite(&self, m: &Tensor) -> Result<Option<(usize, f32)>> {
        tch::no_grad(|| {
            let bad = m.f_isfinite().map_err(err)?.f_logical_not().map_err(err)?.f_reshape([-1]).map_err(err)?;
            let positions = bad.f_nonzero().map_err(err)?;
            if positions.size()[0] == 0 {
                return Ok(None);
            }
            let first = positions.f_int64_value(&[0, 0]).map_err(err)?;
            let value = m.f_reshape([-1]).map_err(err)?.f_double_value(&[first]).map_err(err)? as f32;
            Ok(Some((first as usize, value)))
        })
    }

    fn normalize_rows(&self, m: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            let norm = m.f_norm_scalaropt_dim(2, [1i64].as_slice(), true).map_err(err)?;
            m.f_div(&(norm + 1e-8)).map_err(err)
        })
    }

    fn row_norms(&self, m: &Tensor) -> Result<Vec<f32>> {
        tch::no_grad(|| to_vec(&m.f_norm_scalaropt_dim(2, [1i64].as_slice(), false).map_err(err)?))
    }

    fn dots_with_row(&self, m: &Tensor, j: usize) -> Result<Vec<f32>> {
        tch::no_grad(|| to_vec(&m.f_mv(&m.f_get(j as i64).map_err(err)?).map_err(err)?))
    }

    fn dots_with_rows(&self, m: &Tensor, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let n = self.shape(m).0;
        let flat = tch::no_grad(|| -> Result<Vec<f32>> {
            let pivots = m.f_index_select(0, &index(rows, self.device)).map_err(err)?;
            to_vec(&pivots.f_matmul(&m.f_tr().map_err(err)?).map_err(err)?)
        })?;
        Ok(flat.chunks(n.max(1)).map(<[f32]>::to_vec).take(rows.len()).collect())
    }

    fn speculative_columns(&self, _: &Tensor) -> usize {
        // On a GPU every greedy step is a kernel launch plus a copy to the host; computing 16 columns per launch
        // amortises both. libtorch's CPU path keeps one column per pass, as the ndarray backend does for small
        // matrices.
        if self.device.is_cuda() {
            15
        } else {
            0
        }
    }

    fn matmul_t(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
        tch::no_grad(|| to_vec(&a.f_matmul(&b.f_tr().map_err(err)?).map_err(err)?))
    }

    fn nearest_neighbour_dots(&self, a: &Tensor) -> Result<Vec<f32>> {
        const BLOCK: i64 = 256;
        let n = self.shape(a).0 as i64;
        tch::no_grad(|| {
            let mut out = Vec::with_capacity(n as usize);
            let at = a.f_tr().map_err(err)?;
            for start in (0..n).step_by(BLOCK as usize) {
                let len = BLOCK.min(n - start);
                let mut block = a.f_narrow(0, start, len).map_err(err)?.f_matmul(&at).map_err(err)?;
                let rows = Tensor::arange(len, (Kind::Int64, self.device));
                let cols = &rows + start;
                let _ = block
                    .f_index_put_(
                        &[Some(rows), Some(cols)],
                        &Tensor::from(f32::NEG_INFINITY).to_device(self.device),
                        false,
                    )
                    .map_err(err)?;
                let (max, _) = block.f_max_dim(1, false).map_err(err)?;
                out.extend(to_vec(&max)?);
            }
            Ok(out)
        })
    }

    fn rowwise_dots(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
        tch::no_grad(|| {
            to_vec(&a.f_mul(b).map_err(err)?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float).map_err(err)?)
        })
    }

    fn gather_rows(&self, m: &Tensor, idx: &[usize]) -> Result<Tensor> {
        tch::no_grad(|| m.f_index_select(0, &index(idx, self.device)).map_err(err))
    }

    fn combine_rows(&self, m: &Tensor, groups: &[Vec<Weighted>], normalize: bool) -> Result<Tensor> {
        let (_, d) = self.shape(m);
        let (mut src, mut dst, mut w) = (Vec::new(), Vec::new(), Vec::new());
        let mut totals = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let mut total = 0f32;
            for &(i, weight) in group {
                src.push(i);
                dst.push(g);
                w.push(weight);
                total += weight;
            }
            totals.push(if normalize && total != 0.0 { total } else { 1.0 });
        }
        tch::no_grad(|| {
            let out = Tensor::zeros([groups.len() as i64, d as i64], (Kind::Float, self.device));
            if src.is_empty() {
                return Ok(out);
            }
            let weights = Tensor::from_slice(&w).to_device(self.device).f_unsqueeze(1).map_err(err)?;
            let rows = m.f_index_select(0, &index(&src, self.device)).map_err(err)?.f_mul(&weights).map_err(err)?;
            let summed = out.f_index_add(0, &index(&dst, self.device), &rows).map_err(err)?;
            let totals = Tensor::from_slice(&totals).to_device(self.device).f_unsqueeze(1).map_err(err)?;
            summed.f_div(&totals).map_err(err)
        })
    }

    fn max_rows(&self, m: &Tensor, groups: &[Vec<usize>]) -> Result<Tensor> {
        tch::no_grad(|| {
            let rows: Vec<Tensor> = groups
                .iter()
                .map(|g| {
                    m.f_index_select(0, &index(g, self.device))
                        .and_then(|r| r.f_amax([0i64].as_slice(), false))
                        .map_err(err)
                })
                .collect::<Result<_>>()?;
            if rows.is_empty() {
                return Ok(Tensor::zeros([0, self.shape(m).1 as i64], (Kind::Float, self.device)));
            }
            Tensor::f_stack(&rows, 0).map_err(err)
        })
    }

    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        tch::no_grad(|| Tensor::f_cat(parts, 0).map_err(err))
    }
}
