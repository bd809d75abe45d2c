//! Image resizing that reproduces, bit for bit, the two 8-bit resamplers behind Hugging Face's processors (RGB,
//! bicubic and bilinear): Pillow's `Image.resize` (no `reducing_gap`; the PIL-backed image processors) and
//! libtorch's anti-aliased uint8 kernel that torchvision's `resize(..., antialias=True)` runs natively on the CPU
//! (the torchvision-backed processors, every video processor among them).
//!
//! Both convolve separably — all rows horizontally, then the columns of that result vertically, a pass skipped when
//! its side keeps its size — with a filter widened by the downscale factor (antialiasing), weights normalised per
//! output pixel and converted to fixed point, sums rounded and clipped to 8 bits after each pass. They differ in
//! three places, all from their sources:
//! - precision: Pillow's fixed 22 bits (`Resample.c`, `PRECISION_BITS`); libtorch's int16 weights with the largest
//!   precision `p < 22` that keeps `wt_max · 2^(p+1)` below 2^15 (`UpSampleKernel.cpp`,
//!   `_compute_index_ranges_int16_weights`), chosen per axis;
//! - the cubic's second piece: Pillow evaluates `(((x − 5)x + 8)x − 4)·a`, libtorch `((a·x − 5a)x + 8a)x − 4a`, and its
//!   AVX2 build (the one x86 machines run) contracts both pieces into fused multiply-adds, which is reproduced here;
//! - libtorch clamps each window to `2·ceil(support) + 1` taps.
//!
//! Pillow's steps follow `Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc`/`Vertical`); libtorch's `UpSampleKernel.cpp` and `UpSampleKernelAVXAntialias.h`
//! (whose integer sums are exact, so the summation order does not matter). Cost `O(H·W'·k + H'·W'·k)` for filter
//! width `k`. Not reproduced: libtorch's generic (non-AVX2) uint8 path writes row 0 into every row of a one-pixel-wide
//! output, and its AVX2 path fails on some 1 x 1 outputs; both are defects of those paths.

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Pillow `BILINEAR` (triangle, support 1); Hugging Face `resample=2`.
    Bilinear,
    /// Pillow `BICUBIC` (Keys, a = −0.5, support 2); Hugging Face `resample=3`.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// libtorch's `aa_filter` as its AVX2 build evaluates it (fused multiply-adds in the cubic; the triangle is
    /// Pillow's).
    fn torch_weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => self.weight(x),
            Filter::Bicubic if x < 1.0 => x.mul_add(x * 1.5f64.mul_add(x, -2.5), 1.0),
            Filter::Bicubic if x < 2.0 => (-0.5f64).mul_add(x, 2.5).mul_add(x, -4.0).mul_add(x, 2.0),
            Filter::Bicubic => 0.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }

    /// The Hugging Face / Pillow integer code (`2` bilinear, `3` bicubic).
    pub fn from_pil(code: i64) -> Option<Self> {
        match code {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }
}

/// Which resampler to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// Pillow's `Image.resize` (transformers' PIL-backed processors).
    #[default]
    Pillow,
    /// torchvision's `resize(uint8, antialias=True)`: libtorch's uint8 kernel (transformers' torchvision-backed
    /// processors, such as the Qwen-VL video processors).
    Torchvision,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first source index and fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
    ksize: usize,
    precision: u32,
}

fn coefficients_for(in_size: usize, out_size: usize, filter: Filter, kernel: Kernel) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut normalised = vec![0f64; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates toward zero with `(int)`; the clamps keep the window inside the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let mut count = xmax.saturating_sub(xmin);
        if kernel == Kernel::Torchvision {
            // libtorch: "xsize can be one more than kmax due to precision".
            count = count.min(ksize);
        }
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(count) {
            let at = (x as f64 + xmin as f64 - center + 0.5) * ss;
            *w = match kernel {
                Kernel::Pillow => filter.weight(at),
                Kernel::Torchvision => filter.torch_weight(at),
            };
            total += *w;
        }
        for x in 0..ksize {
            normalised[xx * ksize + x] = if x < count && total != 0.0 { k[x] / total } else { 0.0 };
        }
        bounds.push((xmin, count));
    }
    let precision = match kernel {
        Kernel::Pillow => PRECISION_BITS,
        Kernel::Torchvision => {
            let wt_max = normalised.iter().copied().fold(0.0, f64::max);
            (0..22u32).find(|&p| (0.5 + wt_max * (1u64 << (p + 1)) as f64) as i64 >= 1 << 15).unwrap_or(22)
        }
    };
    let one = (1u64 << precision) as f64;
    let weights = normalised
        .iter()
        .map(|&w| {
            let fixed = w * one;
            if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            }
        })
        .collect();
    Coefficients { bounds, weights, ksize, precision }
}

/// A sum of `precision`-bit fixed-point products to 8 bits (both resamplers' clip: an arithmetic shift, clamped).
#[inline]
fn clip8(v: i64, precision: u32) -> u8 {
    if v >= (1i64 << precision) * 256 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> precision) as u8
    }
}

/// Resizes an RGB8 image (`height x width x 3`, row-major) to `out_w x out_h` exactly as Pillow does.
pub fn resize_rgb8(rgb: &[u8], width: usize, height: usize, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    resize_rgb8_with(rgb, width, height, out_w, out_h, filter, Kernel::Pillow)
}

/// Resizes an RGB8 image (`height x width x 3`, row-major) to `out_w x out_h` exactly as `kernel` does.
pub fn resize_rgb8_with(
    rgb: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    kernel: Kernel,
) -> Vec<u8> {
    // Horizontal pass (skipped when the width does not change, as both resamplers do).
    let horizontal = if out_w != width {
        let c = coefficients_for(width, out_w, filter, kernel);
        let rounding = 1i64 << (c.precision - 1);
        let mut out = vec![0u8; height * out_w * 3];
        for y in 0..height {
            let row = &rgb[y * width * 3..(y + 1) * width * 3];
            for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + count];
                for ch in 0..3 {
                    let mut ss = rounding;
                    for (x, &w) in k.iter().enumerate() {
                        ss += row[(xmin + x) * 3 + ch] as i64 * w as i64;
                    }
                    out[(y * out_w + xx) * 3 + ch] = clip8(ss, c.precision);
                }
            }
        }
        out
    } else {
        rgb.to_vec()
    };
    if out_h == height {
        return horizontal;
    }
    let c = coefficients_for(height, out_h, filter, kernel);
    let rounding = 1i64 << (c.precision - 1);
    let mut out = vec![0u8; out_h * out_w * 3];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + count];
        for x in 0..out_w * 3 {
            let mut ss = rounding;
            for (y, &w) in k.iter().enumerate() {
                ss += horizontal[(ymin + y) * out_w * 3 + x] as i64 * w as i64;
            }
            out[yy * out_w * 3 + x] = clip8(ss, c.precision);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity_and_flat_stays_flat() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_rgb8(&rgb, 4, 3, 4, 3, Filter::Bicubic), rgb);
        let flat = vec![77u8; 10 * 6 * 3];
        assert!(resize_rgb8(&flat, 10, 6, 3, 5, Filter::Bicubic).iter().all(|&v| v == 77));
        assert!(resize_rgb8(&flat, 10, 6, 23, 17, Filter::Bilinear).iter().all(|&v| v == 77));
    }

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(100usize, 37usize), (37, 100), (336, 336), (640, 224)] {
            let c = coefficients_for(i, o, Filter::Bicubic, Kernel::Pillow);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize].iter().map(|&w| w as i64).sum();
                assert!((s - (1i64 << PRECISION_BITS)).abs() <= c.ksize as i64, "{i}->{o} at {xx}: {s}");
            }
        }
    }
}
