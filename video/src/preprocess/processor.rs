//! One image processor configuration and its pipeline, in the order transformers applies it:
//! (pad to square) -> resize -> center crop -> rescale -> normalise -> channels first.
//!
//! Numerics follow transformers' PIL backend: resizing on 8-bit pixels with Pillow's algorithm
//! ([`super::resample`]), rescaling in f64 then stored as f32 (`np_rescale`), normalising in f32 with f32 mean and
//! std (`np_normalize`). Shortest-edge sizes truncate the long side (`int(size · long / short)`); center crops take
//! `top = (H − h) // 2` and pad with zeros (centred, `ceil`) when the image is smaller than the crop.

use super::resample::{resize_rgb8_with, Filter, Kernel};
use serde_json::Value;
use thiserror::Error;

/// OpenAI CLIP's mean.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's standard deviation.
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// SigLIP's mean.
pub const SIGLIP_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
/// SigLIP's standard deviation.
pub const SIGLIP_STD: [f64; 3] = [0.5, 0.5, 0.5];

/// A `preprocessor_config.json` this crate cannot follow.
#[derive(Debug, Error, PartialEq)]
pub enum PreprocessError {
    /// A key has an unusable value.
    #[error("preprocessor config: `{key}` {reason}")]
    Config {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// How to resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side becomes this, the longer keeps the aspect ratio (truncated).
    ShortestEdge(u32),
    /// Exactly this `height x width`.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
    /// Qwen-VL's native resolution: [`smart_resize`] to multiples of `factor` (patch · merge) with
    /// `min_pixels <= height · width <= max_pixels`.
    Native {
        /// Both sides become multiples of this.
        factor: u32,
        /// Lower bound on the pixel count.
        min_pixels: u64,
        /// Upper bound on the pixel count.
        max_pixels: u64,
    },
    /// Qwen3-VL's video resize ([`smart_resize_video`]): the bounds hold for the pixels of all `frames` frames
    /// (rounded to whole temporal patches), so longer videos get smaller frames.
    NativeVideo {
        /// Both sides become multiples of this.
        factor: u32,
        /// Frames per temporal patch.
        temporal: u32,
        /// Frames of the video (set by [`ImageProcessor::for_video`]; 0 until then, read as one temporal patch).
        frames: u32,
        /// Lower bound on the video's pixel count.
        min_pixels: u64,
        /// Upper bound on the video's pixel count.
        max_pixels: u64,
    },
}

/// transformers' Qwen3-VL video `smart_resize(num_frames, height, width, temporal_factor, factor, min_pixels,
/// max_pixels)`: sides below `factor` are first scaled up to it, then rounded to multiples of `factor`, and the
/// frame is scaled so that `round(frames / temporal) · temporal · height · width` lies in `[min_pixels, max_pixels]`
/// (the scale itself uses the exact frame count, as transformers does). `None` where transformers raises (fewer
/// frames than a temporal patch are read as one patch here; an aspect ratio over 200; a zero side).
pub fn smart_resize_video(
    frames: usize,
    height: usize,
    width: usize,
    temporal: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Option<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 || temporal == 0 {
        return None;
    }
    let frames = frames.max(temporal) as f64;
    let (mut h, mut w, f) = (height as f64, width as f64, factor as f64);
    if height < factor || width < factor {
        let scale = (f / h).max(f / w);
        (h, w) = ((h * scale).floor(), (w * scale).floor());
    }
    if h.max(w) / h.min(w) > 200.0 {
        return None;
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    let t_bar = (frames / temporal as f64).round_ties_even() * temporal as f64;
    if t_bar * h_bar * w_bar > max_pixels as f64 {
        let beta = ((frames * h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if t_bar * h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (frames * h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Some((h_bar as usize, w_bar as usize))
}

/// transformers' `smart_resize` (Qwen2-VL and later): `(height, width)` rounded to multiples of `factor`, scaled
/// (aspect ratio kept as nearly as rounding allows) into `[min_pixels, max_pixels]`; `None` when the aspect ratio
/// exceeds 200 (transformers raises) or a side is 0. Python's `round` rounds halves to even, as here.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Option<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 || height.max(width) as f64 / height.min(width) as f64 > 200.0 {
        return None;
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let mut h_bar = ((h / f).round_ties_even() * f) as u64;
    let mut w_bar = ((w / f).round_ties_even() * f) as u64;
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = (factor as u64).max(((h / beta / f).floor() * f) as u64);
        w_bar = (factor as u64).max(((w / beta / f).floor() * f) as u64);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = ((h * beta / f).ceil() * f) as u64;
        w_bar = ((w * beta / f).ceil() * f) as u64;
    }
    Some((h_bar as usize, w_bar as usize))
}

/// The steps of one image processor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Resize step, if any.
    pub resize: Option<Resize>,
    /// Resampling filter.
    pub filter: Filter,
    /// Center crop `(height, width)`, if any.
    pub center_crop: Option<(u32, u32)>,
    /// Rescale factor (1/255), if any.
    pub rescale: Option<f64>,
    /// `(mean, std)` per channel, if normalising.
    pub normalize: Option<([f64; 3], [f64; 3])>,
    /// LLaVA's `expand2square`: pad to a square of the mean colour before everything else.
    pub pad_to_square: bool,
    /// Which library's resampler and normalisation to reproduce: Pillow's (transformers' PIL-backed image
    /// processors, the default here) or torchvision's (its torchvision-backed processors: every video processor,
    /// and the image processors whenever torchvision is installed, unless `backend="pil"` is asked for).
    pub kernel: Kernel,
}

/// A normalised image, channels first: `data[c·H·W + y·W + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `3 x height x width` values.
    pub data: Vec<f32>,
}

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl ImageProcessor {
    /// CLIP ViT-L/14-336 as LLaVA-1.5 uses it: shortest edge 336, bicubic, center crop 336, CLIP mean/std.
    pub fn clip(size: u32) -> Self {
        ImageProcessor {
            resize: Some(Resize::ShortestEdge(size)),
            filter: Filter::Bicubic,
            center_crop: Some((size, size)),
            rescale: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
            pad_to_square: false,
            kernel: Kernel::Pillow,
        }
    }

    /// SigLIP: fixed `size x size`, bicubic, no crop, mean = std = 0.5.
    pub fn siglip(size: u32) -> Self {
        ImageProcessor {
            resize: Some(Resize::Exact { height: size, width: size }),
            filter: Filter::Bicubic,
            center_crop: None,
            rescale: Some(1.0 / 255.0),
            normalize: Some((SIGLIP_MEAN, SIGLIP_STD)),
            pad_to_square: false,
            kernel: Kernel::Pillow,
        }
    }

    /// Reads the keys of a Hugging Face `preprocessor_config.json` (`do_resize`, `size`, `resample`,
    /// `do_center_crop`, `crop_size`, `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std`;
    /// `image_aspect_ratio: "pad"` from LLaVA configs turns on pad-to-square). Defaults are CLIP's, as in
    /// transformers, except that SigLIP and LLaVA-OneVision processors (`image_processor_type`) do not crop.
    pub fn from_config(config: &Value) -> Result<Self, PreprocessError> {
        let bad = |key: &str, reason: &str| PreprocessError::Config { key: key.into(), reason: reason.into() };
        let flag = |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
        let dims = |key: &str| -> Result<Option<Value>, PreprocessError> {
            Ok(match config.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => {
                    let s = n.as_u64().ok_or_else(|| bad(key, "must be a positive integer"))?;
                    Some(serde_json::json!({"height": s, "width": s}))
                }
                Some(v @ Value::Object(_)) => Some(v.clone()),
                Some(_) => return Err(bad(key, "must be a number or an object")),
            })
        };
        let get_u32 = |v: &Value, key: &str, field: &str| -> Result<Option<u32>, PreprocessError> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => n.as_u64().map(|n| Some(n as u32)).ok_or_else(|| bad(key, "has a non-integer dimension")),
            }
        };
        let kind =
            config.get("image_processor_type").or_else(|| config.get("video_processor_type")).and_then(Value::as_str);
        // Qwen2-VL, Qwen2.5-VL and Qwen3-VL processors: native resolution, `size` holds pixel counts.
        let native =
            kind.is_some_and(|t| t.starts_with("Qwen2VL") || t.starts_with("Qwen2_5_VL") || t.starts_with("Qwen3VL"));
        let resize = if native && flag("do_resize", true) {
            let count = |top: &str, inner: &str, default: u64| -> Result<u64, PreprocessError> {
                // transformers: top-level min_pixels / max_pixels override `size`.
                match config.get(top).or_else(|| config.get("size").and_then(|s| s.get(inner))) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| bad(top, "must be a positive integer")),
                }
            };
            let number = |key: &str, default: u64| -> Result<u64, PreprocessError> {
                match config.get(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| bad(key, "must be a positive integer")),
                }
            };
            let factor = number("patch_size", 14)? * number("merge_size", 2)?;
            if kind == Some("Qwen3VLVideoProcessor") {
                Some(Resize::NativeVideo {
                    factor: factor as u32,
                    temporal: number("temporal_patch_size", 2)? as u32,
                    frames: 0,
                    min_pixels: count("min_pixels", "shortest_edge", 128 * 32 * 32)?,
                    max_pixels: count("max_pixels", "longest_edge", 32 * 32 * 768)?,
                })
            } else {
                Some(Resize::Native {
                    factor: factor as u32,
                    min_pixels: count("min_pixels", "shortest_edge", 56 * 56)?,
                    max_pixels: count("max_pixels", "longest_edge", 28 * 28 * 1280)?,
                })
            }
        } else if flag("do_resize", true) {
            let size = dims("size")?.unwrap_or(serde_json::json!({"shortest_edge": 224}));
            match (
                get_u32(&size, "size", "shortest_edge")?,
                get_u32(&size, "size", "height")?,
                get_u32(&size, "size", "width")?,
            ) {
                (Some(s), _, _) => Some(Resize::ShortestEdge(s)),
                (None, Some(height), Some(width)) => Some(Resize::Exact { height, width }),
                _ => return Err(bad("size", "needs shortest_edge or height and width")),
            }
        } else {
            None
        };
        let filter = match config.get("resample") {
            None | Some(Value::Null) => Filter::Bicubic,
            Some(v) => v
                .as_i64()
                .and_then(Filter::from_pil)
                .ok_or_else(|| bad("resample", "supports 2 (bilinear) and 3 (bicubic)"))?,
        };
        // CLIP's processors crop by default; SigLIP's and LLaVA-OneVision's resize to the exact size and never crop.
        let crops_by_default =
            !native && !kind.is_some_and(|t| t.starts_with("Siglip") || t.starts_with("LlavaOnevision"));
        let center_crop = if flag("do_center_crop", crops_by_default) {
            let crop = dims("crop_size")?.unwrap_or(serde_json::json!({"height": 224, "width": 224}));
            match (get_u32(&crop, "crop_size", "height")?, get_u32(&crop, "crop_size", "width")?) {
                (Some(h), Some(w)) => Some((h, w)),
                _ => return Err(bad("crop_size", "needs height and width")),
            }
        } else {
            None
        };
        let rescale = if flag("do_rescale", true) {
            Some(config.get("rescale_factor").and_then(Value::as_f64).unwrap_or(1.0 / 255.0))
        } else {
            None
        };
        let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3], PreprocessError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0); 3]),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let v: Option<Vec<f64>> = a.iter().map(Value::as_f64).collect();
                    v.map(|v| [v[0], v[1], v[2]]).ok_or_else(|| bad(key, "must hold numbers"))
                }
                Some(_) => Err(bad(key, "must be a number or three numbers")),
            }
        };
        let normalize = if flag("do_normalize", true) {
            Some((triple("image_mean", CLIP_MEAN)?, triple("image_std", CLIP_STD)?))
        } else {
            None
        };
        let pad_to_square = config.get("image_aspect_ratio").and_then(Value::as_str) == Some("pad");
        // transformers 5 has video processors on its torchvision backend only; image processors are read as the
        // PIL-backed ones \[project\] (transformers picks torchvision for them when it is installed:
        // `ImageProcessor::kernel` selects that).
        let kernel = if config.get("video_processor_type").is_some() { Kernel::Torchvision } else { Kernel::Pillow };
        Ok(ImageProcessor { resize, filter, center_crop, rescale, normalize, pad_to_square, kernel })
    }

    /// Runs the pipeline on an RGB8 image (`height x width x 3`).
    pub fn preprocess(&self, rgb: &[u8], width: usize, height: usize) -> Pixels {
        let mut img = Rgb8 { width, height, data: rgb.to_vec() };
        if self.pad_to_square {
            let mean = self.normalize.map_or([0.0; 3], |(m, _)| m);
            img = expand_to_square(&img, mean.map(|m| (m * 255.0) as u8));
        }
        if let Some(resize) = self.resize {
            let (h, w) = self.resized(img.height, img.width, resize);
            let data = resize_rgb8_with(&img.data, img.width, img.height, w, h, self.filter, self.kernel);
            img = Rgb8 { width: w, height: h, data };
        }
        if let Some((h, w)) = self.center_crop {
            img = center_crop(&img, h as usize, w as usize);
        }
        self.finish(&img)
    }

    /// This processor for the frames of a video of `frames` frames: a [`Resize::NativeVideo`] step learns the count
    /// (its bounds are on the whole video); every other step is unchanged.
    pub fn for_video(&self, frames: usize) -> ImageProcessor {
        let mut p = self.clone();
        if let Some(Resize::NativeVideo { frames: f, .. }) = p.resize.as_mut() {
            *f = frames.min(u32::MAX as usize) as u32;
        }
        p
    }

    /// `(height, width)` after the resize step for an input of `height x width` (the input's own size without
    /// one; a [`Resize::Native`] whose aspect-ratio rule fails keeps the size, which the tower then refuses).
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            Some(r) => self.resized(height, width, r),
            None => (height, width),
        }
    }

    fn resized(&self, height: usize, width: usize, resize: Resize) -> (usize, usize) {
        match resize {
            Resize::ShortestEdge(s) => shortest_edge_size(height, width, s as usize),
            Resize::Exact { height, width } => (height as usize, width as usize),
            Resize::Native { factor, min_pixels, max_pixels } => {
                smart_resize(height, width, factor as usize, min_pixels, max_pixels).unwrap_or((height, width))
            }
            Resize::NativeVideo { factor, temporal, frames, min_pixels, max_pixels } => {
                let (f, t) = (factor as usize, temporal as usize);
                smart_resize_video(frames as usize, height, width, t, f, min_pixels, max_pixels)
                    .unwrap_or((height, width))
            }
        }
    }

    /// Rescales and normalises an RGB8 image into channels-first floats (the last two steps).
    pub(crate) fn finish(&self, img: &Rgb8) -> Pixels {
        let (h, w) = (img.height, img.width);
        let mut data = vec![0f32; 3 * h * w];
        // torchvision-backed processors fuse both steps (`_fuse_mean_std_and_rescale_factor`): mean and std become
        // f32 tensors multiplied by 1 / rescale_factor, then `(x − mean') / std'` in f32 on the raw levels.
        if let (Kernel::Torchvision, Some(scale), Some((m, s))) = (self.kernel, self.rescale, self.normalize) {
            let factor = (1.0 / scale) as f32;
            for c in 0..3 {
                let (mean, std) = (m[c] as f32 * factor, s[c] as f32 * factor);
                for i in 0..h * w {
                    data[c * h * w + i] = (img.data[i * 3 + c] as f32 - mean) / std;
                }
            }
            return Pixels { height: h, width: w, data };
        }
        for c in 0..3 {
            let (mean, std) = match self.normalize {
                Some((m, s)) => (Some(m[c] as f32), s[c] as f32),
                None => (None, 1.0),
            };
            for i in 0..h * w {
                let v = img.data[i * 3 + c];
                let mut x = match self.rescale {
                    Some(scale) => (v as f64 * scale) as f32,
                    None => v as f32,
                };
                if let Some(m) = mean {
                    x = (x - m) / std;
                }
                data[c * h * w + i] = x;
            }
        }
        Pixels { height: h, width: w, data }
    }
}

/// `(height, width)` after a shortest-edge resize to `size` (transformers' `get_resize_output_image_size`).
pub fn shortest_edge_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// Center crop to `h x w`, zero-padding (centred, rounding the top/left pad up) when the image is smaller.
pub(crate) fn center_crop(img: &Rgb8, h: usize, w: usize) -> Rgb8 {
    let (pad_h, pad_w) = (h.saturating_sub(img.height), w.saturating_sub(img.width));
    let (top_pad, left_pad) = (pad_h.div_ceil(2), pad_w.div_ceil(2));
    let (full_h, full_w) = (img.height + pad_h, img.width + pad_w);
    let top = (full_h - h) / 2;
    let left = (full_w - w) / 2;
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = (y + top, x + left);
            if sy >= top_pad && sy < top_pad + img.height && sx >= left_pad && sx < left_pad + img.width {
                let src = ((sy - top_pad) * img.width + (sx - left_pad)) * 3;
                out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&img.data[src..src + 3]);
            }
        }
    }
    Rgb8 { width: w, height: h, data: out }
}

/// LLaVA's `expand2square`: the image pasted into a square of `background`, centred on the short axis
/// (offset `(long − short) // 2`).
pub(crate) fn expand_to_square(img: &Rgb8, background: [u8; 3]) -> Rgb8 {
    let side = img.width.max(img.height);
    if img.width == img.height {
        return img.clone();
    }
    let mut data: Vec<u8> = std::iter::repeat_n(background, side * side).flatten().collect();
    let (ox, oy) = if img.width > img.height { (0, (side - img.height) / 2) } else { ((side - img.width) / 2, 0) };
    for y in 0..img.height {
        let dst = ((y + oy) * side + ox) * 3;
        data[dst..dst + img.width * 3].copy_from_slice(&img.data[y * img.width * 3..(y + 1) * img.width * 3]);
    }
    Rgb8 { width: side, height: side, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_video_resize_matches_transformers() {
        // transformers 5.24 `video_processing_qwen3_vl.smart_resize(frames, h, w, 2, 32, min, max)`.
        let cases = [
            ((8, 360, 640, 4096, 1048576), (256, 480)),
            ((64, 360, 640, 4096, 25165824), (352, 640)),
            ((9, 1080, 1920, 131072, 786432), (192, 384)),
            ((4, 20, 50, 4096, 1048576), (32, 64)),
            ((2, 30, 30, 131072, 25165824), (256, 256)),
        ];
        for ((t, h, w, lo, hi), want) in cases {
            assert_eq!(smart_resize_video(t, h, w, 2, 32, lo, hi), Some(want), "{t} frames of {h}x{w}");
        }
        let config = serde_json::json!({"video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 16,
            "merge_size": 2, "temporal_patch_size": 2, "size": {"shortest_edge": 4096, "longest_edge": 25165824}});
        let p = ImageProcessor::from_config(&config).unwrap();
        assert_eq!(p.for_video(64).output_size(360, 640), (352, 640));
        assert_eq!(p.for_video(8).output_size(360, 640), (352, 640), "under the bound: rounded only");
    }

    #[test]
    fn sizes_crops_and_padding_follow_transformers() {
        assert_eq!(shortest_edge_size(480, 640, 336), (336, 448));
        assert_eq!(shortest_edge_size(500, 333, 224), (336, 224));
        let img = Rgb8 { width: 3, height: 2, data: (1..=18).collect() };
        let sq = expand_to_square(&img, [9, 9, 9]);
        assert_eq!((sq.width, sq.height), (3, 3));
        assert_eq!(&sq.data[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(&sq.data[18..], &[9; 9]);
        let crop = center_crop(&img, 4, 1);
        // Height padded by 2 (1 on top), width cropped to the middle column.
        assert_eq!(crop.data, vec![0, 0, 0, 4, 5, 6, 13, 14, 15, 0, 0, 0]);
    }

    #[test]
    fn config_keys_map_to_steps() {
        let cfg = serde_json::json!({"size": {"height": 384, "width": 384}, "do_center_crop": false, "resample": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
        let p = ImageProcessor::from_config(&cfg).unwrap();
        assert_eq!(p.resize, Some(Resize::Exact { height: 384, width: 384 }));
        assert_eq!((p.filter, p.center_crop), (Filter::Bilinear, None));
        let clip = ImageProcessor::from_config(&serde_json::json!({"size": {"shortest_edge": 336}, "crop_size": 336}))
            .unwrap();
        assert_eq!(clip, ImageProcessor::clip(336));
        let ov = serde_json::json!({"image_processor_type": "LlavaOnevisionImageProcessor",
            "size": {"height": 384, "width": 384}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
        assert_eq!(ImageProcessor::from_config(&ov).unwrap(), ImageProcessor::siglip(384), "no crop by default");
        assert!(ImageProcessor::from_config(&serde_json::json!({"resample": 1})).is_err());
        assert!(ImageProcessor::from_config(&serde_json::json!({"size": {"longest": 3}})).is_err());
    }
}
