//! # tokensieve-video
//!
//! Everything between a video file (or images, or a multi-camera driving frame) and the pixel tensors a vision
//! encoder takes: FFmpeg decoding with seeks, frame and clip samplers, and model-exact preprocessing.
//!
//! Today it provides seek-based decoding at chosen timestamps, the uniform sampler and the FFmpeg probe that
//! `tokensieve doctor` reports; the other samplers and preprocessing arrive with the video issue.

pub mod decode;
pub mod samplers;

pub use decode::{decode_at, probe, sample_uniform, Frame, VideoError, VideoInfo};

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
