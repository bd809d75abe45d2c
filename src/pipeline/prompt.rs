//! Placeholder expansion as transformers' processors do it: the prompt names the visual input with `<image>` (or
//! `<video>`), and each placeholder becomes one placeholder token per visual token, so the embeddings of the visual
//! tokens can be written at those positions. Shared by both backends.

/// Expands `placeholder` in `text` for `units` images (or one video) of `per_unit` tokens each, `total` in all: a
/// single placeholder takes every token; as many placeholders as units take one unit each. Anything else is an
/// error naming the counts.
pub fn expand_placeholders(
    text: &str,
    placeholder: &str,
    total: usize,
    units: usize,
    per_unit: usize,
) -> Result<String, String> {
    match text.matches(placeholder).count() {
        1 => Ok(text.replacen(placeholder, &vec![placeholder; total].join(" "), 1)),
        k if k == units && k * per_unit == total => {
            Ok(text.replace(placeholder, &vec![placeholder; per_unit].join(" ")))
        }
        k => Err(format!(
            "{k} `{placeholder}` placeholders for {units} units ({total} visual tokens): write one, or one per image"
        )),
    }
}

/// Expands the `i`-th `placeholder` of `text` into `counts[i]` placeholders (no separator: each is a special token,
/// as Qwen-VL's processor writes `<|image_pad|>` runs). The text must hold exactly `counts.len()` placeholders.
pub fn expand_spans(text: &str, placeholder: &str, counts: &[usize]) -> Result<String, String> {
    let found = text.matches(placeholder).count();
    if found != counts.len() {
        return Err(format!("{found} `{placeholder}` placeholders for {} images or videos", counts.len()));
    }
    let mut out = String::with_capacity(text.len() + counts.iter().sum::<usize>() * placeholder.len());
    for (i, piece) in text.split(placeholder).enumerate() {
        out.push_str(piece);
        if let Some(&n) = counts.get(i) {
            out.push_str(&placeholder.repeat(n));
        }
    }
    Ok(out)
}

/// One image or video of an M-RoPE prompt: which of its tokens were kept and its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct MRopeSpan {
    /// The placeholder token of its rows (`<|image_pad|>` or `<|video_pad|>`).
    pub pad: i64,
    /// Kept tokens as indices into the unpruned span, in prompt order.
    pub kept: Vec<usize>,
    /// Synthetic rows after the kept ones (PruMerge+'s extra tokens): they take the last kept row's ids.
    pub extra: usize,
    /// `(frames, rows, cols)` of the unpruned span on the merged grid.
    pub grid: (usize, usize, usize),
    /// The temporal id's scale (`second_per_grid_t · tokens_per_second` for a Qwen2.5-VL video, else 1).
    pub temporal_scale: f64,
}

/// M-RoPE position ids (`[temporal, height, width]` per row) of a prompt `ids` in which each `start` token opens
/// the next span of `spans` (its kept and extra rows, all its `pad` token, follow it), as transformers' `get_rope_index` numbers the
/// unpruned prompt: text rows take the running id on all three axes; a span starting at id `s` gives its tokens
/// `s + (⌊f·scale⌋, r, c)`; the text after continues from `s + max(H, W)` ([`tokensieve_pruners::positions`]).
/// Pruned rows simply are not there (`contiguous = false`), or (`contiguous = true`) the text after a span
/// continues from its largest kept id + 1, closing the gap that pruning left, as 1-D renumbering does.
pub fn mrope_positions(
    ids: &[i64],
    start: i64,
    spans: &[MRopeSpan],
    contiguous: bool,
) -> Result<[Vec<i64>; 3], String> {
    use tokensieve_pruners::positions::{span_positions, PositionIds, Rope};
    use tokensieve_pruners::Layout;
    let mut out = [Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len())];
    let (mut next, mut i, mut span) = (0i64, 0usize, 0usize);
    while i < ids.len() {
        for row in out.iter_mut() {
            row.push(next);
        }
        next += 1;
        let opens = ids[i] == start && span < spans.len();
        i += 1;
        if !opens {
            continue;
        }
        let s = &spans[span];
        span += 1;
        let rows = s.kept.len() + s.extra;
        if ids.get(i..i + rows).is_none_or(|r| r.iter().any(|&t| t != s.pad)) {
            return Err(format!("span {span} needs {rows} placeholder tokens (id {}) after its start token", s.pad));
        }
        let (f, h, w) = s.grid;
        let placed = span_positions(
            &s.kept,
            Layout::frames(f, h, w),
            f * h * w,
            next,
            Rope::MRope { temporal_scale: s.temporal_scale },
        )
        .map_err(|e| e.to_string())?;
        let PositionIds::MRope(kept) = placed.ids else { return Err("1-D ids for an M-RoPE span".into()) };
        let mut largest = next - 1;
        for (axis, row) in out.iter_mut().enumerate() {
            row.extend_from_slice(&kept[axis]);
            let last = kept[axis].last().copied().unwrap_or(next - 1);
            row.extend(std::iter::repeat_n(last, s.extra));
            largest = largest.max(kept[axis].iter().copied().max().unwrap_or(largest));
        }
        i += rows;
        next = if contiguous { largest + 1 } else { placed.next };
    }
    if span != spans.len() {
        return Err(format!("{} spans but {span} start tokens (id {start}) in the prompt", spans.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_expand_one_count_each() {
        let text = "a <s><p></s> b <s><p></s>";
        assert_eq!(expand_spans(text, "<p>", &[2, 0]).unwrap(), "a <s><p><p></s> b <s></s>");
        assert!(expand_spans(text, "<p>", &[1]).unwrap_err().contains("2 `<p>`"));
    }

    #[test]
    fn m_rope_ids_are_get_rope_index_with_the_pruned_rows_removed() {
        // text(2) <s> [video 2 frames x 2 x 3, scale 2] </s> text(1): the unpruned ids of get_rope_index.
        let (s, p) = (90, 93);
        let video = MRopeSpan { pad: p, kept: (0..12).collect(), extra: 0, grid: (2, 2, 3), temporal_scale: 2.0 };
        let mut ids = vec![5, 6, s];
        ids.extend([p; 12]);
        ids.extend([91, 7]);
        let full = mrope_positions(&ids, s, std::slice::from_ref(&video), false).unwrap();
        // Start token at 2; tokens from 3: t = 3 + 2f, h = 3 + r, w = 3 + c; text after continues at 3 + 3.
        assert_eq!(full[0], [0, 1, 2, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 6, 7]);
        assert_eq!(full[1], [0, 1, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4, 6, 7]);
        assert_eq!(full[2], [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7]);
        // Keep tokens 1 and 10: the same ids with the other columns gone.
        let pruned = MRopeSpan { kept: vec![1, 10], ..video.clone() };
        let ids = [5, 6, s, p, p, 91, 7];
        let got = mrope_positions(&ids, s, std::slice::from_ref(&pruned), false).unwrap();
        for axis in 0..3 {
            let want: Vec<i64> = [0, 1, 2, 4, 13, 15, 16].iter().map(|&c| full[axis][c]).collect();
            assert_eq!(got[axis], want);
        }
        // Contiguous: the text after continues past the largest kept id (5 on the temporal axis).
        let compact = mrope_positions(&ids, s, &[pruned], true).unwrap();
        assert_eq!(compact[0][5..], [6, 7]);
        // A span whose placeholders are missing is an error naming the count.
        assert!(mrope_positions(&[5, s, 91], s, &[video], false).unwrap_err().contains("12 placeholder"));
    }

    #[test]
    fn one_placeholder_takes_all_and_one_per_image_takes_each() {
        assert_eq!(expand_placeholders("a <image> b", "<image>", 3, 1, 3).unwrap(), "a <image> <image> <image> b");
        assert_eq!(
            expand_placeholders("<image> x <image>", "<image>", 4, 2, 2).unwrap(),
            "<image> <image> x <image> <image>"
        );
        assert!(expand_placeholders("none", "<image>", 4, 2, 2).unwrap_err().contains("0 `<image>`"));
        assert!(expand_placeholders("<image><image><image>", "<image>", 4, 2, 2).is_err());
    }
}
