//! LLaVA-OneVision's visual-token layout (transformers' `LlavaOnevisionModel`, arXiv 2408.03326): how the projected
//! patch features of one image, several images or a video are arranged before they replace the placeholders.
//!
//! ```text
//! single image (any resolution): the processor picks the grid pinpoint keeping the most of the image and sends
//!     the base view (resized to the tile) + rows x cols tiles (`tokensieve_video::preprocess::anyres`, which
//!     also says which grid it cut, so the model uses that grid rather than recomputing it); tiles are laid
//!     out as one (rows·g) x (cols·g) map, the padding rows/columns cut off (unpad), bilinearly shrunk by
//!     r = sqrt(h·w / (max·g²)) when r > 1.1 (`anyres_max_<max>`), a newline token appended to every row;
//!     tokens = base (g²) + map rows x (cols + 1)
//! several images in one prompt: base view only, g² + 1 (newline) tokens each
//! video: every frame's g x g map bilinearly pooled to ceil(g/2) x ceil(g/2), frames in order, one newline at the end
//! ```
//!
//! Cost: the packing is O(tokens·D) copies plus the bilinear resizes, negligible next to the tower. The token counts
//! here equal the processor's placeholder counts (`image_token_count`), including its rounding quirks:
//! `int(round(x, 7))` (a truncation) in the unpadding and floor division in the shrink.

use tch::Tensor;

/// `anyres_max_9` -> 9 (Python's `str.strip("anyres_max_")`, which strips those characters from both ends).
pub fn parse_max_patches(vision_aspect_ratio: &str) -> Option<usize> {
    vision_aspect_ratio.trim_matches(|c: char| "anyres_max_".contains(c)).parse().ok()
}

/// Python's `int(round(x, 7))` for the positive values the unpadding produces: rounding to 7 decimals only absorbs
/// float noise; `int` then truncates (6.67 -> 6).
fn round7(x: f64) -> usize {
    ((x * 1e7).round() / 1e7) as usize
}

/// Size `(rows, cols)` of the tile feature map after unpadding and the `anyres_max` shrink, for an image of
/// `height x width` whose tiles form a `(grid_h, grid_w)` map of features.
fn packed_map(height: usize, width: usize, grid_h: usize, grid_w: usize, g: usize, max: usize) -> (usize, usize) {
    let (mut h, mut w) = (grid_h, grid_w);
    if width as f64 / height as f64 > w as f64 / h as f64 {
        let new_h = round7(height as f64 * (w as f64 / width as f64));
        h -= (h - new_h.min(h)) / 2 * 2;
    } else {
        let new_w = round7(width as f64 * (h as f64 / height as f64));
        w -= (w - new_w.min(w)) / 2 * 2;
    }
    let ratio = ((h * w) as f64 / (max * g * g) as f64).sqrt();
    if ratio > 1.1 {
        ((h as f64 / ratio).floor() as usize, (w as f64 / ratio).floor() as usize)
    } else {
        (h, w)
    }
}

/// Placeholder tokens of one any-resolution image of `height x width` cut into a `(rows, cols)` grid of tiles with
/// `g x g` patches each (the processor's count): base view + map rows x (map cols + 1).
pub fn image_token_count(height: usize, width: usize, grid: (usize, usize), g: usize, max: usize) -> usize {
    let (h, w) = packed_map(height, width, grid.0 * g, grid.1 * g, g, max);
    g * g + h * (w + 1)
}

/// Video tokens for `frames` frames of a `g x g` patch grid: `frames · ceil(g/2)² + 1`.
pub fn video_token_count(frames: usize, g: usize) -> usize {
    frames * g.div_ceil(2) * g.div_ceil(2) + 1
}

/// Packs the projected features `[1 + rows·cols, g², D]` of one any-resolution image of `height x width` into
/// `[tokens, D]` (base view first, then the unpadded, shrunk tile map with a newline per row).
pub fn pack_image(
    features: &Tensor,
    height: usize,
    width: usize,
    grid: (usize, usize),
    max: usize,
    newline: &Tensor,
) -> Result<Tensor, tch::TchError> {
    let (p, n, d) = features.size3()?;
    let g = (n as f64).sqrt() as i64;
    let base = features.f_select(0, 0)?;
    if p == 1 {
        return Tensor::f_cat(&[base, newline.f_reshape([1, d])?], 0);
    }
    let (rows, cols) = (grid.0 as i64, grid.1 as i64);
    if rows * cols != p - 1 {
        return Err(tch::TchError::Shape(format!("{} tile views for a {rows}x{cols} grid", p - 1)));
    }
    // [rows, cols, g, g, D] -> [D, rows·g, cols·g]
    let map = features
        .f_narrow(0, 1, p - 1)?
        .f_reshape([rows, cols, g, g, d])?
        .f_permute([4, 0, 2, 1, 3])?
        .f_reshape([d, rows * g, cols * g])?;
    let (cur_h, cur_w) = ((rows * g) as usize, (cols * g) as usize);
    // Unpad exactly as transformers slices: [pad : current - pad] along the padded axis.
    let map = if width as f64 / height as f64 > cur_w as f64 / cur_h as f64 {
        let new_h = round7(height as f64 * (cur_w as f64 / width as f64)).min(cur_h);
        let pad = ((cur_h - new_h) / 2) as i64;
        map.f_narrow(1, pad, cur_h as i64 - 2 * pad)?
    } else {
        let new_w = round7(width as f64 * (cur_h as f64 / height as f64)).min(cur_w);
        let pad = ((cur_w - new_w) / 2) as i64;
        map.f_narrow(2, pad, cur_w as i64 - 2 * pad)?
    };
    let (h, w) = (map.size()[1], map.size()[2]);
    let ratio = ((h * w) as f64 / (max as f64 * (g * g) as f64)).sqrt();
    let map = if ratio > 1.1 {
        let size = [(h as f64 / ratio).floor() as i64, (w as f64 / ratio).floor() as i64];
        map.f_unsqueeze(0)?.f_upsample_bilinear2d(size, false, None, None)?.f_squeeze_dim(0)?
    } else {
        map
    };
    let (h, w) = (map.size()[1], map.size()[2]);
    let rows_nl = newline.f_reshape([d, 1, 1])?.f_expand([d, h, 1], false)?.f_to_kind(map.kind())?;
    let map = Tensor::f_cat(&[map, rows_nl], 2)?; // [D, h, w + 1]
    let tokens = map.f_reshape([d, h * (w + 1)])?.f_transpose(0, 1)?;
    Tensor::f_cat(&[base, tokens], 0)
}

/// Pools projected video features `[F, g², D]` to `[F, ceil(g/2)², D]` (bilinear, `align_corners=False`).
pub fn pool_video(features: &Tensor) -> Result<Tensor, tch::TchError> {
    let (f, n, d) = features.size3()?;
    let g = (n as f64).sqrt() as i64;
    let half = [(g + 1) / 2, (g + 1) / 2];
    features
        .f_reshape([f, g, g, d])?
        .f_permute([0, 3, 1, 2])?
        .f_upsample_bilinear2d(half, false, None, None)?
        .f_permute([0, 2, 3, 1])?
        .f_reshape([f, half[0] * half[1], d])
}

/// Appends the newline embedding `[D]` after the tokens `[N, D]`.
pub fn with_newline(tokens: &Tensor, newline: &Tensor) -> Result<Tensor, tch::TchError> {
    let d = tokens.size()[1];
    Tensor::f_cat(&[tokens.shallow_clone(), newline.f_reshape([1, d])?.f_to_kind(tokens.kind())?], 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn counts_follow_the_processor() {
        assert_eq!(parse_max_patches("anyres_max_9"), Some(9));
        // 50x90 on a 2x3 grid -> 8x12 map; int(round(6.67, 7)) = 6 image rows, so one padding row cut at each end
        // (6x12), then shrunk by sqrt(72/32) = 1.5 to 4x8, and a newline per row.
        assert_eq!(image_token_count(50, 90, (2, 3), 4, 2), 16 + 4 * 9);
        // 30x40 on 1x2 -> 4x8 map, width cut to 6, no shrink.
        assert_eq!(image_token_count(30, 40, (1, 2), 4, 2), 16 + 4 * 7);
        assert_eq!(video_token_count(3, 4), 13);
        assert_eq!(video_token_count(2, 27), 2 * 196 + 1, "SigLIP-so400m's 27x27 grid pools to 14x14");
    }

    #[test]
    fn packing_matches_the_counts() {
        let d = 5;
        let newline = Tensor::from_slice(&[9f32; 5]);
        for (h, w, grid) in [(50usize, 90usize, (2usize, 3usize)), (30, 40, (1, 2)), (90, 50, (3, 2)), (20, 20, (1, 1))]
        {
            let tiles = (grid.0 * grid.1) as i64;
            let f = Tensor::randn([1 + tiles, 16, d], (Kind::Float, tch::Device::Cpu));
            let packed = pack_image(&f, h, w, grid, 2, &newline).unwrap();
            assert_eq!(packed.size()[0] as usize, image_token_count(h, w, grid, 4, 2), "{h}x{w}");
        }
        let f = Tensor::randn([3, 16, d], (Kind::Float, tch::Device::Cpu));
        assert!(pack_image(&f, 50, 90, (2, 3), 2, &newline).is_err(), "2 tile views cannot fill a 2x3 grid");
        let v = pool_video(&Tensor::ones([3, 16, d], (Kind::Float, tch::Device::Cpu))).unwrap();
        assert_eq!(v.size(), [3, 4, d]);
        assert!((v.sum(Kind::Float).double_value(&[]) - 60.0).abs() < 1e-4, "bilinear pooling keeps constants");
    }
}
