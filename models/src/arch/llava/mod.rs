//! LLaVA-1.5 (`model_type: llava`, transformers' `LlavaForConditionalGeneration`): every frame or image is resized
//! to the tower's square input and gives its `g x g` projected patch tokens, all under one `<image>` placeholder
//! span, with no newline embedding. Frames of a video and separate images are laid out alike, as frames of a
//! `frames x g x g` grid, so the video methods see the time axis.

use super::{keys_matrix, matrix, AnyResCut, Family, MediaKind, Newline, TowerOutput, ViewPlan, VisualTokens};
use crate::onevision::square_side;
use crate::vlm_config::VlmConfig;
use tokensieve_pruners::Layout;

/// The LLaVA-1.5 family.
pub struct Llava {
    /// The visual-token keys of `config.json`.
    pub config: VlmConfig,
}

impl Family for Llava {
    fn name(&self) -> &'static str {
        "llava"
    }

    fn image_size(&self) -> usize {
        self.config.image_size
    }

    fn view_plan(&self, _: MediaKind, _: usize) -> ViewPlan {
        ViewPlan::Square
    }

    fn arrange(&self, out: TowerOutput, _: MediaKind, _: Option<AnyResCut>) -> Result<VisualTokens, String> {
        out.check()?;
        let (f, n) = (out.views, out.tokens);
        Ok(VisualTokens {
            features: matrix(out.features, out.dim)?,
            attention: out.attention,
            keys: keys_matrix(out.keys)?,
            layout: square_side(n).map(|g| Layout::frames(f, g, g)),
            units: (f, n),
            newline: Newline::None,
            placeholder: (self.config.image_token_id, "<image>"),
            anyres: None,
            deepstack: None,
            ragged: None,
        })
    }
}
