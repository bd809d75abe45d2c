//! Position ids of a prompt after pruning (ALGORITHMS.md §1.5): one id per row for 1-D rotary decoders (Llama,
//! Qwen2), or three per row for M-RoPE decoders (Qwen2-VL and later: temporal, height and width ids, with
//! `mrope_section` splitting the rotary dimensions among them). Pruning keeps the kept rows' original ids in either
//! form; a decoder without M-RoPE refuses the 3-D form with an error instead of reading one axis.

/// Position ids of the rows of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionIds {
    /// One id per row, ascending (gaps where pruned rows were).
    Sequence(Vec<i64>),
    /// `[temporal, height, width]` ids per row (M-RoPE).
    MRope([Vec<i64>; 3]),
}

impl PositionIds {
    /// Rows covered.
    pub fn len(&self) -> usize {
        match self {
            PositionIds::Sequence(p) => p.len(),
            PositionIds::MRope(p) => p[0].len(),
        }
    }

    /// True when no row is covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 1-D ids, or an error naming the decoder that cannot take 3-D ones.
    pub fn sequence(&self, decoder: &str) -> Result<&[i64], String> {
        match self {
            PositionIds::Sequence(p) => Ok(p),
            PositionIds::MRope(_) => Err(format!("{decoder} uses 1-D rotary positions; M-RoPE ids were given")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PositionIds;

    #[test]
    fn a_one_dimensional_decoder_refuses_m_rope_ids() {
        let flat = PositionIds::Sequence(vec![0, 1, 5]);
        assert_eq!((flat.len(), flat.sequence("llama").unwrap()), (3, [0i64, 1, 5].as_slice()));
        let mrope = PositionIds::MRope([vec![0, 1], vec![0, 0], vec![0, 1]]);
        assert_eq!(mrope.len(), 2);
        assert!(mrope.sequence("llama").unwrap_err().contains("llama uses 1-D"));
    }
}
