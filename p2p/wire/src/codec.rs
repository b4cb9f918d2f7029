//! The one place CBOR lives: compact (packed) serde_cbor encoding, and a strict decoder that
//! refuses trailing bytes and any encoding other than the canonical one we produce, so one
//! logical message has exactly one byte string (and one gossip message id).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::WireError;

/// Encodes `value` as packed CBOR (struct fields keyed by index, not name).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    serde_cbor::ser::to_vec_packed(value).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes packed CBOR and checks that re-encoding gives the same bytes.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let value: T = serde_cbor::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    if encode(&value)? != bytes {
        return Err(WireError::NonCanonical);
    }
    Ok(value)
}
