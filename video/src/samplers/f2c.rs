//! F2C key-clip selection: spend a fixed visual-token budget on short clips around the moments most relevant to
//! the question, trading clip length against resolution.
//!
//! ```text
//! r_i = cos(E_img(f_i), E_txt(Q))                         (given: one relevance per candidate frame)
//! candidates = local maxima of r (r_i > r_{i−1} and r_i ≥ r_{i+1}; a plateau gives its first index)
//! anchors    = the best-r candidate of each of K clusters of a 1-D K-means on candidate times
//! (H, W), L  = first rung of the ladder, highest resolution first, with L = ⌊B / (K·tok(H, W))⌋ ≥ L_min
//! clips      = L consecutive frames centred on each anchor, shifted inside [0, T−1], overlaps merged
//! ```
//!
//! Choices the paper leaves open, fixed here \[project\]: K-means starts from the quantiles of the sorted candidate
//! times and iterates Lloyd steps until assignments stop changing (at most 100); with no rung reaching `L_min` the
//! lowest resolution is used with whatever `L >= 1` it allows; if even that gives `L < 1`, `K` drops to
//! `⌊B / tok_min⌋`; fewer candidates than `K` make every candidate an anchor and the rest the most relevant other
//! frames; a flat curve gives `K` uniform anchors; `T·tok <= B` keeps every frame at the highest resolution that
//! fits. A moving-average `smooth` window (default 1 = off) is applied to `r` first. Frames freed by overlapping
//! clips are not re-spent; the plan reports the tokens actually used.
//! Complexity: `O(T)` plus a tiny 1-D K-means. Relevance needs an image-text model; see [`super::FrameScorer`].
//! Source: Sun et al., "From Frames to Clips: Efficient Key Clip Selection for Long-Form Video Understanding",
//! arXiv 2510.02262 (no public code; ALGORITHMS.md §2.2).

use super::SampleError;

/// One rung of the resolution ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Frame side in pixels (square frames).
    pub side: u32,
    /// Visual tokens one frame costs at this side.
    pub tokens: usize,
}

/// SigLIP patch 14 with LLaVA-OneVision's 2x2 video pooling: `(side / 28)²` tokens per frame.
pub const ONEVISION_LADDER: [Rung; 5] = [
    Rung { side: 392, tokens: 196 },
    Rung { side: 336, tokens: 144 },
    Rung { side: 280, tokens: 100 },
    Rung { side: 224, tokens: 64 },
    Rung { side: 168, tokens: 36 },
];

/// F2C settings.
#[derive(Debug, Clone, PartialEq)]
pub struct F2c {
    /// Visual tokens for the whole video.
    pub budget: usize,
    /// Number of key clips.
    pub anchors: usize,
    /// Shortest acceptable clip before the resolution drops.
    pub min_clip: usize,
    /// Moving-average window over the relevance curve (1 = off).
    pub smooth: usize,
    /// Resolutions, any order.
    pub ladder: Vec<Rung>,
}

/// What F2C chose.
#[derive(Debug, Clone, PartialEq)]
pub struct F2cPlan {
    /// Candidate-frame indices to encode, ascending.
    pub frames: Vec<usize>,
    /// The anchors, ascending.
    pub anchors: Vec<usize>,
    /// Frames per clip.
    pub clip_len: usize,
    /// The resolution chosen.
    pub rung: Rung,
    /// Tokens the frames cost (at most the budget).
    pub tokens: usize,
}

fn smooth(r: &[f32], window: usize) -> Vec<f32> {
    if window <= 1 {
        return r.to_vec();
    }
    let half = window / 2;
    (0..r.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(r.len()));
            r[lo..hi].iter().sum::<f32>() / (hi - lo) as f32
        })
        .collect()
}

/// Local maxima (strict on the left, non-strict on the right; the ends compare with their one neighbour).
pub fn local_maxima(r: &[f32]) -> Vec<usize> {
    (0..r.len()).filter(|&i| (i == 0 || r[i] > r[i - 1]) && (i + 1 == r.len() || r[i] >= r[i + 1])).collect()
}

/// Deterministic 1-D K-means on sorted `times`; returns the cluster of each time.
fn kmeans_1d(times: &[usize], k: usize) -> Vec<usize> {
    let m = times.len();
    let mut centres: Vec<f64> = (0..k).map(|c| times[((2 * c + 1) * m / (2 * k)).min(m - 1)] as f64).collect();
    let mut assignment = vec![usize::MAX; m];
    for _ in 0..100 {
        let next: Vec<usize> = times
            .iter()
            .map(|&t| {
                (0..k)
                    .min_by(|&a, &b| {
                        (t as f64 - centres[a]).abs().total_cmp(&(t as f64 - centres[b]).abs()).then(a.cmp(&b))
                    })
                    .unwrap_or(0)
            })
            .collect();
        if next == assignment {
            break;
        }
        assignment = next;
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<f64> =
                times.iter().zip(&assignment).filter(|(_, &a)| a == c).map(|(&t, _)| t as f64).collect();
            if !members.is_empty() {
                *centre = members.iter().sum::<f64>() / members.len() as f64;
            }
        }
    }
    assignment
}

impl F2c {
    /// Plans which of the `relevance.len()` candidate frames to encode and at what resolution.
    pub fn plan(&self, relevance: &[f32]) -> Result<F2cPlan, SampleError> {
        let t = relevance.len();
        if t == 0 {
            return Err(SampleError::NoFrames);
        }
        let mut ladder = self.ladder.clone();
        ladder.sort_by_key(|r| std::cmp::Reverse(r.tokens));
        let lowest =
            *ladder.last().ok_or(SampleError::Param { sampler: "f2c", reason: "empty resolution ladder".into() })?;
        if lowest.tokens == 0 || self.budget < lowest.tokens {
            return Err(SampleError::Param {
                sampler: "f2c",
                reason: format!(
                    "budget {} is below one frame at the lowest resolution ({} tokens)",
                    self.budget, lowest.tokens
                ),
            });
        }
        // Everything fits: all frames at the highest resolution that allows it.
        if let Some(&rung) = ladder.iter().find(|r| t * r.tokens <= self.budget) {
            return Ok(F2cPlan {
                frames: (0..t).collect(),
                anchors: Vec::new(),
                clip_len: t,
                rung,
                tokens: t * rung.tokens,
            });
        }
        let mut k = self.anchors.max(1);
        let (rung, clip_len) = match ladder.iter().find(|r| self.budget / (k * r.tokens) >= self.min_clip.max(1)) {
            Some(&r) => (r, self.budget / (k * r.tokens)),
            None => {
                if self.budget / (k * lowest.tokens) == 0 {
                    k = self.budget / lowest.tokens;
                }
                (lowest, (self.budget / (k * lowest.tokens)).max(1))
            }
        };
        let clip_len = clip_len.min(t);
        let anchors = self.anchors_for(&smooth(relevance, self.smooth), k);
        let mut frames: Vec<usize> = anchors
            .iter()
            .flat_map(|&a| {
                let start = a.saturating_sub((clip_len - 1) / 2).min(t - clip_len);
                start..start + clip_len
            })
            .collect();
        frames.sort_unstable();
        frames.dedup();
        let tokens = frames.len() * rung.tokens;
        Ok(F2cPlan { frames, anchors, clip_len, rung, tokens })
    }

    fn anchors_for(&self, r: &[f32], k: usize) -> Vec<usize> {
        let t = r.len();
        let flat = r.iter().all(|&v| v == r[0]);
        let mut anchors = if flat {
            (0..k.min(t)).map(|i| if k == 1 { 0 } else { i * (t - 1) / (k - 1) }).collect()
        } else {
            let candidates = local_maxima(r);
            if candidates.len() <= k {
                let mut chosen = candidates.clone();
                let mut others: Vec<usize> = (0..t).filter(|i| !candidates.contains(i)).collect();
                others.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
                chosen.extend(others.into_iter().take(k - candidates.len()));
                chosen
            } else {
                let assignment = kmeans_1d(&candidates, k);
                (0..k)
                    .filter_map(|c| {
                        candidates
                            .iter()
                            .zip(&assignment)
                            .filter(|(_, &a)| a == c)
                            .map(|(&i, _)| i)
                            .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
                    })
                    .collect()
            }
        };
        anchors.sort_unstable();
        anchors.dedup();
        anchors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f2c(budget: usize, anchors: usize) -> F2c {
        F2c { budget, anchors, min_clip: 4, smooth: 1, ladder: ONEVISION_LADDER.to_vec() }
    }

    #[test]
    fn maxima_follow_the_plateau_and_end_rules() {
        assert_eq!(local_maxima(&[1.0, 3.0, 2.0, 2.0, 5.0, 5.0, 1.0]), vec![1, 4]);
        assert_eq!(local_maxima(&[4.0, 1.0, 2.0]), vec![0, 2]);
    }

    #[test]
    fn clips_centre_on_the_peaks_of_each_cluster() {
        // 100 candidate frames; peaks at 10 and 12 (one cluster) and 80 (another).
        let mut r = vec![0.0f32; 100];
        r[10] = 0.5;
        r[12] = 0.9;
        r[80] = 0.7;
        // 2 anchors, 1568 tokens: 392 px -> 1568 / (2·196) = 4 frames per clip = L_min.
        let plan = f2c(1568, 2).plan(&r).unwrap();
        assert_eq!(plan.anchors, vec![12, 80]);
        assert_eq!(plan.rung.side, 392);
        assert_eq!(plan.clip_len, 4);
        assert_eq!(plan.frames, vec![11, 12, 13, 14, 79, 80, 81, 82]);
        assert!(plan.tokens <= 1568);
    }

    #[test]
    fn a_small_budget_trades_resolution_for_clip_length() {
        let mut r = vec![0.0f32; 100];
        r[30] = 1.0;
        r[70] = 0.8;
        // 600 tokens, 2 anchors: 392 -> L=1, 336 -> 2, 280 -> 3, 224 -> 4 >= L_min.
        let plan = f2c(600, 2).plan(&r).unwrap();
        assert_eq!((plan.rung.side, plan.clip_len), (224, 4));
        // Too small for two clips even at the lowest rung: K drops to 1.
        let plan = f2c(40, 2).plan(&r).unwrap();
        assert_eq!((plan.anchors.clone(), plan.clip_len, plan.rung.side), (vec![30], 1, 168));
    }

    #[test]
    fn flat_curves_short_videos_and_clips_at_the_edges() {
        let plan = f2c(1568, 2).plan(&[0.3; 50]).unwrap();
        assert_eq!(plan.anchors, vec![0, 49]);
        assert_eq!(plan.frames, vec![0, 1, 2, 3, 46, 47, 48, 49]);
        let plan = f2c(100_000, 4).plan(&[0.1, 0.5, 0.2]).unwrap();
        assert_eq!((plan.frames, plan.rung.side), (vec![0, 1, 2], 392));
        assert!(f2c(10, 2).plan(&[0.1; 20]).is_err());
        assert_eq!(f2c(1000, 2).plan(&[]), Err(SampleError::NoFrames));
    }
}
