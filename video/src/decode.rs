//! Decoding frames at chosen timestamps with FFmpeg, seeking instead of decoding the whole file.
//!
//! For each wanted timestamp (ascending) the decoder seeks to the key frame at or before it when the target lies
//! more than one second past what was last decoded, then decodes forward and returns the first frame whose
//! presentation time reaches the target (within half a frame). Memory holds only the frames asked for.
//! Frames are converted to RGB8 at the requested size with a bilinear scaler, copied row by row because FFmpeg's
//! line stride can exceed `width · 3`.

use ffmpeg::format::Pixel;
use ffmpeg::media::Type;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next as ffmpeg;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a video could not be read.
#[derive(Debug, Error)]
pub enum VideoError {
    /// FFmpeg could not open or parse the file.
    #[error("{path}: cannot open as a video: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// FFmpeg's reason.
        reason: String,
    },
    /// The container has no video stream (an audio file, say).
    #[error("{path}: no video stream")]
    NoVideoStream {
        /// The file.
        path: PathBuf,
    },
    /// Decoding failed.
    #[error("{path}: decoding failed at {seconds:.3} s: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where.
        seconds: f64,
        /// FFmpeg's reason.
        reason: String,
    },
    /// Nothing could be decoded.
    #[error("{path}: no decodable frame")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What the container says about its video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    /// Duration in seconds.
    pub duration: f64,
    /// Average frame rate.
    pub fps: f64,
    /// Frame count (from the container, or duration x fps).
    pub frames: usize,
    /// Coded width.
    pub width: u32,
    /// Coded height.
    pub height: u32,
}

/// One decoded RGB8 frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Presentation time in seconds.
    pub timestamp: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height x width x 3` bytes.
    pub rgb: Vec<u8>,
}

struct Source {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream: usize,
    time_base: f64,
    decoder: ffmpeg::decoder::Video,
    info: VideoInfo,
    eof_sent: bool,
}

fn open(path: &Path) -> Result<Source, VideoError> {
    let fail = |reason: String| VideoError::Open { path: path.to_path_buf(), reason };
    ffmpeg::init().map_err(|e| fail(e.to_string()))?;
    // Every failure reaches the caller as a typed error; FFmpeg's own console messages would only repeat it.
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let input = ffmpeg::format::input(&path).map_err(|e| fail(e.to_string()))?;
    let stream = input.streams().best(Type::Video).ok_or(VideoError::NoVideoStream { path: path.to_path_buf() })?;
    let index = stream.index();
    let tb = stream.time_base();
    let time_base = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
    let rate = stream.avg_frame_rate();
    let fps = if rate.denominator() != 0 && rate.numerator() > 0 { f64::from(rate) } else { 25.0 };
    let duration = if stream.duration() > 0 {
        stream.duration() as f64 * time_base
    } else {
        input.duration().max(0) as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)
    };
    let frames = if stream.frames() > 0 { stream.frames() as usize } else { (duration * fps).round() as usize };
    let context =
        ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(|e| fail(e.to_string()))?;
    let decoder = context.decoder().video().map_err(|e| fail(format!("unsupported codec: {e}")))?;
    let info = VideoInfo { duration, fps, frames, width: decoder.width(), height: decoder.height() };
    Ok(Source { path: path.to_path_buf(), input, stream: index, time_base, decoder, info, eof_sent: false })
}

impl Source {
    fn seek(&mut self, seconds: f64) -> Result<(), VideoError> {
        let ts = (seconds * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        self.input.seek(ts, ..ts).map_err(|e| self.error(seconds, e))?;
        self.decoder.flush();
        self.eof_sent = false;
        Ok(())
    }

    fn error(&self, seconds: f64, e: ffmpeg::Error) -> VideoError {
        VideoError::Decode { path: self.path.clone(), seconds, reason: e.to_string() }
    }

    /// The next decoded frame, or `None` at the end of the stream.
    fn next(&mut self, frame: &mut ffmpeg::frame::Video) -> Result<bool, VideoError> {
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) => return Ok(true),
                Err(ffmpeg::Error::Eof) => return Ok(false),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {}
                Err(e) => return Err(self.error(-1.0, e)),
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream => {
                    // A corrupt packet is skipped: decoders resynchronise at the next key frame.
                    let _ = self.decoder.send_packet(&packet);
                }
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) if !self.eof_sent => {
                    self.eof_sent = true;
                    self.decoder.send_eof().map_err(|e| self.error(-1.0, e))?;
                }
                Err(ffmpeg::Error::Eof) => return Ok(false),
                Err(e) => return Err(self.error(-1.0, e)),
            }
        }
    }

    fn seconds(&self, frame: &ffmpeg::frame::Video) -> f64 {
        frame.timestamp().or(frame.pts()).unwrap_or(0) as f64 * self.time_base
    }
}

/// Reads the container's description of the video stream.
pub fn probe(path: &Path) -> Result<VideoInfo, VideoError> {
    Ok(open(path)?.info)
}

/// Decodes the frames at `timestamps` (seconds, any order; returned in ascending order) scaled to `width x height`.
/// Targets past the end return the last decodable frame.
pub fn decode_at(path: &Path, timestamps: &[f64], width: u32, height: u32) -> Result<Vec<Frame>, VideoError> {
    let mut source = open(path)?;
    let mut scaler = Scaler::get(
        source.decoder.format(),
        source.info.width,
        source.info.height,
        Pixel::RGB24,
        width,
        height,
        Flags::BILINEAR,
    )
    .map_err(|e| VideoError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut targets = timestamps.to_vec();
    targets.sort_by(f64::total_cmp);
    let half_frame = 0.5 / source.info.fps;
    let mut decoded = ffmpeg::frame::Video::empty();
    let mut have_frame = false;
    let mut position = f64::NEG_INFINITY;
    let mut out = Vec::with_capacity(targets.len());
    for &target in &targets {
        if target > position + 1.0 {
            source.seek(target)?;
        }
        while !have_frame || position < target - half_frame {
            if !source.next(&mut decoded)? {
                break;
            }
            have_frame = true;
            position = source.seconds(&decoded);
        }
        if !have_frame {
            return Err(VideoError::Empty { path: path.to_path_buf() });
        }
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler.run(&decoded, &mut rgb).map_err(|e| source.error(position, e))?;
        let stride = rgb.stride(0);
        let row = width as usize * 3;
        let data = rgb.data(0);
        let mut bytes = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            bytes.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        out.push(Frame { timestamp: position, width, height, rgb: bytes });
    }
    Ok(out)
}

/// `count` frames at lmms-eval's uniform positions (`linspace(0, N − 1, count)`, truncated), scaled.
pub fn sample_uniform(path: &Path, count: usize, width: u32, height: u32) -> Result<Vec<Frame>, VideoError> {
    let info = probe(path)?;
    let n = info.frames.max(1);
    let indices: Vec<usize> = match count {
        0 => Vec::new(),
        1 => vec![0],
        _ => (0..count).map(|i| (i as f64 * (n - 1) as f64 / (count - 1) as f64) as usize).collect(),
    };
    let times: Vec<f64> = indices.iter().map(|&i| i as f64 / info.fps).collect();
    decode_at(path, &times, width, height)
}
