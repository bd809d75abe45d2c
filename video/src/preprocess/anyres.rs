//! LLaVA-NeXT / LLaVA-OneVision any-resolution tiling: a base image plus tiles of the best-fitting grid.
//!
//! ```text
//! best = argmax over pinpoints (h, w) of effective = min(⌊H·s⌋·⌊W·s⌋, H·W), s = min(w/W, h/H);
//!        ties -> the least wasted area h·w − effective
//! resize the image to fit best (keeping aspect: the tighter side exact, the other ceil(·s) capped), paste it centred
//! on black at best, cut into tile x tile patches row by row
//! output = [image resized to tile x tile] + patches, each then rescaled and normalised
//! ```
//!
//! As transformers' `LlavaNextImageProcessor` (PIL backend): `select_best_resolution`, `get_patch_output_size`,
//! `_pad_for_patching`, `divide_to_patches`. The base image is squashed to `tile x tile` (not cropped).

use super::processor::{ImageProcessor, Pixels, Rgb8};
use super::resample::resize_rgb8;

/// The grid pinpoint `(height, width)` that keeps most of an `height x width` image with the least padding.
pub fn select_best_resolution(height: usize, width: usize, pinpoints: &[(usize, usize)]) -> Option<(usize, usize)> {
    let mut best: Option<((usize, usize), usize, usize)> = None;
    for &(ph, pw) in pinpoints {
        let scale = (pw as f64 / width as f64).min(ph as f64 / height as f64);
        let (dw, dh) = ((width as f64 * scale) as usize, (height as f64 * scale) as usize);
        let effective = (dw * dh).min(width * height);
        let wasted = ph * pw - effective;
        let better = match best {
            None => true,
            Some((_, e, w)) => effective > e || (effective == e && wasted < w),
        };
        if better {
            best = Some(((ph, pw), effective, wasted));
        }
    }
    best.map(|(p, _, _)| p)
}

/// Any-resolution settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyRes {
    /// Candidate `(height, width)` canvases (`image_grid_pinpoints`).
    pub pinpoints: Vec<(usize, usize)>,
    /// Tile side (the vision tower's input size, `crop_size`).
    pub tile: usize,
}

impl AnyRes {
    /// LLaVA-NeXT's pinpoints for a 336-pixel tower.
    pub fn llava_next() -> Self {
        AnyRes { pinpoints: vec![(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)], tile: 336 }
    }

    /// The base image and the tiles, each processed by `processor`'s rescale and normalise steps, plus the grid
    /// `(rows, cols)` of tiles.
    pub fn tiles(
        &self,
        processor: &ImageProcessor,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> (Vec<Pixels>, (usize, usize)) {
        let (ph, pw) = select_best_resolution(height, width, &self.pinpoints).unwrap_or((self.tile, self.tile));
        let (scale_w, scale_h) = (pw as f64 / width as f64, ph as f64 / height as f64);
        let (nh, nw) = if scale_w < scale_h {
            (((height as f64 * scale_w).ceil() as usize).min(ph), pw)
        } else {
            (ph, ((width as f64 * scale_h).ceil() as usize).min(pw))
        };
        let resized = resize_rgb8(rgb, width, height, nw, nh, processor.filter);
        let (oy, ox) = ((ph - nh) / 2, (pw - nw) / 2);
        let mut canvas = vec![0u8; ph * pw * 3];
        for y in 0..nh {
            let dst = ((y + oy) * pw + ox) * 3;
            canvas[dst..dst + nw * 3].copy_from_slice(&resized[y * nw * 3..(y + 1) * nw * 3]);
        }
        let t = self.tile;
        let base = Rgb8 { width: t, height: t, data: resize_rgb8(rgb, width, height, t, t, processor.filter) };
        let mut out = vec![processor.finish(&base)];
        let (rows, cols) = (ph / t, pw / t);
        for r in 0..rows {
            for c in 0..cols {
                let mut tile = Vec::with_capacity(t * t * 3);
                for y in 0..t {
                    let src = ((r * t + y) * pw + c * t) * 3;
                    tile.extend_from_slice(&canvas[src..src + t * 3]);
                }
                out.push(processor.finish(&Rgb8 { width: t, height: t, data: tile }));
            }
        }
        (out, (rows, cols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_grid_that_keeps_the_most_pixels() {
        let p = AnyRes::llava_next().pinpoints;
        assert_eq!(select_best_resolution(480, 640, &p), Some((672, 672)));
        assert_eq!(select_best_resolution(300, 1000, &p), Some((336, 1008)));
        assert_eq!(select_best_resolution(200, 200, &p), Some((336, 672)));
        assert_eq!(select_best_resolution(10, 10, &[]), None);
    }
}
