//! Qwen-VL's patch layout (transformers' `Qwen2VLImageProcessor.patchify` and `Qwen2VLVideoProcessor.patchify`):
//! normalised frames of one size become rows of `channels x temporal x patch x patch` values, one row per patch,
//! ordered by temporal patch, then merge block (row by row), then the block's `merge x merge` patches (row by row).
//! An image is its own temporal patch, repeated `temporal` times; a video's frames go `temporal` at a time, the last
//! frame repeated when the count is not a multiple. Complexity `O(values)`, one pass writing each output value once.

use super::Pixels;

/// Patches of `frames` (all `height x width`, sides multiples of `patch · merge`): `temporal` consecutive frames
/// make one temporal patch (`repeat_each`: every frame is its own temporal patch, repeated, as images are). Returns
/// the `[t·h·w, 3·temporal·patch²]` rows and the grid `(t, h, w)` in patches; `None` when the frames differ in size,
/// a side is not a multiple of `patch · merge`, or there is no frame.
pub fn patchify(
    frames: &[&Pixels],
    patch: usize,
    merge: usize,
    temporal: usize,
    repeat_each: bool,
) -> Option<(Vec<f32>, [usize; 3])> {
    let first = frames.first()?;
    let (height, width) = (first.height, first.width);
    let block = patch * merge;
    if block == 0 || temporal == 0 || height % block != 0 || width % block != 0 {
        return None;
    }
    if frames.iter().any(|f| (f.height, f.width) != (height, width) || f.data.len() != 3 * height * width) {
        return None;
    }
    let (gh, gw) = (height / patch, width / patch);
    let t = if repeat_each { frames.len() } else { frames.len().div_ceil(temporal) };
    let row = 3 * temporal * patch * patch;
    let mut out = Vec::with_capacity(t * gh * gw * row);
    let plane = height * width;
    for ti in 0..t {
        // The frames of this temporal patch, the last frame standing in for missing ones.
        let members: Vec<&Pixels> = (0..temporal)
            .map(|k| if repeat_each { frames[ti] } else { frames[(ti * temporal + k).min(frames.len() - 1)] })
            .collect();
        for br in 0..gh / merge {
            for bc in 0..gw / merge {
                for ir in 0..merge {
                    for ic in 0..merge {
                        let (y0, x0) = ((br * merge + ir) * patch, (bc * merge + ic) * patch);
                        for c in 0..3 {
                            for f in &members {
                                for y in y0..y0 + patch {
                                    let start = c * plane + y * width + x0;
                                    out.extend_from_slice(&f.data[start..start + patch]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Some((out, [t, gh, gw]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose value at (c, y, x) encodes its coordinates and the frame number.
    fn frame(id: usize, h: usize, w: usize) -> Pixels {
        let data = (0..3 * h * w).map(|i| (id * 100000 + i) as f32).collect();
        Pixels { height: h, width: w, data }
    }

    #[test]
    fn rows_are_channel_time_row_col_in_merge_blocks() {
        // 4 x 8 pixels, patch 2, merge 2: a 2 x 4 patch grid, two merge blocks side by side.
        let (a, b) = (frame(0, 4, 8), frame(1, 4, 8));
        let (rows, grid) = patchify(&[&a, &b], 2, 2, 2, false).unwrap();
        assert_eq!(grid, [1, 2, 4]);
        let row = 3 * 2 * 2 * 2;
        assert_eq!(rows.len(), 8 * row);
        // Patch 1 of the first block is patch (row 0, col 1): pixels x 2..4 of rows 0..2.
        let p = &rows[row..2 * row];
        assert_eq!(&p[..4], &[2.0, 3.0, 10.0, 11.0]); // channel 0, frame 0, y 0 then y 1
        assert_eq!(&p[4..6], &[100002.0, 100003.0]); // channel 0, frame 1
        assert_eq!(p[8], 32.0 + 2.0); // channel 1 starts at plane offset 32
                                      // The third row is patch (row 1, col 0), still in the first merge block.
        assert_eq!(rows[2 * row], 16.0);
        // The second merge block starts at patch (0, 2).
        assert_eq!(rows[4 * row], 4.0);
    }

    #[test]
    fn odd_videos_repeat_their_last_frame_and_images_repeat_themselves() {
        let f: Vec<Pixels> = (0..3).map(|i| frame(i, 4, 4)).collect();
        let refs: Vec<&Pixels> = f.iter().collect();
        let (rows, grid) = patchify(&refs, 2, 2, 2, false).unwrap();
        assert_eq!(grid, [2, 2, 2]);
        let second = &rows[4 * 24..5 * 24];
        assert_eq!((second[0], second[4]), (200000.0, 200000.0), "frame 2 stands in for the missing frame 3");
        let (images, grid) = patchify(&refs, 2, 2, 2, true).unwrap();
        assert_eq!(grid, [3, 2, 2]);
        assert_eq!((images[0], images[4]), (0.0, 0.0));
        assert!(patchify(&[&frame(0, 4, 6)], 2, 2, 2, true).is_none(), "6 is not a multiple of 4");
        assert!(patchify(&[&frame(0, 4, 4), &frame(1, 8, 4)], 2, 2, 2, true).is_none(), "sizes differ");
    }
}
