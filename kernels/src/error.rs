//! The kernels crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong importing, executing, proving or verifying a model.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid ONNX model: {0}")]
    OnnxDecode(String),
    #[error("ONNX node '{node}' (op {op}): {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    #[error("ONNX graph: {0}")]
    Graph(String),
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("input: {0}")]
    Input(String),
    #[error("segment {segment} does not exist: the model has {count} segment(s)")]
    NoSuchSegment { segment: usize, count: usize },
    #[error(
        "keys for segment {segment} are missing in {dir}: run `provnet model setup {dir}` first"
    )]
    MissingKeys { segment: usize, dir: PathBuf },
    #[error("keys for segment {segment}: {reason}")]
    BadKeys { segment: usize, reason: String },
    #[error("constraint {index} ({label}) is not satisfied: {detail}")]
    Unsatisfied {
        index: usize,
        label: String,
        detail: String,
    },
    #[error("proof file: {0}")]
    ProofFile(String),
    #[error("proof rejected: {0}")]
    Rejected(String),
    #[error("powers of tau file {path}: {reason}")]
    Ptau { path: PathBuf, reason: String },
    #[error("ceremony: {0}")]
    Ceremony(String),
    #[error("prover backend {backend}: {reason}")]
    Backend { backend: String, reason: String },
}

impl KernelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KernelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        KernelError::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for the kernels crate.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
