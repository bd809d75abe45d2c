//! Pixels exactly as Hugging Face image processors produce them: resize (Pillow-exact bicubic or bilinear,
//! shortest edge or fixed size), center crop, rescale, normalise, LLaVA's pad-to-square and LLaVA-NeXT /
//! OneVision any-resolution tiling. Parity with transformers' PIL backend is tested against fixtures made by
//! `video/tests/fixtures/make_preprocess_fixtures.py`.

pub mod anyres;
pub mod patches;
pub mod processor;
pub mod resample;

pub use anyres::{select_best_resolution, AnyRes};
pub use processor::{
    smart_resize, ImageProcessor, Pixels, PreprocessError, Resize, CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD,
};
pub use resample::{resize_rgb8, resize_rgb8_with, Filter, Kernel};
