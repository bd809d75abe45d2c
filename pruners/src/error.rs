//! Typed errors of the pruners crate. Every variant names the offending tensor, parameter or value.

use thiserror::Error;

/// A side signal that some methods need besides the token features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// CLS -> patch attention `[N]` of the vision encoder (or the SigLIP probe attention).
    ClsAttention,
    /// ViT keys averaged over heads `[N, Dk]`.
    Keys,
    /// Any per-token importance score `[N]` (higher = more important).
    Importance,
    /// Per-token query relevance `[N]`.
    Relevance,
    /// Query (text) embeddings `[T, D]` in the features' space.
    Query,
    /// A frames x height x width layout (video methods).
    FrameGrid,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Signal::ClsAttention => "CLS attention (--cls-attn)",
            Signal::Keys => "keys (--keys)",
            Signal::Importance => "importance (--importance)",
            Signal::Relevance => "relevance (--relevance)",
            Signal::Query => "query embeddings (--query)",
            Signal::FrameGrid => "a frame grid layout (--grid F,H,W)",
        };
        f.write_str(name)
    }
}

/// Everything that can go wrong when building a token set or running a selector.
#[derive(Debug, Error)]
pub enum PruneError {
    /// A tensor holds NaN or an infinity.
    #[error("{tensor} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which input tensor.
        tensor: &'static str,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The bad value.
        value: f32,
    },
    /// A tensor's shape does not fit the features.
    #[error("{tensor} has shape {got:?}, expected {expected}")]
    Shape {
        /// Which input tensor.
        tensor: &'static str,
        /// The shape received.
        got: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// The layout does not describe the number of tokens given.
    #[error("layout {layout} describes {layout_tokens} tokens but the features have {tokens}")]
    Layout {
        /// The layout, printed.
        layout: String,
        /// Tokens the layout describes.
        layout_tokens: usize,
        /// Rows of the feature matrix.
        tokens: usize,
    },
    /// The method needs a side signal the token set does not carry.
    #[error("method `{method}` needs {signal}, which was not given")]
    MissingSignal {
        /// Method name.
        method: &'static str,
        /// The missing signal.
        signal: Signal,
    },
    /// A budget outside its domain.
    #[error("invalid budget {value}: {reason}")]
    Budget {
        /// The value, printed.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The budget is smaller than the method's structure allows.
    #[error("method `{method}` cannot keep fewer than {minimum} tokens here (asked for {asked}): {reason}")]
    BudgetTooSmall {
        /// Method name.
        method: &'static str,
        /// The smallest count the method can produce on this input.
        minimum: usize,
        /// The count asked for.
        asked: usize,
        /// Why, in words.
        reason: &'static str,
    },
    /// A method parameter is out of range or unknown.
    #[error("method `{method}`: parameter `{param}` {reason}")]
    Param {
        /// Method name.
        method: String,
        /// Parameter name.
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No method of that name.
    #[error("unknown method `{0}` (see `tokensieve prune --list`)")]
    UnknownMethod(String),
    /// An error from the tensor backend (libtorch).
    #[error("tensor backend: {0}")]
    Backend(String),
}

/// Result alias of this crate.
pub type Result<T, E = PruneError> = std::result::Result<T, E>;
