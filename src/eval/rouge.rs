//! ROUGE-L with β = 1.2, as COCO-caption's `Rouge` computes it (EVAL.md §3.3).
//!
//! ```text
//! per reference r: P_r = LCS / |hyp|, R_r = LCS / |r|;   P = max_r P_r, R = max_r R_r (separately)
//! F = (1 + β²)·P·R / (R + β²·P), 0 when P or R is 0;   corpus = mean of F over items
//! ```
//!
//! Tokens come from splitting on single spaces, so an empty hypothesis is one empty token. LCS by dynamic
//! programming, `O(|hyp|·|ref|)` per pair with one row of memory.
//!
//! Paper: Lin, "ROUGE: a package for automatic evaluation of summaries", 2004 (β = 1.2 per the COCO code). Official
//! code: salaniz/pycocoevalcap 1.2 `rouge/rouge.py`, `Rouge.calc_score` and `my_lcs` (identical in
//! bckim92/language-evaluation, which DriveLM uses). No deviation: per item and corpus within 1e-9 on the randomised
//! set of `tests/caption_metrics.rs`.

fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { row[j + 1].max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L of one tokenised hypothesis against its references.
pub fn rouge_l(hyp: &str, refs: &[String]) -> f64 {
    const BETA: f64 = 1.2;
    let h: Vec<&str> = hyp.split(' ').collect();
    let (mut p, mut r) = (0f64, 0f64);
    for reference in refs {
        let t: Vec<&str> = reference.split(' ').collect();
        let l = lcs(&t, &h) as f64;
        p = p.max(l / h.len() as f64);
        r = r.max(l / t.len() as f64);
    }
    if p != 0.0 && r != 0.0 {
        (1.0 + BETA * BETA) * p * r / (r + BETA * BETA * p)
    } else {
        0.0
    }
}
