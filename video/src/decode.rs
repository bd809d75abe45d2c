//! Decoding frames at chosen timestamps with FFmpeg, seeking instead of decoding the whole file.
//!
//! For each wanted timestamp (ascending) the decoder seeks to the key frame at or before it when that key frame
//! lies past what was last decoded (so sparse key frames do not make it decode the same stretch twice), then
//! decodes forward to the first frame whose presentation time reaches the target (within half a frame) and returns
//! it, or the frame before it when that one is nearer (streams with dropped frames jump past targets).
//! Memory holds only the frames asked for.
//! Frames are converted to RGB8 at the requested size with a bilinear scaler, copied row by row because FFmpeg's
//! line stride can exceed `width · 3`, and turned upright when the stream carries a rotation (display matrix, as
//! phones write). A stream that ends early (truncated or corrupt) yields what could be decoded and says where it
//! stopped; corrupt packets are skipped, since decoders resynchronise at the next key frame.
//! [`decode_in_background`] runs the same loop on its own thread, so an encoder can start on the first frames.

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
    /// The frame size exceeds the configured pixel limit.
    #[error("{path}: {width}x{height} exceeds the limit of {limit} pixels per frame")]
    Resolution {
        /// The file.
        path: PathBuf,
        /// Coded width.
        width: u32,
        /// Coded height.
        height: u32,
        /// The limit.
        limit: u64,
    },
    /// A requested output size is zero.
    #[error("output size {width}x{height} must be positive")]
    OutputSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
}

/// How to decode, and limits that protect against absurd inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width x height` of the coded frames (default 8192 x 8192).
    pub max_pixels: u64,
    /// Seek to far targets (default). `false` decodes every frame from the start: slower, but immune to broken
    /// seek indexes, and the baseline the sampling benchmark compares against.
    pub seek: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: 8192 * 8192, seek: true }
    }
}

/// Decoded frames and, when the stream ended before the last requested time, where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// One frame per requested time, ascending (targets past the end repeat the last decodable frame).
    pub frames: Vec<Frame>,
    /// Presentation time of the last decodable frame when some target lay beyond it.
    pub stopped_at: Option<f64>,
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
    /// Clockwise rotation in degrees (0, 90, 180, 270) applied to make frames upright.
    pub rotation: u32,
}

/// One decoded RGB8 frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Presentation time in seconds.
    pub timestamp: f64,
    /// The time that was asked for.
    pub requested: f64,
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

fn rotation_of(stream: &ffmpeg::format::stream::Stream<'_>) -> u32 {
    for data in stream.side_data() {
        if data.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix && data.data().len() >= 36 {
            let matrix: Vec<i32> =
                data.data().chunks_exact(4).take(9).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
            // SAFETY: `matrix` holds the 9 entries av_display_rotation_get reads.
            let angle = unsafe { ffmpeg::ffi::av_display_rotation_get(matrix.as_ptr()) };
            if angle.is_finite() {
                // FFmpeg reports the counter-clockwise angle; frames must turn clockwise by its negation.
                return ((-angle).round() as i64).rem_euclid(360) as u32 / 90 * 90;
            }
        }
    }
    0
}

fn open(path: &Path, options: DecodeOptions) -> Result<Source, VideoError> {
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
    let (width, height) = (decoder.width(), decoder.height());
    if u64::from(width) * u64::from(height) > options.max_pixels {
        return Err(VideoError::Resolution { path: path.to_path_buf(), width, height, limit: options.max_pixels });
    }
    let info = VideoInfo { duration, fps, frames, width, height, rotation: rotation_of(&stream) };
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

    /// Time of the last key frame at or before `seconds` according to the container's index, if it has one.
    fn key_frame_before(&self, seconds: f64) -> Option<f64> {
        let stream = self.input.stream(self.stream)?;
        let ts = (seconds / self.time_base).floor() as i64;
        // SAFETY: the stream pointer lives as long as `self.input`; FFmpeg only reads the index here and returns a
        // pointer into it (or null), which is read before anything can change the index.
        unsafe {
            let entry = ffmpeg::ffi::avformat_index_get_entry_from_timestamp(
                stream.as_ptr() as *mut ffmpeg::ffi::AVStream,
                ts,
                ffmpeg::ffi::AVSEEK_FLAG_BACKWARD,
            );
            (!entry.is_null()).then(|| (*entry).timestamp as f64 * self.time_base)
        }
    }

    /// Whether seeking to `target` beats decoding forward from `position`: only when the key frame a seek lands on
    /// lies ahead (sparse key frames, as in `vtest.avi` with one every 20 s, make most seeks land behind).
    fn worth_seeking(&self, target: f64, position: f64) -> bool {
        target > position + 1.0 && self.key_frame_before(target).is_none_or(|key| key > position)
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
    Ok(open(path, DecodeOptions::default())?.info)
}

/// Turns an RGB8 image clockwise by `degrees` (0, 90, 180 or 270).
fn rotate(rgb: &[u8], width: usize, height: usize, degrees: u32) -> Vec<u8> {
    if degrees == 0 {
        return rgb.to_vec();
    }
    let (out_w, out_h) = if degrees == 180 { (width, height) } else { (height, width) };
    let mut out = vec![0u8; rgb.len()];
    for y in 0..height {
        for x in 0..width {
            let (nx, ny) = match degrees {
                90 => (height - 1 - y, x),
                180 => (width - 1 - x, height - 1 - y),
                _ => (y, width - 1 - x),
            };
            let (src, dst) = ((y * width + x) * 3, (ny * out_w + nx) * 3);
            out[dst..dst + 3].copy_from_slice(&rgb[src..src + 3]);
        }
    }
    debug_assert_eq!(out.len(), out_w * out_h * 3);
    out
}

/// Decodes the frames at `timestamps` (seconds, any order; delivered ascending) scaled to `width x height`
/// (upright), calling `deliver` for each as soon as it is ready. Returns where the stream stopped when targets lay
/// beyond its end.
pub fn decode_each(
    path: &Path,
    timestamps: &[f64],
    width: u32,
    height: u32,
    options: DecodeOptions,
    mut deliver: impl FnMut(Frame) -> bool,
) -> Result<Option<f64>, VideoError> {
    if width == 0 || height == 0 {
        return Err(VideoError::OutputSize { width, height });
    }
    let mut source = open(path, options)?;
    let rotation = source.info.rotation;
    // Scale to the size that becomes width x height after turning upright.
    let (scaled_w, scaled_h) = if rotation % 180 == 90 { (height, width) } else { (width, height) };
    let mut scaler = Scaler::get(
        source.decoder.format(),
        source.info.width,
        source.info.height,
        Pixel::RGB24,
        scaled_w,
        scaled_h,
        Flags::BILINEAR,
    )
    .map_err(|e| VideoError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut targets = timestamps.to_vec();
    targets.sort_by(f64::total_cmp);
    let half_frame = 0.5 / source.info.fps;
    let mut decoded = ffmpeg::frame::Video::empty();
    let mut scratch = ffmpeg::frame::Video::empty();
    let mut previous = ffmpeg::frame::Video::empty();
    let mut previous_position: Option<f64> = None;
    let mut have_frame = false;
    let mut ended = false;
    let mut position = f64::NEG_INFINITY;
    let mut stopped_at = None;
    for &target in &targets {
        if options.seek && !ended && source.worth_seeking(target, position) {
            source.seek(target)?;
            have_frame = false;
            previous_position = None;
        }
        while !ended && (!have_frame || position < target - half_frame) {
            // avcodec_receive_frame empties its frame before reporting the end, so decode into a scratch frame and
            // keep the last good one.
            if source.next(&mut scratch)? {
                // Rotate: the frame before the newest stays available in case it is nearer the target.
                std::mem::swap(&mut previous, &mut decoded);
                std::mem::swap(&mut decoded, &mut scratch);
                previous_position = if have_frame { Some(position) } else { None };
                have_frame = true;
                position = source.seconds(&decoded);
            } else {
                ended = true;
            }
        }
        if !have_frame {
            // A seek past the last key frame can land after the end: go back to the start of the stream's tail.
            source.seek(0.0)?;
            ended = false;
            previous_position = None;
            while source.next(&mut scratch)? {
                std::mem::swap(&mut decoded, &mut scratch);
                have_frame = true;
                position = source.seconds(&decoded);
                if position >= target - half_frame {
                    break;
                }
            }
            if !have_frame {
                return Err(VideoError::Empty { path: path.to_path_buf() });
            }
        }
        if position < target - half_frame {
            stopped_at = Some(position);
        }
        // Streams with irregular timing (dropped frames) can jump past the target: take the nearer neighbour.
        let (chosen, chosen_position) = match previous_position {
            Some(p) if p < target && (target - p) < (position - target) => (&previous, p),
            _ => (&decoded, position),
        };
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler.run(chosen, &mut rgb).map_err(|e| source.error(chosen_position, e))?;
        let stride = rgb.stride(0);
        let row = scaled_w as usize * 3;
        let data = rgb.data(0);
        let mut bytes = Vec::with_capacity(row * scaled_h as usize);
        for y in 0..scaled_h as usize {
            bytes.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let rgb = rotate(&bytes, scaled_w as usize, scaled_h as usize, rotation);
        if !deliver(Frame { timestamp: chosen_position, requested: target, width, height, rgb }) {
            break;
        }
    }
    Ok(stopped_at)
}

/// Decodes the frames at `timestamps` (see [`decode_each`]) into memory.
pub fn decode_at(path: &Path, timestamps: &[f64], width: u32, height: u32) -> Result<Decoded, VideoError> {
    let mut frames = Vec::with_capacity(timestamps.len());
    let stopped_at = decode_each(path, timestamps, width, height, DecodeOptions::default(), |f| {
        frames.push(f);
        true
    })?;
    Ok(Decoded { frames, stopped_at })
}

/// Runs [`decode_each`] on a background thread; frames arrive on the channel as they are decoded, followed by
/// the end-of-stream report (or the error). Dropping the receiver stops the decoder at the next frame.
pub fn decode_in_background(
    path: PathBuf,
    timestamps: Vec<f64>,
    width: u32,
    height: u32,
    options: DecodeOptions,
) -> std::sync::mpsc::Receiver<Result<DecodeEvent, VideoError>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let frames = tx.clone();
        let result =
            decode_each(&path, &timestamps, width, height, options, |f| frames.send(Ok(DecodeEvent::Frame(f))).is_ok());
        let _ = tx.send(result.map(DecodeEvent::Done));
    });
    rx
}

/// What [`decode_in_background`] sends.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeEvent {
    /// The next frame.
    Frame(Frame),
    /// All frames were sent; `Some(t)` when the stream ended at `t` before the last target.
    Done(Option<f64>),
}

/// `count` frames at lmms-eval's uniform positions (`linspace(0, N − 1, count)`, truncated), scaled.
pub fn sample_uniform(path: &Path, count: usize, width: u32, height: u32) -> Result<Vec<Frame>, VideoError> {
    let info = probe(path)?;
    let indices = crate::samplers::uniform_indices(info.frames.max(1), count, crate::samplers::Uniform::Inclusive)
        .map_err(|e| VideoError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
    let times: Vec<f64> = indices.iter().map(|&i| i as f64 / info.fps).collect();
    Ok(decode_at(path, &times, width, height)?.frames)
}

/// `count` uniform frames (lmms-eval) at the video's own upright resolution, for image processors that resize and
/// crop themselves.
pub fn sample_uniform_native(path: &Path, count: usize) -> Result<Vec<Frame>, VideoError> {
    let info = probe(path)?;
    let indices = crate::samplers::uniform_indices(info.frames.max(1), count, crate::samplers::Uniform::Inclusive)
        .map_err(|e| VideoError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
    decode_indices_native(path, &info, &indices)
}

/// The frames at `indices` (of a video described by `info`) at the video's own upright resolution.
pub fn decode_indices_native(path: &Path, info: &VideoInfo, indices: &[usize]) -> Result<Vec<Frame>, VideoError> {
    let ((w, h), times) = native_targets(info, indices);
    Ok(decode_at(path, &times, w, h)?.frames)
}

/// [`decode_indices_native`] on a background thread ([`decode_in_background`]): the frames arrive one by one, at
/// most four ahead of the reader, so a long video is never in memory at once.
pub fn stream_indices_native(
    path: &Path,
    info: &VideoInfo,
    indices: &[usize],
) -> std::sync::mpsc::Receiver<Result<DecodeEvent, VideoError>> {
    let ((w, h), times) = native_targets(info, indices);
    decode_in_background(path.to_path_buf(), times, w, h, DecodeOptions::default())
}

/// The upright size of `info`'s frames and the presentation times of frame `indices`.
fn native_targets(info: &VideoInfo, indices: &[usize]) -> ((u32, u32), Vec<f64>) {
    let size = if info.rotation % 180 == 90 { (info.height, info.width) } else { (info.width, info.height) };
    (size, indices.iter().map(|&i| i as f64 / info.fps).collect())
}
