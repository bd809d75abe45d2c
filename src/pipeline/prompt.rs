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

#[cfg(test)]
mod tests {
    use super::*;

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
