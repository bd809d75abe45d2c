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

/// `anyres_max_9` -> 9 (Python's `str.strip("anyres_max_")`, which strips those characters from both ends).
pub fn parse_max_patches(vision_aspect_ratio: &str) -> Option<usize> {
    vision_aspect_ratio.trim_matches(|c: char| "anyres_max_".contains(c)).parse().ok()
}

/// Python's `int(round(x, 7))` for the positive values the unpadding produces: rounding to 7 decimals only absorbs
/// float noise; `int` then truncates (6.67 -> 6).
fn round7(x: f64) -> usize {
    ((x * 1e7).round() / 1e7) as usize
}

/// Where the packed tile map of one any-resolution image comes from: the unpadded window of the tiles' feature
/// canvas and the map's size after the `anyres_max` shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedMap {
    /// First canvas row and column kept (in patches).
    pub top: usize,
    /// First canvas column kept (in patches).
    pub left: usize,
    /// Canvas rows kept (in patches).
    pub height: usize,
    /// Canvas columns kept (in patches).
    pub width: usize,
    /// Map rows after the shrink (each followed by a newline token).
    pub rows: usize,
    /// Map columns after the shrink.
    pub cols: usize,
}

/// The packed map of an image of `height x width` whose tiles form a `(grid_h, grid_w)` canvas of features, with
/// `g²` tokens per tile and `anyres_max_<max>`: transformers' unpadding (`[pad : current - pad]` along the padded
/// axis) and shrink, in one place for the token count and the packing.
pub fn packed_map(height: usize, width: usize, grid_h: usize, grid_w: usize, g: usize, max: usize) -> PackedMap {
    let (cur_h, cur_w) = (grid_h, grid_w);
    let (top, left, h, w) = if width as f64 / height as f64 > cur_w as f64 / cur_h as f64 {
        let new_h = round7(height as f64 * (cur_w as f64 / width as f64)).min(cur_h);
        let pad = (cur_h - new_h) / 2;
        (pad, 0, cur_h - 2 * pad, cur_w)
    } else {
        let new_w = round7(width as f64 * (cur_h as f64 / height as f64)).min(cur_w);
        let pad = (cur_w - new_w) / 2;
        (0, pad, cur_h, cur_w - 2 * pad)
    };
    let ratio = ((h * w) as f64 / (max * g * g) as f64).sqrt();
    let (rows, cols) =
        if ratio > 1.1 { ((h as f64 / ratio).floor() as usize, (w as f64 / ratio).floor() as usize) } else { (h, w) };
    PackedMap { top, left, height: h, width: w, rows, cols }
}

/// Placeholder tokens of one any-resolution image of `height x width` cut into a `(rows, cols)` grid of tiles with
/// `g x g` patches each (the processor's count): base view + map rows x (map cols + 1).
pub fn image_token_count(height: usize, width: usize, grid: (usize, usize), g: usize, max: usize) -> usize {
    let m = packed_map(height, width, grid.0 * g, grid.1 * g, g, max);
    g * g + m.rows * (m.cols + 1)
}

/// Video tokens for `frames` frames of a `g x g` patch grid: `frames · ceil(g/2)² + 1`.
pub fn video_token_count(frames: usize, g: usize) -> usize {
    frames * g.div_ceil(2) * g.div_ceil(2) + 1
}

/// Projected features of several views, row-major `[views, tokens, dim]` on the host.
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Views (tiles, images or frames).
    pub views: usize,
    /// Tokens per view (`g²`).
    pub tokens: usize,
    /// Feature width.
    pub dim: usize,
}

/// The side `g` of a square `g x g` patch grid of `n` tokens, if `n` is a square.
pub fn square_side(n: usize) -> Option<usize> {
    let g = (n as f64).sqrt().round() as usize;
    (g * g == n).then_some(g)
}

impl Views<'_> {
    /// The side `g` of the square patch grid, when `tokens` is a square.
    fn grid(&self) -> Result<usize, String> {
        match square_side(self.tokens) {
            Some(g) if self.data.len() == self.views * self.tokens * self.dim => Ok(g),
            _ => Err(format!(
                "{} values are not {} views of a square patch grid ({} tokens) x {}",
                self.data.len(),
                self.views,
                self.tokens,
                self.dim
            )),
        }
    }
}

/// Bilinear resize of a channels-last map `[h, w, d]` to `[out_h, out_w, d]` as torch's
/// `interpolate(mode="bilinear", align_corners=False)` computes it (no antialiasing; source coordinate
/// `(dst + 0.5)·in/out - 0.5`, clamped at 0; f32 arithmetic).
pub fn resize_bilinear(map: &[f32], (h, w): (usize, usize), d: usize, (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(inp - 1);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(h, out_h), taps(w, out_w));
    let mut out = vec![0f32; out_h * out_w * d];
    for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
            let at = |y: usize, x: usize| &map[(y * w + x) * d..(y * w + x + 1) * d];
            let (a, b, c, e) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            let dst = &mut out[(oy * out_w + ox) * d..(oy * out_w + ox + 1) * d];
            for k in 0..d {
                dst[k] = (1.0 - ly) * ((1.0 - lx) * a[k] + lx * b[k]) + ly * ((1.0 - lx) * c[k] + lx * e[k]);
            }
        }
    }
    out
}

/// Packs the projected features of one any-resolution image (`views` = base view + rows·cols tiles of `g²` tokens)
/// of `height x width` into `[tokens, D]`: base view first, then the unpadded, shrunk tile map with a newline per
/// row. Returns the rows and their count.
pub fn pack_image(
    features: Views<'_>,
    (height, width): (usize, usize),
    grid: (usize, usize),
    max: usize,
    newline: &[f32],
) -> Result<(Vec<f32>, usize), String> {
    let g = features.grid()?;
    let (n, d) = (features.tokens, features.dim);
    let mut out = features.data[..n * d].to_vec();
    if features.views == 1 {
        out.extend_from_slice(newline);
        return Ok((out, n + 1));
    }
    let (rows, cols) = grid;
    if rows * cols != features.views - 1 {
        return Err(format!("{} tile views for a {rows}x{cols} grid", features.views - 1));
    }
    let PackedMap { top, left, height: h, width: w, rows: out_h, cols: out_w } =
        packed_map(height, width, rows * g, cols * g, g, max);
    // The unpadded tile map, channels-last: map[y][x] = tile (y / g, x / g), patch (y % g, x % g).
    let mut map = Vec::with_capacity(h * w * d);
    for y in top..top + h {
        for x in left..left + w {
            let view = 1 + (y / g) * cols + x / g;
            let token = (y % g) * g + x % g;
            let at = (view * n + token) * d;
            map.extend_from_slice(&features.data[at..at + d]);
        }
    }
    let (map, h, w) = if (out_h, out_w) != (h, w) {
        (resize_bilinear(&map, (h, w), d, (out_h, out_w)), out_h, out_w)
    } else {
        (map, h, w)
    };
    for row in map.chunks(w * d) {
        out.extend_from_slice(row);
        out.extend_from_slice(newline);
    }
    Ok((out, n + h * (w + 1)))
}

/// Pools projected video features `[F, g², D]` to `[F, ceil(g/2)², D]` (bilinear, `align_corners=False`).
pub fn pool_video(features: Views<'_>) -> Result<Vec<f32>, String> {
    let g = features.grid()?;
    let half = g.div_ceil(2);
    let per = features.tokens * features.dim;
    Ok(features.data.chunks(per).flat_map(|frame| resize_bilinear(frame, (g, g), features.dim, (half, half))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let newline = [9f32; 5];
        let values = |len: usize| (0..len).map(|i| ((i * 37) % 11) as f32 - 5.0).collect::<Vec<f32>>();
        for (h, w, grid) in [(50usize, 90usize, (2usize, 3usize)), (30, 40, (1, 2)), (90, 50, (3, 2)), (20, 20, (1, 1))]
        {
            let views = 1 + grid.0 * grid.1;
            let data = values(views * 16 * d);
            let (packed, n) =
                pack_image(Views { data: &data, views, tokens: 16, dim: d }, (h, w), grid, 2, &newline).unwrap();
            assert_eq!(n, image_token_count(h, w, grid, 4, 2), "{h}x{w}");
            assert_eq!(packed.len(), n * d);
            assert_eq!(packed[..16 * d], data[..16 * d], "the base view comes first, unchanged");
            assert_eq!(packed[packed.len() - d..], newline, "every map row ends with the newline");
        }
        let data = values(3 * 16 * d);
        let three = Views { data: &data, views: 3, tokens: 16, dim: d };
        assert!(pack_image(three, (50, 90), (2, 3), 2, &newline).is_err(), "2 tile views cannot fill a 2x3 grid");
        let ones = vec![1f32; 3 * 16 * d];
        let v = pool_video(Views { data: &ones, views: 3, tokens: 16, dim: d }).unwrap();
        assert_eq!(v.len(), 3 * 4 * d);
        assert!(v.iter().all(|x| (x - 1.0).abs() < 1e-6), "bilinear pooling keeps constants");
    }

    #[test]
    fn even_halving_averages_two_by_two_and_odd_sides_follow_torch() {
        // 4x4 -> 2x2 with align_corners=False samples at 2i + 0.5: the mean of each 2x2 block.
        let map: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(resize_bilinear(&map, (4, 4), 1, (2, 2)), vec![2.5, 4.5, 10.5, 12.5]);
        // 3 -> 2 along one axis: scale 1.5, sources 0.25 and 1.75.
        let row = [0f32, 10.0, 20.0];
        assert_eq!(resize_bilinear(&row, (1, 3), 1, (1, 2)), vec![2.5, 17.5]);
    }
}
