//! Per-frame embeddings for the samplers that look at content, and a cheap built-in one.
//!
//! A vision encoder implements [`FrameEmbedder`] (the root crate plugs the CLIP/SigLIP dual encoders in, for
//! D-CoDe's CLIP image embeddings) and an image-text model [`FrameScorer`] (F2C's relevance); without a model,
//! [`ThumbnailEmbedder`] describes a frame by a tiny colour thumbnail. That is good for what changes between frames
//! — scene cuts, motion, lighting — so D-CoDe's diversity picks and DySeg's segments behave sensibly on real
//! footage; it knows nothing about meaning, so it cannot score relevance to a question.

use crate::decode::Frame;

/// Why an embedder or scorer failed: its name and the model's error.
#[derive(Debug, thiserror::Error)]
#[error("{embedder}: {source}")]
pub struct EmbedError {
    /// The embedder (`clip:/path`, ...).
    pub embedder: String,
    /// The model's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Maps decoded frames to one embedding each.
pub trait FrameEmbedder {
    /// What the record calls it (`thumbnail 8x8`, `clip:/models/clip-vit-large-patch14-336`).
    fn name(&self) -> String;
    /// One vector per frame, all of the same width.
    fn embed(&self, frames: &[Frame]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The size to decode a `width x height` video's frames at for this embedder: the video's own by default (a
    /// model's image processor resizes them as it would a photo).
    fn decode_size(&self, width: u32, height: u32) -> (u32, u32) {
        (width, height)
    }
}

/// Scores decoded frames against a question (F2C's `r_i = cos(E_img(f_i), E_txt(Q))`).
pub trait FrameScorer {
    /// What the record calls it.
    fn name(&self) -> String;
    /// One relevance per frame.
    fn scores(&self, frames: &[Frame], query: &str) -> Result<Vec<f32>, EmbedError>;
}

/// A `side x side` RGB thumbnail (area-averaged), centred on the frame's mean and L2-normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailEmbedder {
    /// Thumbnail side in cells.
    pub side: usize,
}

impl Default for ThumbnailEmbedder {
    fn default() -> Self {
        ThumbnailEmbedder { side: 8 }
    }
}

impl ThumbnailEmbedder {
    /// One thumbnail vector per frame (infallible, unlike a model).
    pub fn thumbnails(&self, frames: &[Frame]) -> Vec<Vec<f32>> {
        frames
            .iter()
            .map(|f| {
                let (w, h, side) = (f.width as usize, f.height as usize, self.side.max(1));
                let mut cells = vec![0f32; side * side * 3];
                let mut counts = vec![0f32; side * side];
                for y in 0..h {
                    for x in 0..w {
                        let cell = (y * side / h.max(1)) * side + x * side / w.max(1);
                        counts[cell] += 1.0;
                        for c in 0..3 {
                            cells[cell * 3 + c] += f.rgb[(y * w + x) * 3 + c] as f32;
                        }
                    }
                }
                for (cell, &count) in counts.iter().enumerate() {
                    for c in 0..3 {
                        cells[cell * 3 + c] /= count.max(1.0) * 255.0;
                    }
                }
                let mean = cells.iter().sum::<f32>() / cells.len() as f32;
                cells.iter_mut().for_each(|v| *v -= mean);
                let norm = cells.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-8;
                cells.iter_mut().for_each(|v| *v /= norm);
                cells
            })
            .collect()
    }
}

impl FrameEmbedder for ThumbnailEmbedder {
    fn name(&self) -> String {
        format!("thumbnail {0}x{0}", self.side)
    }

    fn embed(&self, frames: &[Frame]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.thumbnails(frames))
    }

    /// 64 x 64 is plenty for an 8 x 8 thumbnail.
    fn decode_size(&self, _: u32, _: u32) -> (u32, u32) {
        (64, 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: impl Fn(usize, usize) -> [u8; 3]) -> Frame {
        let f = &f;
        let rgb = (0..16).flat_map(|y| (0..16).flat_map(move |x| f(x, y))).collect();
        Frame { timestamp: 0.0, requested: 0.0, width: 16, height: 16, rgb }
    }

    #[test]
    fn similar_frames_embed_close_and_different_ones_far() {
        let left_dark = frame(|x, _| if x < 8 { [10, 10, 10] } else { [200, 200, 200] });
        let left_dark2 = frame(|x, _| if x < 8 { [20, 20, 20] } else { [210, 190, 200] });
        let top_dark = frame(|_, y| if y < 8 { [10, 10, 10] } else { [200, 200, 200] });
        let e = ThumbnailEmbedder { side: 4 }.thumbnails(&[left_dark, left_dark2, top_dark]);
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(cos(&e[0], &e[1]) > 0.95);
        assert!(cos(&e[0], &e[2]) < 0.1);
        assert_eq!(e[0].len(), 48);
    }
}
