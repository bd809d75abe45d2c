//! Model families: how each one turns its vision tower's output into the visual tokens the pruners and the decoder
//! see. A family folder holds what is particular to it (its `config.json` keys, which views the processor cuts and
//! how the projected tokens of those views are arranged: pooling, packing, newline embeddings, the placeholder);
//! the towers and decoders it is built from (`crate::vision`, `crate::llama`, the ONNX graphs) are shared.
//!
//! Everything here runs on the host without a backend, so the libtorch and ONNX Runtime engines arrange tokens with
//! the same code and give the same kept indices. The signals (attention, keys) travel with the tokens through the
//! same arrangement, so a pooled or packed token carries the pooled or packed signal of its patches.
//!
//! Adding a family: a folder here with a type implementing [`Family`], and one line in [`family_for`].
//! `docs/ARCHITECTURE.md` lists the other places a family with a new tower or decoder touches.

pub mod llava;
pub mod llava_onevision;
pub mod qwen2_5_vl;
pub mod qwen3_vl;

use crate::vlm_config::VlmConfig;
use ndarray::Array2;
use tokensieve_pruners::Layout;

/// What the frames given to an engine are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MediaKind {
    /// Frames sampled from one video (OneVision pools them and puts them under `<video>`).
    Video,
    /// Separate images: camera views, clip stills or one photo (OneVision: one image goes through any-resolution
    /// tiling, several get their base view and a newline each).
    Images,
}

/// Where a family's newline embedding goes among the kept visual tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newline {
    /// Nowhere (LLaVA-1.5), or already inside the tokens (any-resolution packing).
    None,
    /// After every image's kept tokens.
    PerUnit,
    /// Once after all frames (video).
    End,
}

/// Which signals a tower computes besides the tokens (only what is asked for is computed), at the layer the
/// family's feature layer names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalRequest {
    /// An attention score per token, averaged over heads: CLIP's CLS row, or for towers without a CLS token the
    /// mean attention each token receives (averaged over queries too).
    pub attention: bool,
    /// The keys of that layer averaged over heads.
    pub keys: bool,
}

/// Which views the pipeline's image processor cuts from the frames.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewPlan {
    /// Every frame resized to the tower's square input.
    Square,
    /// One image cut into a base view and tiles on the best of these grid pinpoints `(height, width)` (LLaVA-NeXT's
    /// any-resolution scheme).
    AnyRes {
        /// The grid pinpoints in pixels.
        pinpoints: Vec<(usize, usize)>,
    },
    /// Native resolution (Qwen-VL): each image, or the frames of a video in runs of `temporal`, resized by the
    /// processor to multiples of `patch · merge` and cut into flattened `temporal x patch x patch` patches in merge
    /// blocks ([`ViewBatch::Patches`]).
    Patches {
        /// Spatial patch side.
        patch: usize,
        /// Merge block side.
        merge: usize,
        /// Frames per temporal patch.
        temporal: usize,
    },
}

/// One batch of views for a tower.
#[derive(Debug, Clone, Copy)]
pub enum ViewBatch<'a> {
    /// `[views, 3, side, side]` row-major pixels.
    Square {
        /// The pixels.
        pixels: &'a [f32],
        /// Views in the batch.
        views: usize,
        /// Their side.
        side: usize,
    },
    /// `[t·h·w, values]` flattened patches of a `(t, h, w)` patch grid ([`ViewPlan::Patches`]): `t` temporal
    /// patches (frames pairs of a video, or images of one size) of `h x w` patches each.
    Patches {
        /// The patches in the processor's order.
        patches: &'a [f32],
        /// `(t, h, w)`.
        grid: [usize; 3],
    },
}

impl ViewBatch<'_> {
    /// Views in the batch (temporal patches for [`ViewBatch::Patches`]).
    pub fn views(&self) -> usize {
        match self {
            ViewBatch::Square { views, .. } => *views,
            ViewBatch::Patches { grid, .. } => grid[0],
        }
    }

    /// The batch in words, for errors: `4 views of 384x384`, `2 x 16 x 20 patches`.
    pub fn describe(&self) -> String {
        match self {
            ViewBatch::Square { views, side, .. } => format!("{views} views of {side}x{side}"),
            ViewBatch::Patches { grid: [t, h, w], .. } => format!("{t} x {h} x {w} patches"),
        }
    }
}

/// How a family wraps each image or video in the prompt and numbers its positions (Qwen-VL's
/// `<|vision_start|> pads <|vision_end|>` with M-RoPE ids); families without it put one placeholder run in the text
/// and use 1-D positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptSpans {
    /// The token that opens each span, id and text.
    pub start: (i64, &'static str),
    /// The text that closes it.
    pub end: &'static str,
    /// Temporal position ids per second of video.
    pub tokens_per_second: f64,
    /// Frames per temporal patch (the seconds a video's temporal id covers are this many frame intervals).
    pub temporal_patch: usize,
    /// Qwen3-VL: every temporal patch of a video is its own span, preceded by its time as text
    /// (`<{t:.1} seconds>`, the mean of its frames' timestamps), instead of one span for the whole video.
    pub timestamps: bool,
}

/// How the processor cut one any-resolution image: its size and the tile grid it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyResCut {
    /// `(height, width)` of the image in pixels.
    pub image: (usize, usize),
    /// `(rows, cols)` of tiles after the base view.
    pub grid: (usize, usize),
}

/// The tower's projected tokens of a batch of views, on the host, with the signals that were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerOutput {
    /// `[views, tokens, dim]` row-major.
    pub features: Vec<f32>,
    /// Views in the batch.
    pub views: usize,
    /// Tokens per view.
    pub tokens: usize,
    /// Feature width.
    pub dim: usize,
    /// `[views, tokens]` attention per token at the signal layer.
    pub attention: Option<Vec<f32>>,
    /// `[views, tokens, key_dim]` keys (mean over heads) and `key_dim`.
    pub keys: Option<(Vec<f32>, usize)>,
    /// `(rows, cols)` of each view's tokens, for towers whose views are not square (native resolution).
    pub grid: Option<(usize, usize)>,
    /// Qwen3-VL's DeepStack planes `[views, tokens, levels x dim]` (each token's levels side by side) and the
    /// number of levels.
    pub deepstack: Option<(Vec<f32>, usize)>,
}

impl TowerOutput {
    /// Appends the views of `next` (a later batch of the same tower, same signals) after these.
    pub fn append(&mut self, next: TowerOutput) -> Result<(), String> {
        let shape = |o: &TowerOutput| {
            (
                o.tokens,
                o.dim,
                o.attention.is_some(),
                o.keys.as_ref().map(|k| k.1),
                o.grid,
                o.deepstack.as_ref().map(|d| d.1),
            )
        };
        if shape(self) != shape(&next) {
            return Err(format!(
                "a batch of {} tokens x {} differs from the first batch's {} x {} (or in its signals)",
                next.tokens, next.dim, self.tokens, self.dim
            ));
        }
        self.features.extend(next.features);
        if let (Some(a), Some(b)) = (self.attention.as_mut(), next.attention) {
            a.extend(b);
        }
        if let (Some((a, _)), Some((b, _))) = (self.keys.as_mut(), next.keys) {
            a.extend(b);
        }
        if let (Some((a, _)), Some((b, _))) = (self.deepstack.as_mut(), next.deepstack) {
            a.extend(b);
        }
        self.views += next.views;
        Ok(())
    }

    /// Checks that every buffer holds `views x tokens x width` values; the error names the buffer and both sizes.
    pub fn check(&self) -> Result<(), String> {
        let expect = |name: &str, len: usize, width: usize| {
            let want = self.views * self.tokens * width;
            (len == want).then_some(()).ok_or_else(|| {
                format!("{name} holds {len} values, expected {} views x {} tokens x {width}", self.views, self.tokens)
            })
        };
        expect("features", self.features.len(), self.dim)?;
        if let Some(a) = &self.attention {
            expect("attention", a.len(), 1)?;
        }
        if let Some((k, w)) = &self.keys {
            expect("keys", k.len(), *w)?;
        }
        if let Some((p, levels)) = &self.deepstack {
            expect("deepstack", p.len(), levels * self.dim)?;
        }
        Ok(())
    }
}

/// The visual tokens of some frames as the pruners and the prompt see them.
#[derive(Debug, Clone)]
pub struct VisualTokens {
    /// `[tokens, D]` in unit order.
    pub features: Array2<f32>,
    /// Attention per token `[tokens]` (CLS row, or mean received attention for towers without CLS).
    pub attention: Option<Vec<f32>>,
    /// Keys `[tokens, key_dim]`.
    pub keys: Option<Array2<f32>>,
    /// The token grid, when the units are square patch grids.
    pub layout: Option<Layout>,
    /// `(units, tokens per unit)`: frames or images.
    pub units: (usize, usize),
    /// Where newline embeddings go.
    pub newline: Newline,
    /// Placeholder token id and its text.
    pub placeholder: (i64, &'static str),
    /// For a single any-resolution image: where its packed tokens come from (pictures of the selection).
    pub anyres: Option<AnyResLayout>,
    /// Qwen3-VL's DeepStack planes `[tokens, levels x D]`: row `r` holds token `r`'s plane of every level, side by
    /// side. They follow the kept tokens to the decoder (a merged token takes its representative's).
    pub deepstack: Option<Array2<f32>>,
    /// Native-resolution images of different sizes (Qwen-VL: each image is resized on its own): every image's
    /// merged `(rows, cols)`, in order. The units then differ in size: `units.1` is 0, `layout` is `None` (the
    /// pruners see one flat sequence) and [`VisualTokens::unit_starts`] gives the boundaries.
    pub ragged: Option<Vec<(usize, usize)>>,
}

impl VisualTokens {
    /// The first row of every unit, then the row count (`units + 1` boundaries).
    pub fn unit_starts(&self) -> Vec<usize> {
        match &self.ragged {
            Some(grids) => std::iter::once(0)
                .chain(grids.iter().scan(0, |end, &(h, w)| {
                    *end += h * w;
                    Some(*end)
                }))
                .collect(),
            None => (0..=self.units.0).map(|u| u * self.units.1).collect(),
        }
    }

    /// Every unit's `(rows, cols)` grid, when the units are grids (square views, frames, native-resolution images).
    pub fn unit_grids(&self) -> Option<Vec<(usize, usize)>> {
        match (&self.ragged, self.layout) {
            (Some(grids), _) => Some(grids.clone()),
            (None, Some(Layout::Grid { height, width, .. })) => Some(vec![(height, width); self.units.0]),
            _ => None,
        }
    }

    /// Whether `next` continues these tokens as images of another size (or these already are): both one-frame
    /// grids of the same signals and width without newlines, and not of one unit shape.
    fn continues_ragged(&self, next: &VisualTokens) -> bool {
        let images = |v: &VisualTokens| {
            v.ragged.is_some() || matches!(v.layout, Some(Layout::Grid { frames: 1, .. })) && v.newline == Newline::None
        };
        let signals = |v: &VisualTokens| {
            (
                v.features.ncols(),
                v.placeholder,
                v.attention.is_some(),
                v.keys.as_ref().map(|k| k.ncols()),
                v.deepstack.as_ref().map(|p| p.ncols()),
            )
        };
        images(self)
            && images(next)
            && next.ragged.is_none()
            && signals(self) == signals(next)
            && (self.ragged.is_some() || self.unit_grids().map(|g| g[0]) != next.unit_grids().map(|g| g[0]))
    }

    /// Reserves room for `units` more units of this shape (features, keys and attention), so that appending the
    /// batches of a long video never reallocates: the features are the largest buffer after encoding, and a
    /// growing buffer's reallocation briefly holds it twice.
    pub fn reserve_units(&mut self, units: usize) -> Result<(), String> {
        let rows = units * self.units.1;
        self.features.reserve(ndarray::Axis(0), rows).map_err(|e| e.to_string())?;
        if let Some(a) = self.attention.as_mut() {
            a.reserve(rows);
        }
        if let Some(k) = self.keys.as_mut() {
            k.reserve(ndarray::Axis(0), rows).map_err(|e| e.to_string())?;
        }
        if let Some(p) = self.deepstack.as_mut() {
            p.reserve(ndarray::Axis(0), rows).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Appends the tokens of `next`, the arrangement of the frames (or images) after these, so a long video can be
    /// encoded and arranged a batch at a time: the rows, attention and keys follow these, the unit count and the
    /// grid's frames (one view) or views (one frame each) add up. Only square-view arrangements append (an
    /// any-resolution image is packed as one sequence); both must carry the same signals, width and unit size, except
    /// that native-resolution images of another size make the units ragged ([`VisualTokens::ragged`]).
    pub fn append(&mut self, next: VisualTokens) -> Result<(), String> {
        if self.continues_ragged(&next) {
            let mut grids = self.unit_grids().unwrap_or_default();
            grids.extend(next.unit_grids().unwrap_or_default());
            (self.ragged, self.layout, self.units) = (Some(grids), None, (self.units.0 + next.units.0, 0));
            return self.append_rows(next);
        }
        let shape = |v: &VisualTokens| {
            (
                v.features.ncols(),
                v.units.1,
                v.newline,
                v.placeholder,
                v.attention.is_some(),
                v.keys.as_ref().map(|k| k.ncols()),
                v.anyres.is_some(),
                v.deepstack.as_ref().map(|p| p.ncols()),
            )
        };
        if shape(self) != shape(&next) || self.anyres.is_some() {
            return Err(format!(
                "a batch of {} units x {} tokens x {} differs from the first batch's {} x {} x {} (or in its \
                 signals, newline or placeholder), or is an any-resolution image",
                next.units.0,
                next.units.1,
                next.features.ncols(),
                self.units.0,
                self.units.1,
                self.features.ncols()
            ));
        }
        // A batch of one unit is `views: 1, frames: 1` in both arrangements: the newline tells them apart (the
        // families give separate images a newline each and a video's frames one newline at the end, or none).
        let images = self.newline == Newline::PerUnit;
        self.layout = match (self.layout, next.layout) {
            (None, None) => None,
            (
                Some(Layout::Grid { views: a, frames: 1, height, width }),
                Some(Layout::Grid { views: b, frames: 1, height: h, width: w }),
            ) if (height, width) == (h, w) && (images || a > 1 || b > 1) => {
                Some(Layout::Grid { views: a + b, frames: 1, height, width })
            }
            (
                Some(Layout::Grid { views: 1, frames: a, height, width }),
                Some(Layout::Grid { views: 1, frames: b, height: h, width: w }),
            ) if (height, width) == (h, w) => Some(Layout::Grid { views: 1, frames: a + b, height, width }),
            (a, b) => return Err(format!("a batch laid out as {b:?} cannot follow {a:?}")),
        };
        self.units.0 += next.units.0;
        self.append_rows(next)
    }

    /// Appends the rows of `next` (features and the signals both carry) after these.
    fn append_rows(&mut self, next: VisualTokens) -> Result<(), String> {
        self.features.append(ndarray::Axis(0), next.features.view()).map_err(|e| e.to_string())?;
        if let (Some(a), Some(b)) = (self.attention.as_mut(), next.attention) {
            a.extend(b);
        }
        if let (Some(a), Some(b)) = (self.keys.as_mut(), next.keys) {
            a.append(ndarray::Axis(0), b.view()).map_err(|e| e.to_string())?;
        }
        if let (Some(a), Some(b)) = (self.deepstack.as_mut(), next.deepstack) {
            a.append(ndarray::Axis(0), b.view()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Where the packed tokens of one any-resolution image come from: the base view's `base x base` patch tokens, then
/// `map.rows` rows of `map.cols` tokens (each row followed by a newline token) over the unpadded window of the
/// tiles' patch canvas that `map` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyResLayout {
    /// How the image was cut.
    pub cut: AnyResCut,
    /// The base view's grid side `g`.
    pub base: usize,
    /// The tile map's window and size.
    pub map: crate::onevision::PackedMap,
}

/// What is particular to one model family's visual tokens.
pub trait Family: Send + Sync {
    /// The family's `model_type`.
    fn name(&self) -> &'static str;

    /// The tower's square input side.
    fn image_size(&self) -> usize;

    /// Which views the processor cuts for `frames` frames of `kind`.
    fn view_plan(&self, kind: MediaKind, frames: usize) -> ViewPlan;

    /// Arranges the tower's output for frames of `kind`; `cut` says how an any-resolution image was cut (when the
    /// view plan was [`ViewPlan::AnyRes`]).
    fn arrange(&self, out: TowerOutput, kind: MediaKind, cut: Option<AnyResCut>) -> Result<VisualTokens, String>;

    /// The newline embedding `[D]` put after units ([`Newline`]), if the family has one.
    fn newline(&self) -> Option<&[f32]> {
        None
    }

    /// How each image or video is wrapped in the prompt and positioned, for M-RoPE families.
    fn prompt_spans(&self) -> Option<PromptSpans> {
        None
    }
}

/// The `model_type`s of the vision-language families [`family_for`] builds.
pub const FAMILIES: &[&str] = &["llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl"];

/// The family of a parsed `config.json` (`model_type`); `newline` is OneVision's `image_newline` read by the backend.
pub fn family_for(json: &serde_json::Value, newline: Option<Vec<f32>>) -> Result<Box<dyn Family>, String> {
    match json["model_type"].as_str() {
        Some("llava") => Ok(Box::new(llava::Llava { config: VlmConfig::from_json(json)? })),
        Some("llava_onevision") => {
            let newline = newline.ok_or("a llava_onevision checkpoint needs `image_newline`")?;
            Ok(Box::new(llava_onevision::OneVision::new(VlmConfig::from_json(json)?, newline)?))
        }
        Some("qwen2_5_vl") => Ok(Box::new(qwen2_5_vl::QwenVl::from_json(json, qwen2_5_vl::QwenGeneration::Qwen25)?)),
        Some("qwen3_vl") => Ok(Box::new(qwen3_vl::from_json(json)?)),
        other => {
            Err(format!("model_type {other:?} is not a supported vision-language family ({})", FAMILIES.join(", ")))
        }
    }
}

/// `[rows, width]` from a flat buffer; the caller checked the length.
pub(crate) fn matrix(values: Vec<f32>, width: usize) -> Result<Array2<f32>, String> {
    let rows = values.len() / width.max(1);
    Array2::from_shape_vec((rows, width), values).map_err(|e| e.to_string())
}

/// Keys `[rows, key_dim]` from a tower's flat keys.
pub(crate) fn keys_matrix(keys: Option<(Vec<f32>, usize)>) -> Result<Option<Array2<f32>>, String> {
    keys.map(|(k, w)| matrix(k, w)).transpose()
}
