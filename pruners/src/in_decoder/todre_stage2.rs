//! ToDRE stage 2: at one check layer, if text and vision barely attend to each other, drop every visual token.
//!
//! ```text
//! α_{t→v} = Σ_{i∈T} Σ_{j∈V} A[i][j] / Σ_{i∈T} Σ_j A[i][j]
//! α_{v→t} = Σ_{i∈V} Σ_{j∈T} A[i][j] / Σ_{i∈V} Σ_j A[i][j]
//! drop all visual tokens from layer ℓ + 1 on  iff  α_{t→v} < τ and α_{v→t} < τ
//! ```
//!
//! Check layer `ℓ = floor(7L/8)` (0-based) \[project\], `τ = 0.10`. With the causal layout system | visual | text,
//! visual queries cannot see later text, so `α_{v→t} = 0` and only text rows are needed (pass no visual rows).
//! If the test fails the tokens are kept; visual KV entries of layers `<= ℓ` stay for decoding \[project\].
//! Complexity `O(T·S)` given the rows. Source: ToDRE v2, arXiv 2505.18757 (§4).

use super::image_columns;
use crate::error::Result;
use std::ops::Range;

/// The stage-2 decision and the ratios behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage2 {
    /// Text -> visual attention share.
    pub text_to_visual: f32,
    /// Visual -> text attention share (0 under a causal S | V | T layout).
    pub visual_to_text: f32,
    /// True when both are below the threshold: drop every visual token.
    pub drop_visual: bool,
}

/// The check layer for a decoder of `layers` layers: `floor(7L/8)`.
pub fn check_layer(layers: usize) -> usize {
    7 * layers / 8
}

/// Runs the test from attention rows (probabilities): `text_rows` for the text queries, `visual_rows` for the
/// visual queries (empty under causal attention), over columns where `visual` and `text` are the spans.
pub fn test(
    text_rows: &[Vec<f32>],
    visual_rows: &[Vec<f32>],
    visual: Range<usize>,
    text: Range<usize>,
    tau: f32,
) -> Result<Stage2> {
    let share = |rows: &[Vec<f32>], cols: &Range<usize>| -> Result<f32> {
        let (mut part, mut total) = (0f64, 0f64);
        for row in rows {
            part += image_columns(row, cols, "todre stage-2 row")?.iter().map(|&v| v as f64).sum::<f64>();
            total += row.iter().map(|&v| v as f64).sum::<f64>();
        }
        Ok(if total > 0.0 { (part / total) as f32 } else { 0.0 })
    };
    let text_to_visual = share(text_rows, &visual)?;
    let visual_to_text = share(visual_rows, &text)?;
    Ok(Stage2 { text_to_visual, visual_to_text, drop_visual: text_to_visual < tau && visual_to_text < tau })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_when_text_ignores_vision() {
        assert_eq!(check_layer(32), 28);
        // Columns: 1 system, 2 visual, 2 text.
        let ignoring = vec![vec![0.8, 0.02, 0.03, 0.1, 0.05]];
        let looking = vec![vec![0.5, 0.2, 0.2, 0.05, 0.05]];
        let r = test(&ignoring, &[], 1..3, 3..5, 0.1).unwrap();
        assert!(r.drop_visual && (r.text_to_visual - 0.05).abs() < 1e-6);
        assert!(!test(&looking, &[], 1..3, 3..5, 0.1).unwrap().drop_visual);
    }
}
