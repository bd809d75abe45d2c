//! # tokensieve-video
//!
//! Everything between a video file (or images, or a multi-camera driving frame) and the pixel tensors a vision
//! encoder takes: FFmpeg decoding with seeks, frame and clip samplers, and model-exact preprocessing.
//!
//! Today it provides seek-based decoding at chosen timestamps (also on a background thread), image lists and
//! multi-camera samples as frames, the samplers (uniform in both harness conventions, fps, D-CoDe, F2C, DySeg
//! segments), Hugging Face-exact preprocessing (Pillow-exact resizing, crops, normalisation, pad-to-square,
//! any-resolution tiles) and the FFmpeg probe that `tokensieve doctor` reports.

#![warn(missing_docs)]

pub mod decode;
pub mod images;
pub mod preprocess;
pub mod samplers;

pub use decode::{
    decode_at, decode_each, decode_in_background, decode_indices_native, probe, sample_uniform, sample_uniform_native,
    stream_indices_native, DecodeEvent, DecodeOptions, Decoded, Frame, VideoError, VideoInfo,
};
pub use images::{load_image, load_image_native, load_images, load_views, order_views, ImageError, NUSCENES_CAMERAS};

/// Versions of the FFmpeg libraries this process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfmpegInfo {
    /// FFmpeg's own version string (e.g. `5.1.9-0+deb12u1`).
    pub version: String,
    /// libavcodec version as `major.minor.micro`.
    pub avcodec: String,
    /// libavformat version as `major.minor.micro`.
    pub avformat: String,
}

fn triple(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// Initialises FFmpeg and reports its versions.
pub fn ffmpeg_info() -> Result<FfmpegInfo, ffmpeg_next::Error> {
    ffmpeg_next::init()?;
    // SAFETY: av_version_info returns a pointer to a static, NUL-terminated string owned by libavutil.
    let version =
        unsafe { std::ffi::CStr::from_ptr(ffmpeg_next::ffi::av_version_info()) }.to_string_lossy().into_owned();
    Ok(FfmpegInfo {
        version,
        avcodec: triple(ffmpeg_next::codec::version()),
        avformat: triple(ffmpeg_next::format::version()),
    })
}
