//! LaVida-style query-aware selection with spatial-temporal recovery (a training-free stand-in).
//!
//! LaVida Drive learns which high-resolution patches a driving question needs and fuses the rest back in. This
//! stand-in keeps the `k` tokens most relevant to the query and merges every dropped token into its most similar
//! kept token of the same (or a neighbouring) frame, so context survives while the count stays `k`:
//!
//! ```text
//! r_i = sign · agg_j cos(x_i, q_j)                       (agg = mean | max over query rows)
//! K   = top-k(r)
//! s(u) = argmax_{s∈K, |f(s)−f(u)|≤Δt} cos(x_u, x_s),  w_u = max(0, cos(x_u, x_s(u)))   (dropped u, w_u > min_sim)
//! x'_s = (x_s + Σ_{u→s} w_u x_u) / (1 + Σ_{u→s} w_u)
//! ```
//!
//! The cosine is taken in the query's space when the tokens carry one (a dual encoder's patch embeddings,
//! `TokenSet::with_query_space`), on the features otherwise; the recovery merge always works on the features.
//! A given `relevance` signal replaces the first line; with neither query nor relevance the method falls back to
//! the importance source (`auto`: CLS attention, else L2 norm) and notes that the run was query-agnostic.
//! Complexity: `O(N·T·D)` relevance plus `O((N−k)·k_w·D)` recovery, `k_w` = kept tokens in the window, computed in
//! blocks of 1024 dropped tokens. Defaults: `agg = mean`, `sign = +1`, `recovery = on`, `window = 0`, `min_sim = 0`.
//! Source: Jiao et al., "LaVida Drive", arXiv 2411.12980 (no public code; ALGORITHMS.md §3.3.2 \[project\]).

use super::importance::importance;
use crate::backend::Backend;
use crate::error::Result;
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// Query-aware top-k with similarity-weighted recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAware {
    /// Aggregate over query rows: `mean` or `max`.
    pub agg: &'static str,
    /// +1, or −1 to reproduce CDPruner's CLIP-specific sign.
    pub sign: f32,
    /// Merge dropped tokens into kept ones.
    pub recovery: bool,
    /// Frames a dropped token may look across for its kept partner.
    pub window: usize,
    /// Dropped tokens whose best similarity is at most this are discarded, not merged.
    pub min_sim: f32,
}

impl QueryAware {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 5] = [
        ParamSpec { name: "agg", default: "mean", help: "mean | max over query rows" },
        ParamSpec { name: "sign", default: "1", help: "1, or -1 for CDPruner's negative CLIP relevance" },
        ParamSpec { name: "recovery", default: "on", help: "on | off: merge dropped tokens into kept ones" },
        ParamSpec { name: "window", default: "0", help: "frames a dropped token may look across (0 = same frame)" },
        ParamSpec { name: "min_sim", default: "0", help: "dropped tokens with similarity <= this are discarded" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let sign = match p.choice("sign", &["1", "+1", "-1"])? {
            "-1" => -1.0,
            _ => 1.0,
        };
        Ok(QueryAware {
            agg: p.choice("agg", &["mean", "max"])?,
            sign,
            recovery: p.choice("recovery", &["on", "off"])? == "on",
            window: p.get("window")?,
            min_sim: p.float_in("min_sim", -1.0, 1.0)? as f32,
        })
    }
}

/// The relevance of every token to a question: `mean_j cos(x_i, q_j)` over the question's rows `q_j` (the `llm`
/// provider when `q` holds the decoder's input embeddings of the question's tokens: what the pipeline hands
/// `mmr:importance=relevance` and `compress` draws). `O(N·T·D)`.
pub fn question_relevance<B: Backend>(backend: &B, features: &B::Matrix, query: &B::Matrix) -> Result<Vec<f32>> {
    query_relevance(backend, &backend.normalize_rows(features)?, query, false, 1.0)
}

/// `sign · agg_j cos(x_i, q_j)` for every token (shared with CDPruner).
pub(crate) fn query_relevance<B: Backend>(
    backend: &B,
    normalized: &B::Matrix,
    query: &B::Matrix,
    max: bool,
    sign: f32,
) -> Result<Vec<f32>> {
    let q = backend.normalize_rows(query)?;
    let t = backend.shape(&q).0;
    let sims = backend.matmul_t(normalized, &q)?;
    let n = backend.shape(normalized).0;
    Ok((0..n)
        .map(|i| {
            let row = &sims[i * t..(i + 1) * t];
            let agg = if t == 0 {
                0.0
            } else if max {
                row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                row.iter().sum::<f32>() / t as f32
            };
            sign * agg
        })
        .collect())
}

impl Pruner for QueryAware {
    fn name(&self) -> &'static str {
        "query"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let x = backend.normalize_rows(tokens.features())?;
        let (relevance, source) = match (tokens.relevance(), tokens.query()) {
            (Some(r), _) => (r.iter().map(|v| self.sign * v).collect(), "relevance".to_string()),
            (None, Some(q)) => {
                let max = self.agg == "max";
                match tokens.query_space() {
                    Some(space) => {
                        let space = backend.normalize_rows(space)?;
                        (query_relevance(backend, &space, q, max, self.sign)?, "query (in its space)".to_string())
                    }
                    None => (query_relevance(backend, &x, q, max, self.sign)?, "query".to_string()),
                }
            }
            (None, None) => {
                let (scores, used) = importance(backend, tokens, "auto", self.name())?;
                (scores, format!("{used} (no query: query-agnostic)"))
            }
        };
        let mut kept = top_k(&relevance, k);
        kept.sort_unstable();
        let note = format!("relevance: {source}");
        if !self.recovery {
            return Ok(Selection::pruned(kept, k).with_note(note));
        }
        let groups = recover(backend, tokens, &x, &kept, self.window, self.min_sim)?;
        Ok(Selection::merged(backend, tokens.features(), kept.into_iter().zip(groups).collect(), true, k)?
            .with_note(note))
    }
}

/// Rows to merge into each kept token: itself (weight 1) plus the dropped tokens that chose it.
fn recover<B: Backend>(
    backend: &B,
    tokens: &TokenSet<B::Matrix>,
    x: &B::Matrix,
    kept: &[usize],
    window: usize,
    min_sim: f32,
) -> Result<Vec<Vec<(usize, f32)>>> {
    const BLOCK: usize = 1024;
    let n = tokens.len();
    let layout = tokens.layout();
    let frame = |i: usize| layout.frame_of(i, n);
    let mut groups: Vec<Vec<(usize, f32)>> = kept.iter().map(|&s| vec![(s, 1.0)]).collect();
    let mut is_kept = vec![false; n];
    kept.iter().for_each(|&s| is_kept[s] = true);
    let frames = layout.frame_count();
    // Kept tokens (as positions in `kept`) per frame, so each block only compares with its window.
    let mut kept_by_frame: Vec<Vec<usize>> = vec![Vec::new(); frames];
    for (pos, &s) in kept.iter().enumerate() {
        kept_by_frame[frame(s)].push(pos);
    }
    for f in 0..frames {
        let candidates: Vec<usize> = (f.saturating_sub(window)..=(f + window).min(frames - 1))
            .flat_map(|g| kept_by_frame[g].iter().copied())
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let per_frame = layout.tokens_per_frame(n);
        let dropped: Vec<usize> = (f * per_frame..((f + 1) * per_frame).min(n)).filter(|&i| !is_kept[i]).collect();
        let cand_rows: Vec<usize> = candidates.iter().map(|&pos| kept[pos]).collect();
        let targets = backend.gather_rows(x, &cand_rows)?;
        for block in dropped.chunks(BLOCK) {
            let sims = backend.matmul_t(&backend.gather_rows(x, block)?, &targets)?;
            for (r, &u) in block.iter().enumerate() {
                let row = &sims[r * candidates.len()..(r + 1) * candidates.len()];
                let best = argmax(row).unwrap_or(0);
                let w = row[best].max(0.0);
                if w > min_sim {
                    groups[candidates[best]].push((u, w));
                }
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend, Layout};
    use ndarray::array;

    #[test]
    fn keeps_the_query_matches_and_merges_the_rest_by_similarity() {
        // Query points along axis 0. Tokens 0 and 2 match it; 1 is close to 2; 3 is orthogonal to both kept.
        let x = array![[1.0f32, 0.0, 0.0], [0.6, 0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]];
        let q = array![[1.0f32, 0.0, 0.0]];
        let t = TokenSet::from_array(x).unwrap().with_query(&CpuBackend, q).unwrap();
        let s = prune(&CpuBackend, &QueryAware::from_params(&params()).unwrap(), &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.kept, vec![0, 2]);
        // Token 1 joins token 2 (cos 0.96) with weight 0.96; token 3 has cosine 0 and is discarded.
        assert_eq!(s.sizes, vec![1, 2]);
        let m = s.merged.unwrap();
        let w = 0.96f32;
        let expect = [(0.8 + w * 0.6) / (1.0 + w), (0.6 + w * 0.8) / (1.0 + w)];
        assert!((m[[1, 0]] - expect[0]).abs() < 1e-5 && (m[[1, 1]] - expect[1]).abs() < 1e-5);
        assert_eq!(m.row(0).to_vec(), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn recovery_stays_inside_the_frame_window() {
        // Two frames of two tokens; the kept token of frame 1 is the only good partner for token 0's neighbour.
        let x = array![[1.0f32, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]];
        let t = TokenSet::from_array(x)
            .unwrap()
            .with_layout(Layout::frames(2, 1, 2))
            .unwrap()
            .with_relevance(vec![1.0, 0.0, 0.9, 0.0])
            .unwrap();
        let same_frame = QueryAware::from_params(&params()).unwrap();
        let s = prune(&CpuBackend, &same_frame, &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.sizes, vec![1, 1], "token 1 (frame 0) is orthogonal to kept 0 and may not reach kept 2");
        let wide = QueryAware { window: 1, ..same_frame };
        let s = prune(&CpuBackend, &wide, &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.sizes, vec![2, 2]);
    }

    #[test]
    fn relevance_is_measured_in_the_query_space_when_the_tokens_carry_one() {
        // Features say token 0 matches the 3-wide query; the 2-wide query space (a dual encoder's) says token 2.
        let x = array![[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let space = array![[0.0f32, 1.0], [0.6, 0.8], [1.0, 0.0]];
        let method = QueryAware { recovery: false, ..QueryAware::from_params(&params()).unwrap() };
        let on_features = TokenSet::from_array(x.clone()).unwrap().with_query(&CpuBackend, array![[1.0f32, 0.0, 0.0]]);
        let s = prune(&CpuBackend, &method, &on_features.unwrap(), Budget::Keep(1)).unwrap();
        assert_eq!(s.kept, vec![0]);
        let t = TokenSet::from_array(x).unwrap().with_query_space(&CpuBackend, space).unwrap();
        // The query must now have the space's width.
        let wrong = TokenSet::from_array(array![[1.0f32, 0.0, 0.0]]).unwrap();
        let wrong = wrong.with_query_space(&CpuBackend, array![[1.0f32, 0.0]]).unwrap();
        assert!(wrong.with_query(&CpuBackend, array![[1.0f32, 0.0, 0.0]]).unwrap_err().to_string().contains("[T, 2]"));
        let t = t.with_query(&CpuBackend, array![[1.0f32, 0.0]]).unwrap();
        let s = prune(&CpuBackend, &method, &t, Budget::Keep(1)).unwrap();
        assert_eq!(s.kept, vec![2]);
        assert!(s.notes.iter().any(|n| n.contains("in its space")), "{:?}", s.notes);
        // A subset keeps each token's space row.
        let sub = t.subset(&CpuBackend, &[2, 1]).unwrap();
        assert_eq!(sub.query_space().unwrap().row(0).to_vec(), vec![1.0, 0.0]);
        assert!(TokenSet::from_array(array![[1.0f32]])
            .unwrap()
            .with_query_space(&CpuBackend, array![[1.0f32], [2.0]])
            .unwrap_err()
            .to_string()
            .contains("one row per token"));
    }

    fn params() -> Params {
        Params::new("query", &QueryAware::PARAMS, &[]).unwrap()
    }
}
