//! The evaluation harness's one error type: every variant names the file, record or field that is wrong, so a user
//! with a 500 MB dataset file knows where to look.

/// What can go wrong loading a dataset, reading predictions or writing results.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is not in the expected format (not JSON, a broken parquet file, a CSV without a header, ...).
    #[error("{path}: {reason}")]
    Format {
        /// The file (or `line N` inside it).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A record lacks a field the task needs, or the field has the wrong type.
    #[error("{path}: record {record}: {reason}")]
    Record {
        /// The file.
        path: String,
        /// The record's id or index.
        record: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A setting does not fit the task (unknown extractor, bad shard, ...).
    #[error("{0}")]
    Setting(String),
}

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EvalError::Io { path: path.display().to_string(), source }
    }

    /// A format error in `path`.
    pub fn format(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        EvalError::Format { path: path.to_string(), reason: reason.to_string() }
    }
}
