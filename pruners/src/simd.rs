//! The two inner loops every greedy selector spends its time in — a dot product and a plain sum — with AVX-512,
//! AVX2+FMA and portable versions picked once at run time.
//!
//! A greedy step reads the whole `N x D` matrix once; when the matrix sits in cache (LLaVA-1.5's 576 x 4096 is
//! 9.4 MB) the loop is compute-bound and four independent vector accumulators matter; when it does not, the loop is
//! memory-bound and any of the versions saturates bandwidth. Summation order differs between the versions, so picks
//! on inputs with near-exact ties may differ between CPUs (never between runs on one machine).

use std::sync::OnceLock;

type Kernel2 = fn(&[f32], &[f32]) -> f32;
type Kernel1 = fn(&[f32]) -> f32;

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

fn sum_portable(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F; `a` and `b` must have the same length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (l, slot) in acc.iter_mut().enumerate() {
                let x = _mm512_loadu_ps(pa.add(i + 16 * l));
                let y = _mm512_loadu_ps(pb.add(i + 16 * l));
                *slot = _mm512_fmadd_ps(x, y, *slot);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc[0]);
            i += 16;
        }
        let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut sum = _mm512_reduce_add_ps(total);
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    /// Four dot products of `row` with `p[0..4]`, each accumulated exactly as [`dot_avx512`] does, so the results
    /// are bit-identical to four separate calls while `row` is loaded once.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; all slices must have the same length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4_avx512(row: &[f32], p: [&[f32]; 4]) -> [f32; 4] {
        let n = row.len();
        let pr = row.as_ptr();
        let pp = p.map(|s| s.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut i = 0;
        while i + 64 <= n {
            for l in 0..4 {
                let x = _mm512_loadu_ps(pr.add(i + 16 * l));
                for (q, a) in acc.iter_mut().enumerate() {
                    a[l] = _mm512_fmadd_ps(x, _mm512_loadu_ps(pp[q].add(i + 16 * l)), a[l]);
                }
            }
            i += 64;
        }
        while i + 16 <= n {
            let x = _mm512_loadu_ps(pr.add(i));
            for (q, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_fmadd_ps(x, _mm512_loadu_ps(pp[q].add(i)), a[0]);
            }
            i += 16;
        }
        let mut out = [0f32; 4];
        for (q, a) in acc.iter().enumerate() {
            let total = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            let mut sum = _mm512_reduce_add_ps(total);
            for t in i..n {
                sum += *pr.add(t) * *pp[q].add(t);
            }
            out[q] = sum;
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_avx512(a: &[f32]) -> f32 {
        let n = a.len();
        let p = a.as_ptr();
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (l, slot) in acc.iter_mut().enumerate() {
                *slot = _mm512_add_ps(*slot, _mm512_loadu_ps(p.add(i + 16 * l)));
            }
            i += 64;
        }
        let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut sum = _mm512_reduce_add_ps(total);
        while i < n {
            sum += *p.add(i);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (l, slot) in acc.iter_mut().enumerate() {
                *slot = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * l)), _mm256_loadu_ps(pb.add(i + 8 * l)), *slot);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_avx2(a: &[f32]) -> f32 {
        let n = a.len();
        let p = a.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (l, slot) in acc.iter_mut().enumerate() {
                *slot = _mm256_add_ps(*slot, _mm256_loadu_ps(p.add(i + 8 * l)));
            }
            i += 32;
        }
        let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            sum += *p.add(i);
            i += 1;
        }
        sum
    }
}

type KernelMany = fn(&[f32], &[&[f32]], &mut [f32]);

fn dot_many_portable(row: &[f32], pivots: &[&[f32]], out: &mut [f32]) {
    let dot = kernels().0;
    out.iter_mut().zip(pivots).for_each(|(o, p)| *o = dot(row, p));
}

#[cfg(target_arch = "x86_64")]
fn dot_many_avx512(row: &[f32], pivots: &[&[f32]], out: &mut [f32]) {
    let groups = pivots.chunks_exact(4);
    let rest = groups.remainder();
    let mut o = out.chunks_exact_mut(4);
    for (g, slot) in groups.zip(&mut o) {
        // SAFETY: only installed after AVX-512F was detected; the slices are rows of one matrix.
        slot.copy_from_slice(&unsafe { x86::dot4_avx512(row, [g[0], g[1], g[2], g[3]]) });
    }
    let tail = o.into_remainder();
    tail.iter_mut().zip(rest).for_each(|(t, p)| *t = unsafe { x86::dot_avx512(row, p) });
}

fn pick_many() -> KernelMany {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return dot_many_avx512;
        }
    }
    dot_many_portable
}

/// `out[q] = row · pivots[q]`, bit-identical to calling [`dot`] for each pivot but loading `row` once per group of
/// pivots: the kernel of a pass that computes several similarity columns.
#[inline]
pub fn dot_many(row: &[f32], pivots: &[&[f32]], out: &mut [f32]) {
    static KERNEL: OnceLock<KernelMany> = OnceLock::new();
    (KERNEL.get_or_init(pick_many))(row, pivots, out)
}

fn pick() -> (Kernel2, Kernel1) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return (|a, b| unsafe { x86::dot_avx512(a, b) }, |a| unsafe { x86::sum_avx512(a) });
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return (|a, b| unsafe { x86::dot_avx2(a, b) }, |a| unsafe { x86::sum_avx2(a) });
        }
    }
    (dot_portable, sum_portable)
}

fn kernels() -> (Kernel2, Kernel1) {
    static KERNELS: OnceLock<(Kernel2, Kernel1)> = OnceLock::new();
    *KERNELS.get_or_init(pick)
}

/// `Σ a_i·b_i` over the common length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().0)(a, b)
}

/// `Σ a_i`.
#[inline]
pub fn sum(a: &[f32]) -> f32 {
    (kernels().1)(a)
}

/// Sums a large buffer with every core: the memory-bandwidth floor of one pass over a matrix, which the
/// benchmarks compare the greedy selectors against.
pub fn stream_sum(data: &[f32]) -> f32 {
    use rayon::prelude::*;
    data.par_chunks(64 * 1024).map(sum).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_agrees_with_the_portable_one() {
        for len in [0usize, 1, 7, 8, 15, 16, 31, 33, 64, 65, 100, 4096, 4099] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.2).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let tol = 1e-4 * (1.0 + len as f64).sqrt();
            assert!((dot(&a, &b) as f64 - exact).abs() < tol, "dot len {len}");
            assert!((dot_portable(&a, &b) as f64 - exact).abs() < tol, "portable dot len {len}");
            let exact_sum: f64 = a.iter().map(|x| *x as f64).sum();
            assert!((sum(&a) as f64 - exact_sum).abs() < tol, "sum len {len}");
            assert!((sum_portable(&a) as f64 - exact_sum).abs() < tol);
        }
        assert!((stream_sum(&vec![0.5f32; 300_000]) - 150_000.0).abs() < 1.0);
    }

    #[test]
    fn many_dots_are_bit_identical_to_single_dots() {
        for len in [5usize, 64, 100, 4096, 4099] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 31) % 89) as f32 / 30.0 - 1.0).collect();
            let pivots: Vec<Vec<f32>> =
                (0..7).map(|p| (0..len).map(|i| ((i * (p + 3)) % 71) as f32 / 25.0 - 1.3).collect()).collect();
            let refs: Vec<&[f32]> = pivots.iter().map(Vec::as_slice).collect();
            let mut out = vec![0f32; 7];
            dot_many(&row, &refs, &mut out);
            for (o, p) in out.iter().zip(&refs) {
                assert_eq!(o.to_bits(), dot(&row, p).to_bits(), "len {len}");
            }
        }
    }
}
