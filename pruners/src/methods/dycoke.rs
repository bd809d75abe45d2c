//! DyCoke temporal token merging (TTM): in windows of 4 frames, drop the tokens that did not change.
//!
//! ```text
//! keep = int((1 − dycoke_k)·n)                              (n tokens per frame; dycoke_k = 0.7 drops 70 %)
//! stage 1, i = 0, 2, 4, … while i + 1 < F:  frame i whole; frame i+1 keeps its `keep` tokens least similar
//!                                            (cosine, position by position) to frame i
//! stage 2, i = 0, 4, 8, … while i < F − 4:  frame i+2 instead keeps its `keep` tokens least similar to frame i
//! ```
//!
//! So a window `w..w+4` keeps frame `w` whole and compares `w+1` and `w+2` with `w`, `w+3` with `w+2`. This is the
//! official `dycole_ttm` (KD-TAO/DyCoke, `llava/model/llava_arch.py`), with the default `dycoke_k = 0.7` of its
//! lmms-eval integration (`lmms_eval/models/llava_onevision.py`, which passes it to `builder.py`, overriding that
//! function's own default 0.3; the README's example passes 0.7 too). The budget is an upper bound: a budget below
//! the official count is a [`PruneError::BudgetTooSmall`]. Views are processed independently (the official code
//! sees one video). Complexity `O(N·D)`. Source: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video
//! Large Language Models", CVPR 2025 (arXiv 2411.15024). The decode-time dynamic KV part lives in the decoder
//! (`in_decoder::dycoke_kv`).
//!
//! Points where the official loops are followed although they look unintended (`tail=official`, default):
//! - the last window's second stage is skipped (`range(0, F − 4, 4)` stops one window early): its frame `w+2`
//!   stays whole;
//! - with an odd frame count the last frame is never emitted (stage 1 stops at `i + 1 < F`);
//! - for `F <= 4` the official code raises (`torch.stack` of an empty list, and for `F = 1` in stage 1 too); the
//!   loops run as written here (no second stage), and a single frame is kept whole \[project\].
//!
//! `tail=full` \[project, opt-in\]: windows of `window` frames (4 by default) all get the second stage, a final
//! partial window applies the same rule to the frames it has, and no frame is dropped; longer windows continue
//! the pairs (`j` odd compared with `j − 1`, `j` even with `j − 2`).
//! `dycoke_k=budget` \[project, opt-in\]: the compared frames' share follows the budget instead, `k − (whole
//! frames)·n` split evenly over them (largest remainders), so exactly `k` are kept; with `k` equal to the official
//! count this is the official result.
//! Output order \[contract\]: the official code emits a compared frame's tokens in ascending-similarity order
//! (`topk(largest=False)` is sorted); a [`Selection`] is ascending by index (ALGORITHMS.md §1.4), so the same
//! tokens come out in frame-position order. Ties break by the lowest index (§1.7; torch leaves them unspecified).
//! Proof: `pruners/tests/official_dycoke.rs` against the transcription `tests/official/dycoke/make_dycoke.py`.

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{bottom_k, split_proportional};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// DyCoke's temporal token merging stage.
#[derive(Debug, Clone, PartialEq)]
pub struct DyCoke {
    /// Frames per window (4 in the official code; other values only with `full_tail`).
    pub window: usize,
    /// Fraction dropped in compared frames (official 0.7); `None` follows the budget.
    pub dycoke_k: Option<f64>,
    /// Process every window fully (`tail=full`) instead of the official loops' bounds.
    pub full_tail: bool,
}

/// What happens to one frame of a view.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Not emitted (the official odd last frame).
    Dropped,
    /// Kept whole.
    Whole,
    /// Pruned against the given frame of the same view.
    Compared(usize),
}

impl DyCoke {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 3] = [
        ParamSpec {
            name: "dycoke_k",
            default: "0.7",
            help: "fraction dropped in compared frames (lmms-eval default 0.7), or `budget` (follow the budget)",
        },
        ParamSpec {
            name: "tail",
            default: "official",
            help: "official (last window's 2nd stage skipped, odd last frame dropped, as the code) | full",
        },
        ParamSpec { name: "window", default: "4", help: "frames per window, tail=full only (the first kept whole)" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let dycoke_k = match p.text("dycoke_k")? {
            "budget" => None,
            _ => Some(p.float_in("dycoke_k", 0.0, 1.0)?),
        };
        let full_tail = p.choice("tail", &["official", "full"])? == "full";
        let window = p.int_at_least("window", 2)?;
        if !full_tail && window != 4 {
            return Err(PruneError::Param {
                method: "dycoke".into(),
                param: "window".into(),
                reason: format!("= {window} needs tail=full (the official loops are built for windows of 4)"),
            });
        }
        Ok(DyCoke { window, dycoke_k, full_tail })
    }

    /// The role of every frame of a view of `frames` frames.
    fn roles(&self, frames: usize) -> Vec<Role> {
        if self.full_tail {
            return (0..frames)
                .map(|f| {
                    let (start, j) = (f - f % self.window, f % self.window);
                    match j {
                        0 => Role::Whole,
                        1 | 2 => Role::Compared(start),
                        _ => Role::Compared(start + if j % 2 == 1 { j - 1 } else { j - 2 }),
                    }
                })
                .collect();
        }
        if frames == 1 {
            return vec![Role::Whole];
        }
        let mut roles = vec![Role::Dropped; frames];
        for i in (0..frames.saturating_sub(1)).step_by(2) {
            roles[i] = Role::Whole;
            roles[i + 1] = Role::Compared(i);
        }
        for i in (0..frames.saturating_sub(4)).step_by(4) {
            roles[i + 2] = Role::Compared(i);
        }
        roles
    }
}

impl Pruner for DyCoke {
    fn name(&self) -> &'static str {
        "dycoke"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::FrameGrid]
    }

    fn exact_budget(&self) -> bool {
        self.dycoke_k.is_none()
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let (views, frames, h, w) = tokens.grid(self.name())?;
        let per_frame = h * w;
        // Whole frames and (compared frame, reference frame), as global frame indices.
        let mut whole = Vec::new();
        let mut compared = Vec::new();
        let roles = self.roles(frames);
        for v in 0..views {
            for (f, role) in roles.iter().enumerate() {
                match *role {
                    Role::Dropped => {}
                    Role::Whole => whole.push(v * frames + f),
                    Role::Compared(r) => compared.push((v * frames + f, v * frames + r)),
                }
            }
        }
        let fixed = whole.len() * per_frame;
        let shares = match self.dycoke_k {
            // The official `int((1 − dycoke_k)·n)`, in f64 as Python computes it.
            Some(p) => vec![((1.0 - p) * per_frame as f64) as usize; compared.len()],
            None => {
                if k < fixed {
                    return Err(PruneError::BudgetTooSmall {
                        method: self.name(),
                        minimum: fixed,
                        asked: k,
                        reason: "the first frame of every window is kept whole",
                    });
                }
                split_proportional(k - fixed, &vec![1.0; compared.len()], &vec![per_frame; compared.len()])
            }
        };
        let x = backend.normalize_rows(tokens.features())?;
        let mut kept: Vec<usize> = whole.iter().flat_map(|&f| f * per_frame..(f + 1) * per_frame).collect();
        for (&(f, r), &m) in compared.iter().zip(&shares) {
            let rows = |g: usize| (g * per_frame..(g + 1) * per_frame).collect::<Vec<_>>();
            let sims =
                backend.rowwise_dots(&backend.gather_rows(&x, &rows(f))?, &backend.gather_rows(&x, &rows(r))?)?;
            kept.extend(bottom_k(&sims, m).into_iter().map(|p| f * per_frame + p));
        }
        let total = kept.len();
        if total > k {
            return Err(PruneError::BudgetTooSmall {
                method: self.name(),
                minimum: total,
                asked: k,
                reason: "dycoke_k keeps more tokens than the budget allows (dycoke_k=budget follows it)",
            });
        }
        Ok(Selection::from_unsorted(kept, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, Layout, Method};

    #[test]
    fn keeps_first_frames_whole_and_the_changed_tokens_elsewhere() {
        // 4 frames of 2 tokens. Frame 1 changes at position 1 only; frame 2 at position 0; frame 3 equals frame 2.
        let f0 = [[1.0f32, 0.0], [0.0, 1.0]];
        let f1 = [[1.0f32, 0.0], [1.0, 0.0]];
        let f2 = [[0.0f32, 1.0], [0.0, 1.0]];
        let rows: Vec<f32> = [f0, f1, f2, f2].iter().flatten().flatten().copied().collect();
        let x = ndarray::Array2::from_shape_vec((8, 2), rows).unwrap();
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(4, 1, 2)).unwrap();
        let full = DyCoke { window: 4, dycoke_k: None, full_tail: true };
        // tail=full: whole frame 0 (2 tokens) + one token in each of frames 1, 2 (against 0) and 3 (against 2).
        let s = prune(&CpuBackend, &full, &t, Budget::Keep(5)).unwrap();
        assert_eq!(s.kept, vec![0, 1, 3, 4, 6]);
        let err = prune(&CpuBackend, &full, &t, Budget::Keep(1)).unwrap_err();
        assert!(matches!(err, PruneError::BudgetTooSmall { minimum: 2, .. }));
        // The official loops on 4 frames have no second stage: frames 0 and 2 whole, 1 against 0, 3 against 2;
        // the one budgeted token goes to frame 1 (the first compared frame) at its changed position 1.
        let official = DyCoke { full_tail: false, ..full };
        assert_eq!(prune(&CpuBackend, &official, &t, Budget::Keep(5)).unwrap().kept, vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn official_loops_skip_the_last_second_stage_and_drop_an_odd_last_frame() {
        use Role::*;
        let d = DyCoke { window: 4, dycoke_k: Some(0.7), full_tail: false };
        let eight = [Whole, Compared(0), Compared(0), Compared(2), Whole, Compared(4), Whole, Compared(6)];
        assert_eq!(d.roles(8), eight);
        let mut nine = eight.to_vec();
        nine[6] = Compared(4);
        nine.push(Dropped);
        assert_eq!(d.roles(9), nine, "9 frames: the second window gets its second stage, frame 8 is dropped");
        assert_eq!(d.roles(3), [Whole, Compared(0), Dropped]);
        assert_eq!(d.roles(1), [Whole]);
        let full = DyCoke { full_tail: true, ..d };
        assert_eq!(full.roles(9)[6..], [Compared(4), Compared(6), Whole]);
        // int((1 − 0.7)·16) = int(4.800000000000001) = 4 per compared frame: 2 whole frames + 2·4 tokens.
        let x = ndarray::Array2::from_shape_fn((64, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f32 + 1.0);
        let t = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(4, 4, 4)).unwrap();
        assert_eq!(prune(&CpuBackend, &d, &t, Budget::Keep(63)).unwrap().kept.len(), 40);
        let err = prune(&CpuBackend, &d, &t, Budget::Keep(39)).unwrap_err();
        assert!(matches!(err, PruneError::BudgetTooSmall { minimum: 40, .. }));
        assert!(Method::from_spec("dycoke:window=6").is_err(), "window needs tail=full");
        assert!(Method::from_spec("dycoke:window=6,tail=full").is_ok());
    }
}
