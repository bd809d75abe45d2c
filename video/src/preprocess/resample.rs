//! Image resizing that reproduces Pillow's `Image.resize` bit for bit (8-bit RGB, bicubic and bilinear, no
//! `reducing_gap`), the resampler behind Hugging Face's image processors.
//!
//! Pillow convolves separably — all rows horizontally, then the columns of that result vertically — with a filter
//! widened by the downscale factor (antialiasing), weights normalised per output pixel and converted to 22-bit
//! fixed point, sums rounded and clipped to 8 bits after each pass. Each step below follows `Resample.c`
//! (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`/`Vertical`), so the output
//! equals Pillow's exactly rather than within a tolerance. Cost `O(H·W'·k + H'·W'·k)` for filter width `k`.

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

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first source index and fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
    ksize: usize,
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates toward zero with `(int)`; the clamps keep the window inside the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(count) {
            *w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *w;
        }
        for x in 0..ksize {
            let w = if x < count && total != 0.0 { k[x] / total } else { 0.0 };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, count));
    }
    Coefficients { bounds, weights, ksize }
}

#[inline]
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) * 256 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an RGB8 image (`height x width x 3`, row-major) to `out_w x out_h` exactly as Pillow does.
pub fn resize_rgb8(rgb: &[u8], width: usize, height: usize, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    let rounding = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass (skipped when the width does not change, as Pillow does).
    let horizontal = if out_w != width {
        let c = coefficients(width, out_w, filter);
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
                    out[(y * out_w + xx) * 3 + ch] = clip8(ss);
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
    let c = coefficients(height, out_h, filter);
    let mut out = vec![0u8; out_h * out_w * 3];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + count];
        for x in 0..out_w * 3 {
            let mut ss = rounding;
            for (y, &w) in k.iter().enumerate() {
                ss += horizontal[(ymin + y) * out_w * 3 + x] as i64 * w as i64;
            }
            out[yy * out_w * 3 + x] = clip8(ss);
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
            let c = coefficients(i, o, Filter::Bicubic);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize].iter().map(|&w| w as i64).sum();
                assert!((s - (1i64 << PRECISION_BITS)).abs() <= c.ksize as i64, "{i}->{o} at {xx}: {s}");
            }
        }
    }
}
