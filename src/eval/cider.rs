//! CIDEr-D (σ = 6), as COCO-caption's `CiderScorer` computes it, length quirk included (EVAL.md §3.4).
//!
//! ```text
//! idf(g) = log(N_items) − log(max(1, df(g)))        df = items whose references contain g (IDF from this set)
//! v_n(g) = tf(g)·idf(g);   sim_n(h, r) = Σ_{g∈h} min(v_h, v_r)·v_r / (‖v_h‖‖v_r‖) · exp(−(ℓ_h − ℓ_r)² / 2σ²)
//! item = 10 · mean_n (Σ_r sim_n) / |refs|;   CIDEr = mean over items
//! ```
//!
//! `ℓ` counts bigrams (words − 1), not words, as the reference code does; a one-item corpus therefore scores 0.
//! `O(total n-grams)`.
//!
//! Paper: Vedantam, Zitnick, Parikh, "CIDEr: Consensus-based image description evaluation", CVPR 2015
//! (arXiv:1411.5726); the `-D` clipping and Gaussian length penalty as in the COCO code. Official code:
//! salaniz/pycocoevalcap 1.2 `cider/cider_scorer.py`, `CiderScorer.compute_doc_freq` and `compute_cider`
//! (`counts2vec`, `sim`), called by `cider/cider.py` `Cider.compute_score` with n = 4, σ = 6 (identical in
//! bckim92/language-evaluation, which DriveLM uses). No deviation: per item and corpus within 1e-9 on the randomised
//! set of `tests/caption_metrics.rs`.

use std::collections::{HashMap, HashSet};

type Counts = HashMap<Vec<String>, f64>;

fn counts(sentence: &str) -> Counts {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let mut c = Counts::new();
    for n in 1..=4 {
        for w in words.windows(n) {
            *c.entry(w.iter().map(|t| t.to_string()).collect()).or_insert(0.0) += 1.0;
        }
    }
    c
}

struct Vector {
    values: [HashMap<Vec<String>, f64>; 4],
    norms: [f64; 4],
    length: f64,
}

fn vectorise(c: &Counts, df: &HashMap<Vec<String>, f64>, log_items: f64) -> Vector {
    let mut values: [HashMap<Vec<String>, f64>; 4] = Default::default();
    let mut norms = [0f64; 4];
    let mut length = 0.0;
    for (g, &tf) in c {
        let n = g.len() - 1;
        let v = tf * (log_items - df.get(g).copied().unwrap_or(0.0).max(1.0).ln());
        values[n].insert(g.clone(), v);
        norms[n] += v * v;
        if n == 1 {
            length += tf;
        }
    }
    Vector { values, norms: norms.map(f64::sqrt), length }
}

/// Per-item CIDEr-D scores of tokenised hypotheses against their references (the corpus score is their mean).
pub fn cider_d(items: &[(String, Vec<String>)]) -> Vec<f64> {
    const SIGMA: f64 = 6.0;
    let refs: Vec<Vec<Counts>> = items.iter().map(|(_, r)| r.iter().map(|s| counts(s)).collect()).collect();
    let mut df: HashMap<Vec<String>, f64> = HashMap::new();
    for item_refs in &refs {
        let grams: HashSet<&Vec<String>> = item_refs.iter().flat_map(|c| c.keys()).collect();
        for g in grams {
            *df.entry(g.clone()).or_insert(0.0) += 1.0;
        }
    }
    let log_items = (items.len() as f64).ln();
    items
        .iter()
        .zip(&refs)
        .map(|((hyp, _), item_refs)| {
            let h = vectorise(&counts(hyp), &df, log_items);
            let mut score = [0f64; 4];
            for r in item_refs {
                let r = vectorise(r, &df, log_items);
                let delta = h.length - r.length;
                let decay = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                for (n, slot) in score.iter_mut().enumerate() {
                    let mut val: f64 = h.values[n]
                        .iter()
                        .map(|(g, &vh)| {
                            let vr = r.values[n].get(g).copied().unwrap_or(0.0);
                            vh.min(vr) * vr
                        })
                        .sum();
                    if h.norms[n] != 0.0 && r.norms[n] != 0.0 {
                        val /= h.norms[n] * r.norms[n];
                    }
                    *slot += val * decay;
                }
            }
            score.iter().sum::<f64>() / 4.0 / item_refs.len().max(1) as f64 * 10.0
        })
        .collect()
}
