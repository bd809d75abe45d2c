//! BLEU-1..4 at corpus level, as COCO-caption's `BleuScorer` computes it (EVAL.md §3.2).
//!
//! ```text
//! per item: h = hypothesis length; c = the reference length closest to h (ties: shorter)
//!           correct_n = Σ_g min(count_hyp(g), max_r count_r(g)),  guess_n = max(0, h − n + 1)
//! BLEU_N = (Π_{n ≤ N} (C_n + 1e-15) / (G_n + 1e-9))^(1/N) · BP,  BP = exp(1 − 1/ratio) if ratio < 1,
//! ratio = (H + 1e-15) / (R + 1e-9)                                   (C, G, H, R summed over the corpus)
//! ```
//!
//! Not a mean of sentence scores, and no smoothing beyond the epsilons. `O(total tokens)`.
//!
//! Paper: Papineni et al., "BLEU: a method for automatic evaluation of machine translation", ACL 2002. Official
//! code: salaniz/pycocoevalcap 1.2 `bleu/bleu_scorer.py`, `BleuScorer.compute_score(option="closest")` (as
//! `bleu/bleu.py` `Bleu.compute_score` calls it); the DriveLM challenge's copy (bckim92/language-evaluation
//! `coco_caption_py3/pycocoevalcap/bleu/`) is the same code. No deviation: the corpus values equal it within 1e-9 on
//! the randomised set of `tests/caption_metrics.rs`. Its per-item sentence BLEU is not reported.

use std::collections::HashMap;

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w.iter().map(|t| t.to_string()).collect()).or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus BLEU-1..4 of tokenised hypotheses against their references (whitespace-separated strings).
pub fn bleu(items: &[(String, Vec<String>)]) -> [f64; 4] {
    let (mut correct, mut guess) = ([0f64; 4], [0f64; 4]);
    let (mut test_len, mut ref_len) = (0f64, 0f64);
    for (hyp, refs) in items {
        let h: Vec<&str> = hyp.split_whitespace().collect();
        let refs: Vec<Vec<&str>> = refs.iter().map(|r| r.split_whitespace().collect()).collect();
        let closest = refs.iter().map(|r| r.len()).min_by_key(|&l| ((l as i64 - h.len() as i64).abs(), l)).unwrap_or(0);
        test_len += h.len() as f64;
        ref_len += closest as f64;
        for n in 1..=4 {
            let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
            for r in &refs {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            let hyp_counts = ngrams(&h, n);
            correct[n - 1] +=
                hyp_counts.iter().map(|(g, &c)| c.min(*max_ref.get(g).unwrap_or(&0))).sum::<usize>() as f64;
            guess[n - 1] += (h.len() + 1).saturating_sub(n) as f64;
        }
    }
    let (tiny, small) = (1e-15, 1e-9);
    let ratio = (test_len + tiny) / (ref_len + small);
    let mut out = [0f64; 4];
    let mut product = 1.0;
    for k in 0..4 {
        product *= (correct[k] + tiny) / (guess[k] + small);
        out[k] = product.powf(1.0 / (k + 1) as f64);
        if ratio < 1.0 {
            out[k] *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}
