//! The decoder's linear layers: dense weights in the compute dtype, or weight-only int8 (`--precision q8` on the
//! torch backend) for decoding on a CPU.
//!
//! A decode step multiplies one row by every weight of the model, so on a CPU it is bound by the bytes of weights
//! read per token (about 2 GB for a 0.5 B decoder in f32, 1 GB in bf16), not by arithmetic; int8 weights read a
//! quarter of f32's bytes. Each output row `n` of `W [N, K]` is quantised symmetrically with its own scale:
//!
//! `s_n = max_k |W[n, k]| / 127`, rounded to the activations' dtype, then `Q[n, k] = round(W[n, k] / s_n)` in
//! `[-127, 127]`, and `y = (x Qᵀ) · s`: libtorch's `_weight_int8pack_mm` (the CPU kernel gpt-fast and torchao's int8
//! weight-only mode use), which takes 2-D activations in the scales' dtype. Rounding the scale before computing `Q`
//! makes `Q · s` exactly what the kernel multiplies by, so the only error is int8 rounding (at most `s_n / 2` per
//! weight). Activations stay in floating point (ONNX Runtime's q8 graphs quantise them too, per tensor, with one
//! weight scale per tensor), so at the same weight bytes this is the more accurate of the two.
//!
//! The kernel is fast for a few rows and slow for many (measured here with 2 threads on a [4864, 896] weight: 0.14 ms
//! for 1 row against 0.52 ms dense bf16, but 54 ms for 793 rows against 3.7 ms), so a call with more than
//! [`INT8_KERNEL_MAX_ROWS`] rows (a prefill) dequantises the weight into the compute dtype and runs the dense matmul
//! (a `[N, K]` temporary; about 1 ms per 4864 x 896 weight), and so does an input width that is not a multiple of
//! 16 (the kernel's vector loop has no tail). Only the int8 weights stay in memory, except that a LM head tied to
//! the embeddings adds its int8 copy to the dense embedding table the lookup still reads. A batch of more than 16
//! rows per decode step (`Llama::generate_batch`) dequantises every weight at every step: int8 is meant for one
//! sequence or small batches.
//!
//! On x86-64 activations reach the kernel in bf16 whatever the compute dtype: libtorch vectorises the kernel only for
//! bf16 activations (converting them with shifts, AVX2 or AVX-512) and runs f32 and f16 ones in a scalar loop (8.7 ms
//! against 53 ms for Qwen2-0.5B's LM head here). Elsewhere they stay in the compute dtype. A pure-Rust AVX512-VNNI int8 x int8 product was tried as well: alone it ran the 0.5 B decoder's linears in
//! 27 ms against this kernel's 43 ms, but inside a decode step its threads competed with libtorch's OpenMP team
//! (which spins between operations) and the step was slower than with this kernel (19 against 22-25 tokens/s).

use tch::{Device, Kind, TchError, Tensor};

/// How the decoder's linear weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderWeights {
    /// In the compute dtype, as loaded.
    #[default]
    Dense,
    /// Weight-only int8 with one scale per output row (the module docs); CPU only.
    Int8,
}

/// Calls with at most this many rows use the int8 kernel; more rows dequantise and run dense.
pub const INT8_KERNEL_MAX_ROWS: i64 = 16;

/// Rows quantised at a time, so converting a large matrix (a 151936-row LM head) costs one block's f32 copy.
const QUANTIZE_BLOCK: i64 = 8192;

/// One linear layer's weight `[out, in]` (its bias stays with the layer).
pub enum Linear {
    /// Dense, in the compute dtype.
    Dense(Tensor),
    /// Int8 weights `[out, in]` and per-row scales `[out]` in `act`, the dtype activations are multiplied in.
    Int8 {
        /// The quantised weight.
        weight: Tensor,
        /// One scale per output row, in `act`.
        scales: Tensor,
        /// The activations' dtype inside the kernel.
        act: Kind,
    },
}

impl Linear {
    /// `x Wᵀ (+ bias)` in `x`'s dtype, for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, TchError> {
        let (weight, scales, act) = match self {
            Linear::Dense(w) => return x.f_linear(w, bias),
            Linear::Int8 { weight, scales, act } => (weight, scales, *act),
        };
        let size = x.size();
        let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
        let k = *size.last().unwrap_or(&0);
        let out = if rows <= INT8_KERNEL_MAX_ROWS && k % 16 == 0 {
            let mut shape = size.clone();
            if let Some(last) = shape.last_mut() {
                *last = weight.size()[0];
            }
            let a = x.f_reshape([rows, k])?.f_to_kind(act)?.f_contiguous()?;
            a.f_internal_weight_int8pack_mm(weight, scales)?.f_to_kind(x.kind())?.f_reshape(shape.as_slice())?
        } else {
            let dense = weight.f_to_kind(x.kind())?.f_mul(&scales.f_to_kind(x.kind())?.f_unsqueeze(1)?)?;
            x.f_linear::<&Tensor>(&dense, None)?
        };
        match bias {
            Some(b) => out.f_add(b),
            None => Ok(out),
        }
    }

    /// The same layer with int8 weights, converted 8192 rows at a time (so a large matrix costs one
    /// block's f32 copy, not its own); an int8 layer is returned unchanged.
    pub fn quantized(self) -> Result<Self, TchError> {
        let Linear::Dense(w) = self else { return Ok(self) };
        let act = int8_activations(w.device(), w.kind());
        let _guard = tch::no_grad_guard();
        let rows = w.size2()?.0;
        let (mut weights, mut scales) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < rows {
            let len = QUANTIZE_BLOCK.min(rows - start);
            let block = w.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?;
            let absmax = block.f_abs()?.f_amax([1i64].as_slice(), false)?;
            // A zero row gets scale 1 (its weights quantise to 0 either way), so nothing divides by zero. The scale is
            // rounded to `act` before dividing, so Q · s is what the kernel computes with.
            let scale = absmax.f_div_scalar(127.0)?.f_where_scalarother(&absmax.f_gt(0.0)?, 1.0)?.f_to_kind(act)?;
            let q = block
                .f_div(&scale.f_to_kind(Kind::Float)?.f_unsqueeze(1)?)?
                .f_round()?
                .f_clamp(-127.0, 127.0)?
                .f_to_kind(Kind::Int8)?;
            weights.push(q);
            scales.push(scale);
            start += len;
        }
        drop(w);
        Ok(Linear::Int8 { weight: Tensor::f_cat(&weights, 0)?, scales: Tensor::f_cat(&scales, 0)?, act })
    }

    /// Output features (rows of the weight).
    pub fn out_features(&self) -> i64 {
        match self {
            Linear::Dense(w) | Linear::Int8 { weight: w, .. } => w.size()[0],
        }
    }

    /// Bytes the weights (and scales) occupy.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        match self {
            Linear::Dense(w) => size(w),
            Linear::Int8 { weight, scales, .. } => size(weight) + size(scales),
        }
    }
}

/// The activation dtype for the int8 kernel on `device` when the model computes in `compute`: bf16 on an x86-64
/// CPU (the only activations libtorch's kernel vectorises there), else `compute`.
fn int8_activations(device: Device, compute: Kind) -> Kind {
    if device == Device::Cpu && cfg!(target_arch = "x86_64") {
        Kind::BFloat16
    } else {
        compute
    }
}
