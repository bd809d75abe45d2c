//! How frames reach the [`super::engine::Engine`]: a [`FrameSource`] hands them over a batch at a time, so the
//! engine preprocesses, encodes and arranges one batch before the next exists. With [`VideoStream`] a long video is
//! decoded on a background thread while the tower works and is never in memory at once: what grows with the number
//! of frames is the arranged visual tokens (and the signals the chain reads), not the frames or their pixels.
//! [`FrameSlice`] serves frames already decoded (images, a prefetched question in `eval`, `bench`'s repeats).
//!
//! Choice \[project\]: frames of a stream arrive at most four ahead of the engine (the decoder's channel), so decoding
//! overlaps encoding; the time the engine waited for frames is reported ([`FrameSource::wait_ms`]) and counted as
//! decoding, not as encoding, in the record (EVAL.md §7.3: TTFT excludes decoding).

use super::qa::QaError;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Instant;
use tokensieve_video::{DecodeEvent, Frame, VideoError, VideoInfo};

/// Frames in order, handed over in batches.
pub trait FrameSource {
    /// How many frames the source holds in all (the family's view plan needs it before the first batch).
    fn len(&self) -> usize;

    /// Whether the source holds no frame.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next at most `n` frames (`n >= 1`); empty once every frame was handed over.
    fn next_batch(&mut self, n: usize) -> Result<Cow<'_, [Frame]>, QaError>;

    /// Presentation times of the frames handed over so far.
    fn timestamps(&self) -> &[f64];

    /// Milliseconds spent waiting for frames that were not decoded yet (0 for decoded frames).
    fn wait_ms(&self) -> f64 {
        0.0
    }
}

/// Frames already in memory.
pub struct FrameSlice<'a> {
    frames: &'a [Frame],
    next: usize,
    timestamps: Vec<f64>,
}

impl<'a> FrameSlice<'a> {
    /// A source over `frames`.
    pub fn new(frames: &'a [Frame]) -> Self {
        FrameSlice { frames, next: 0, timestamps: Vec::with_capacity(frames.len()) }
    }
}

impl FrameSource for FrameSlice<'_> {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn next_batch(&mut self, n: usize) -> Result<Cow<'_, [Frame]>, QaError> {
        let end = (self.next + n.max(1)).min(self.frames.len());
        let batch = &self.frames[self.next..end];
        self.timestamps.extend(batch.iter().map(|f| f.timestamp));
        self.next = end;
        Ok(Cow::Borrowed(batch))
    }

    fn timestamps(&self) -> &[f64] {
        &self.timestamps
    }
}

/// The frames at some indices of a video, decoded on a background thread as the engine asks for them.
pub struct VideoStream {
    path: PathBuf,
    events: Receiver<Result<DecodeEvent, VideoError>>,
    expected: usize,
    received: usize,
    ended: bool,
    timestamps: Vec<f64>,
    wait_ms: f64,
}

impl VideoStream {
    /// Starts decoding the frames at `indices` (ascending) of `path`, described by `info`, at the video's own
    /// upright resolution (what [`tokensieve_video::decode_indices_native`] gives, one frame at a time).
    pub fn start(path: &Path, info: &VideoInfo, indices: &[usize]) -> Self {
        VideoStream {
            path: path.to_path_buf(),
            events: tokensieve_video::stream_indices_native(path, info, indices),
            expected: indices.len(),
            received: 0,
            ended: indices.is_empty(),
            timestamps: Vec::with_capacity(indices.len()),
            wait_ms: 0.0,
        }
    }
}

impl FrameSource for VideoStream {
    fn len(&self) -> usize {
        self.expected
    }

    fn next_batch(&mut self, n: usize) -> Result<Cow<'_, [Frame]>, QaError> {
        let mut batch = Vec::with_capacity(n.max(1).min(self.expected.saturating_sub(self.received)));
        let clock = Instant::now();
        while !self.ended && batch.len() < n.max(1) {
            match self.events.recv() {
                Ok(Ok(DecodeEvent::Frame(f))) => {
                    self.timestamps.push(f.timestamp);
                    self.received += 1;
                    batch.push(f);
                }
                Ok(Ok(DecodeEvent::Done(_))) => self.ended = true,
                Ok(Err(e)) => return Err(QaError::Video(e)),
                Err(_) => {
                    // The decoder thread ended without its report (it panicked): say which video.
                    return Err(QaError::Video(VideoError::Open {
                        path: self.path.clone(),
                        reason: "the decoding thread stopped".into(),
                    }));
                }
            }
        }
        self.wait_ms += clock.elapsed().as_secs_f64() * 1e3;
        if self.ended && self.received != self.expected {
            return Err(QaError::Video(VideoError::Open {
                path: self.path.clone(),
                reason: format!("{} of {} frames were decoded", self.received, self.expected),
            }));
        }
        Ok(Cow::Owned(batch))
    }

    fn timestamps(&self) -> &[f64] {
        &self.timestamps
    }

    fn wait_ms(&self) -> f64 {
        self.wait_ms
    }
}
