//! Errors from encoding, decoding and checking wire data.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("CBOR encoding failed: {0}")]
    Encode(String),
    #[error("malformed CBOR: {0}")]
    Decode(String),
    #[error("non-canonical encoding: re-encoding the decoded value gives different bytes")]
    NonCanonical,
    #[error("{kind} payload is {len} bytes, over its {max}-byte limit")]
    Oversize {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown {what} {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("invalid {kind} message: {reason}")]
    Invalid { kind: &'static str, reason: String },
    #[error("bad signature")]
    BadSignature,
}
