//! LLaVA-OneVision (`model_type: llava_onevision`, transformers' `LlavaOnevisionForConditionalGeneration`): the
//! LLaVA recipe on a SigLIP tower with three arrangements of the projected tokens (the geometry is in
//! [`crate::onevision`]):
//! - a video: every frame's `g x g` map pooled bilinearly to `ceil(g/2)²`, frames in order under `<video>`, one
//!   newline embedding after all of them;
//! - one image: any-resolution tiles packed into one sequence (base view, unpadded tile map with a newline per row),
//!   pruned as a flat set;
//! - several images: each image's base view and a newline after each image's kept tokens.
//!
//! Signals follow the tokens \[project\]: a pooled token's attention and keys are the same bilinear pool of its
//! patches' signals, and a packed newline row has attention 0 and zero keys (it is no patch). The official video
//! pruners on OneVision (FastVID, HoliTom) read the SigLIP attention at the pooled resolution in the same way.

use super::{
    keys_matrix, matrix, AnyResCut, AnyResLayout, Family, MediaKind, Newline, TowerOutput, ViewPlan, VisualTokens,
};
use crate::onevision::{pack_image, packed_map, pool_video, square_side, Views};
use crate::vlm_config::{OneVisionConfig, VlmConfig};
use tokensieve_pruners::Layout;

/// The LLaVA-OneVision family.
pub struct OneVision {
    /// The visual-token keys of `config.json`.
    pub config: VlmConfig,
    ov: OneVisionConfig,
    newline: Vec<f32>,
}

impl OneVision {
    /// The family of a `llava_onevision` config with its `image_newline` embedding.
    pub fn new(config: VlmConfig, newline: Vec<f32>) -> Result<Self, String> {
        let ov = config.onevision.clone().ok_or("not a llava_onevision config")?;
        Ok(OneVision { config, ov, newline })
    }
}

/// Runs one OneVision layout step on a `[views, tokens, width]` buffer.
fn step<T>(
    data: &[f32],
    out: &TowerOutput,
    width: usize,
    f: impl FnOnce(Views<'_>) -> Result<T, String>,
) -> Result<T, String> {
    f(Views { data, views: out.views, tokens: out.tokens, dim: width })
}

impl Family for OneVision {
    fn name(&self) -> &'static str {
        "llava_onevision"
    }

    fn image_size(&self) -> usize {
        self.config.image_size
    }

    fn view_plan(&self, kind: MediaKind, frames: usize) -> ViewPlan {
        match (kind, frames) {
            (MediaKind::Images, 1) => ViewPlan::AnyRes { pinpoints: self.ov.pinpoints.clone() },
            _ => ViewPlan::Square,
        }
    }

    fn arrange(&self, out: TowerOutput, kind: MediaKind, cut: Option<AnyResCut>) -> Result<VisualTokens, String> {
        out.check()?;
        if self.newline.len() != out.dim {
            return Err(format!("image_newline has {} values, the visual tokens {}", self.newline.len(), out.dim));
        }
        let image_token = (self.config.image_token_id, "<image>");
        let key_width = out.keys.as_ref().map(|k| k.1);
        match (kind, cut) {
            (MediaKind::Video, _) => {
                let f = out.views;
                let pooled = step(&out.features, &out, out.dim, pool_video)?;
                let n = pooled.len() / (f * out.dim).max(1);
                let attention = out.attention.as_ref().map(|a| step(a, &out, 1, pool_video)).transpose()?;
                let keys =
                    out.keys.as_ref().map(|(k, w)| step(k, &out, *w, pool_video).map(|p| (p, *w))).transpose()?;
                Ok(VisualTokens {
                    features: matrix(pooled, out.dim)?,
                    attention,
                    keys: keys_matrix(keys)?,
                    layout: square_side(n).map(|g| Layout::frames(f, g, g)),
                    units: (f, n),
                    newline: Newline::End,
                    placeholder: (self.ov.video_token_id, "<video>"),
                    anyres: None,
                    deepstack: None,
                    ragged: None,
                })
            }
            (MediaKind::Images, Some(AnyResCut { image, grid })) => {
                let max = self.ov.max_patches;
                let (packed, n) =
                    step(&out.features, &out, out.dim, |v| pack_image(v, image, grid, max, &self.newline))?;
                let attention = out
                    .attention
                    .as_ref()
                    .map(|a| step(a, &out, 1, |v| pack_image(v, image, grid, max, &[0.0])))
                    .transpose()?;
                let keys = match (&out.keys, key_width) {
                    (Some((k, _)), Some(w)) => {
                        Some((step(k, &out, w, |v| pack_image(v, image, grid, max, &vec![0.0; w]))?.0, w))
                    }
                    _ => None,
                };
                // The packed sequence (base view, tile map, row newlines) is pruned as one flat set.
                let g = square_side(out.tokens).ok_or("the tiles are not square patch grids")?;
                let map = packed_map(image.0, image.1, grid.0 * g, grid.1 * g, g, max);
                Ok(VisualTokens {
                    features: matrix(packed, out.dim)?,
                    attention: attention.map(|a| a.0),
                    keys: keys_matrix(keys)?,
                    layout: None,
                    units: (1, n),
                    newline: Newline::None,
                    placeholder: image_token,
                    anyres: Some(AnyResLayout { cut: AnyResCut { image, grid }, base: g, map }),
                    deepstack: None,
                    ragged: None,
                })
            }
            (MediaKind::Images, None) => {
                let (i, n) = (out.views, out.tokens);
                Ok(VisualTokens {
                    features: matrix(out.features, out.dim)?,
                    attention: out.attention,
                    keys: keys_matrix(out.keys)?,
                    layout: square_side(n).map(|g| Layout::Grid { views: i, frames: 1, height: g, width: g }),
                    units: (i, n),
                    newline: Newline::PerUnit,
                    placeholder: image_token,
                    anyres: None,
                    deepstack: None,
                    ragged: None,
                })
            }
        }
    }

    fn newline(&self) -> Option<&[f32]> {
        Some(&self.newline)
    }
}
