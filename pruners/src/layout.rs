//! Where each visual token sits: a flat list, or views x frames x height x width.
//!
//! Token `i` of a grid layout is stored view-major: `i = ((v·F + f)·H + h)·W + w`, the order in which a video
//! encoder emits frames and a multi-camera driving sample emits its views (nuScenes order).

/// The arrangement of the `N` tokens of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// No spatial or temporal structure is known.
    Flat,
    /// `views x frames x height x width` tokens (an image is 1 x 1 x H x W).
    Grid {
        /// Camera views (1 for ordinary video).
        views: usize,
        /// Frames per view.
        frames: usize,
        /// Token rows per frame.
        height: usize,
        /// Token columns per frame.
        width: usize,
    },
}

/// Grid coordinates of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPos {
    /// View index.
    pub view: usize,
    /// Frame index within the view.
    pub frame: usize,
    /// Row within the frame.
    pub row: usize,
    /// Column within the frame.
    pub col: usize,
}

impl Layout {
    /// A single-view video (or an image when `frames = 1`).
    pub fn frames(frames: usize, height: usize, width: usize) -> Self {
        Layout::Grid { views: 1, frames, height, width }
    }

    /// A layout from its dimensions: `[F, H, W]` (one view) or `[V, F, H, W]`; any other length is a typed error.
    /// The one parser behind the CLI's `--grid F,H,W` and the Python package's `grid=(F, H, W)`.
    pub fn from_dims(dims: &[usize]) -> crate::Result<Self> {
        match *dims {
            [frames, height, width] => Ok(Layout::frames(frames, height, width)),
            [views, frames, height, width] => Ok(Layout::Grid { views, frames, height, width }),
            _ => Err(crate::PruneError::Shape {
                tensor: "grid",
                got: dims.to_vec(),
                expected: "(frames, height, width) or (views, frames, height, width)".into(),
            }),
        }
    }

    /// Tokens the layout describes, `None` for `Flat`.
    pub fn token_count(&self) -> Option<usize> {
        match *self {
            Layout::Flat => None,
            Layout::Grid { views, frames, height, width } => Some(views * frames * height * width),
        }
    }

    /// Tokens per frame, or `n` for a flat layout of `n` tokens (one frame).
    pub fn tokens_per_frame(&self, n: usize) -> usize {
        match *self {
            Layout::Flat => n,
            Layout::Grid { height, width, .. } => height * width,
        }
    }

    /// Frame-like units in the sample (views x frames; 1 for a flat layout).
    pub fn frame_count(&self) -> usize {
        match *self {
            Layout::Flat => 1,
            Layout::Grid { views, frames, .. } => views * frames,
        }
    }

    /// Frames per view (1 for a flat layout).
    pub fn frames_per_view(&self) -> usize {
        match *self {
            Layout::Flat => 1,
            Layout::Grid { frames, .. } => frames,
        }
    }

    /// The global frame unit (`view·F + frame`) of token `i`.
    pub fn frame_of(&self, i: usize, n: usize) -> usize {
        i / self.tokens_per_frame(n).max(1)
    }

    /// Grid coordinates of token `i` (flat layouts are one row).
    pub fn position(&self, i: usize) -> GridPos {
        match *self {
            Layout::Flat => GridPos { view: 0, frame: 0, row: 0, col: i },
            Layout::Grid { frames, height, width, .. } => {
                let per_frame = height * width;
                let unit = i / per_frame;
                let within = i % per_frame;
                GridPos { view: unit / frames, frame: unit % frames, row: within / width, col: within % width }
            }
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Flat => f.write_str("flat"),
            Layout::Grid { views: 1, frames, height, width } => write!(f, "{frames}x{height}x{width}"),
            Layout::Grid { views, frames, height, width } => write!(f, "{views}x{frames}x{height}x{width}"),
        }
    }
}
