//! Uniform sampling in the two harness conventions, and fixed-rate sampling.
//!
//! | name | indices for `k` of `N` frames | harness |
//! |---|---|---|
//! | `uniform` (inclusive) | `linspace(0, N − 1, k)`, truncated | lmms-eval video loaders |
//! | `uniform-interior` | `floor(i·N/(k+1))` for `i = 1..k` | VLMEvalKit |
//! | `fps` | one frame every `1/r` s, at most `max` frames (uniform among them when more) | VLMEvalKit `_1fps`, V-NIAH |
//!
//! lmms-eval's loaders disagree on truncation versus rounding; tokensieve truncates (ALGORITHMS.md §2.1) and a
//! result records the sampler by name. `k >= N` returns every frame; `k = 1` gives frame 0 (inclusive) or
//! `floor(N/2)` (interior); `N = 0` is an error. `O(k)`.

use super::SampleError;

/// The two uniform conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniform {
    /// lmms-eval: both ends included.
    Inclusive,
    /// VLMEvalKit: ends excluded.
    Interior,
}

impl Uniform {
    /// The sampler's name as results record it.
    pub fn name(self) -> &'static str {
        match self {
            Uniform::Inclusive => "uniform",
            Uniform::Interior => "uniform-interior",
        }
    }
}

/// `k` frame indices of `n` under `convention`, ascending and unique.
pub fn uniform_indices(n: usize, k: usize, convention: Uniform) -> Result<Vec<usize>, SampleError> {
    if n == 0 {
        return Err(SampleError::NoFrames);
    }
    if k == 0 {
        return Err(SampleError::Param { sampler: convention.name(), reason: "pick at least one frame".into() });
    }
    if k >= n {
        return Ok((0..n).collect());
    }
    Ok(match convention {
        Uniform::Inclusive if k == 1 => vec![0],
        Uniform::Inclusive => (0..k).map(|i| (i as f64 * (n - 1) as f64 / (k - 1) as f64) as usize).collect(),
        Uniform::Interior => (1..=k).map(|i| i * n / (k + 1)).collect(),
    })
}

/// Frames at `rate` per second of a video of `n` frames at `fps`, at most `max` (uniform among them when more).
/// Frame `i` is the first frame at or after `i / rate` seconds.
pub fn fps_indices(n: usize, fps: f64, rate: f64, max: usize) -> Result<Vec<usize>, SampleError> {
    if n == 0 {
        return Err(SampleError::NoFrames);
    }
    if !(rate > 0.0 && fps > 0.0) || max == 0 {
        return Err(SampleError::Param {
            sampler: "fps",
            reason: format!("rate {rate}, fps {fps} and max {max} must be positive"),
        });
    }
    let duration = n as f64 / fps;
    let mut picks: Vec<usize> = (0..)
        .map(|i| i as f64 / rate)
        .take_while(|t| *t < duration)
        .map(|t| ((t * fps).ceil() as usize).min(n - 1))
        .collect();
    picks.dedup();
    if picks.len() > max {
        let keep = uniform_indices(picks.len(), max, Uniform::Inclusive)?;
        picks = keep.into_iter().map(|i| picks[i]).collect();
    }
    Ok(picks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_harness_conventions() {
        assert_eq!(uniform_indices(100, 5, Uniform::Inclusive).unwrap(), vec![0, 24, 49, 74, 99]);
        assert_eq!(uniform_indices(100, 4, Uniform::Interior).unwrap(), vec![20, 40, 60, 80]);
        assert_eq!(uniform_indices(10, 1, Uniform::Inclusive).unwrap(), vec![0]);
        assert_eq!(uniform_indices(10, 1, Uniform::Interior).unwrap(), vec![5]);
        assert_eq!(uniform_indices(3, 8, Uniform::Interior).unwrap(), vec![0, 1, 2]);
        assert_eq!(uniform_indices(0, 8, Uniform::Inclusive), Err(SampleError::NoFrames));
        assert!(matches!(uniform_indices(10, 0, Uniform::Interior), Err(SampleError::Param { .. })));
    }

    #[test]
    fn fixed_rate_with_a_cap() {
        // 10 s at 25 fps, 1 frame per second -> frames 0, 25, ..., 225.
        assert_eq!(fps_indices(250, 25.0, 1.0, 100).unwrap(), (0..10).map(|i| i * 25).collect::<Vec<_>>());
        // Capped at 4: uniform among the 10.
        assert_eq!(fps_indices(250, 25.0, 1.0, 4).unwrap(), vec![0, 75, 150, 225]);
        // Faster than the video's own rate: every frame once.
        assert_eq!(fps_indices(5, 2.0, 10.0, 100).unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(fps_indices(5, 2.0, 0.0, 100).is_err());
    }
}
