//! The phase-2 setup ceremony on the network. The genesis names each model's ceremony; its
//! validators (those with stake, in genesis order) contribute one slot each, and every
//! node, validator or not, follows the same rules to the same keys.
//!
//! Gossip carries hashes only ([`CeremonyMessage`]): a contributor's announcement of the
//! step it built on a state, validators' votes, and each validator's final state and vk
//! ids. The step's bytes (δ, L and H per segment and the proofs of knowledge, about half a
//! transcript) are fetched by content hash over request-response
//! (`/provnet/<netuid>/ceremony/1`, [`BlobRequest`]), in chunks, from whoever has them,
//! and checked against the hash, so the server need not be trusted.

use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

use crate::sync::fits;
use crate::{codec, WireError};

/// Most segments a ceremony covers (vk ids in a final message).
pub const MAX_SEGMENTS: usize = 1024;
/// Most vote rounds for one slot.
pub const MAX_ROUNDS: u32 = 8;
/// Largest step a node fetches.
pub const MAX_STEP_BYTES: u64 = 1 << 30;
/// Bytes per chunk of a fetched step.
pub const BLOB_CHUNK: usize = 1 << 20;
/// Largest encoded [`BlobRequest`].
pub const MAX_BLOB_REQUEST_BYTES: usize = 96;
/// Largest encoded [`BlobResponse`].
pub const MAX_BLOB_RESPONSE_BYTES: usize = BLOB_CHUNK + 64;

/// A 32-byte hash.
pub type Hash32 = [u8; 32];

/// One gossip message of a model's ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyMessage {
    #[serde(with = "serde_bytes")]
    pub model_id: Hash32,
    pub body: CeremonyBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CeremonyBody {
    /// The slot's contributor built `step` (the blake3 of its bytes, `len` of them) on the
    /// state `prev`.
    Step {
        slot: u32,
        #[serde(with = "serde_bytes")]
        prev: Hash32,
        #[serde(with = "serde_bytes")]
        step: Hash32,
        len: u64,
    },
    /// A validator's one vote on a slot in a round: the step it fetched and verified on
    /// `prev`, giving state `next`; or, with `accept` empty, skip the slot (no valid step
    /// in time).
    Vote {
        slot: u32,
        round: u32,
        #[serde(with = "serde_bytes")]
        prev: Hash32,
        accept: Option<Accepted>,
    },
    /// A validator's state after the beacon, and the vk id of every segment under it.
    Final {
        #[serde(with = "serde_bytes")]
        state: Hash32,
        vk_ids: Vec<ByteBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Accepted {
    #[serde(with = "serde_bytes")]
    pub step: Hash32,
    #[serde(with = "serde_bytes")]
    pub next: Hash32,
}

impl CeremonyMessage {
    /// Stateless rules: counts and lengths.
    pub fn check(&self) -> Result<(), String> {
        match &self.body {
            CeremonyBody::Step { len, .. } => {
                if *len == 0 || *len > MAX_STEP_BYTES {
                    return Err(format!("a step of {len} bytes (1 to {MAX_STEP_BYTES})"));
                }
            }
            CeremonyBody::Vote { round, .. } => {
                if *round >= MAX_ROUNDS {
                    return Err(format!("round {round} (at most {})", MAX_ROUNDS - 1));
                }
            }
            CeremonyBody::Final { vk_ids, .. } => {
                if vk_ids.is_empty() || vk_ids.len() > MAX_SEGMENTS {
                    return Err(format!("{} vk ids (1 to {MAX_SEGMENTS})", vk_ids.len()));
                }
                if vk_ids.iter().any(|v| v.len() != 32) {
                    return Err("a vk id is not 32 bytes".into());
                }
            }
        }
        Ok(())
    }
}

/// Asks for `len` bytes (at most [`BLOB_CHUNK`]) of the blob whose blake3 is `hash`,
/// from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    #[serde(with = "serde_bytes")]
    pub hash: Hash32,
    pub offset: u64,
}

impl BlobRequest {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobRequest, WireError> {
        fits("blob request", bytes, MAX_BLOB_REQUEST_BYTES)?;
        codec::decode(bytes)
    }
}

/// A chunk of a blob and its whole length; `total` 0 when the node does not hold it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobResponse {
    pub total: u64,
    pub data: ByteBuf,
}

impl BlobResponse {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let bytes = codec::encode(self)?;
        fits("blob response", &bytes, MAX_BLOB_RESPONSE_BYTES)?;
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobResponse, WireError> {
        fits("blob response", bytes, MAX_BLOB_RESPONSE_BYTES)?;
        let r: BlobResponse = codec::decode(bytes)?;
        if r.data.len() > BLOB_CHUNK || r.data.len() as u64 > r.total {
            return Err(WireError::Invalid {
                kind: "blob response",
                reason: format!("{} bytes of a {}-byte blob", r.data.len(), r.total),
            });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bounds_hold() {
        let m = CeremonyMessage {
            model_id: [1; 32],
            body: CeremonyBody::Vote {
                slot: 2,
                round: 0,
                prev: [3; 32],
                accept: Some(Accepted {
                    step: [4; 32],
                    next: [5; 32],
                }),
            },
        };
        let bytes = codec::encode(&m).unwrap();
        assert_eq!(codec::decode::<CeremonyMessage>(&bytes).unwrap(), m);
        assert!(m.check().is_ok());
        let late = CeremonyMessage {
            body: CeremonyBody::Vote {
                slot: 2,
                round: MAX_ROUNDS,
                prev: [3; 32],
                accept: None,
            },
            ..m.clone()
        };
        assert!(late.check().is_err());
        let fin = CeremonyMessage {
            model_id: [1; 32],
            body: CeremonyBody::Final {
                state: [0; 32],
                vk_ids: vec![ByteBuf::from(vec![0u8; 31])],
            },
        };
        assert!(fin.check().is_err());
        let step = CeremonyMessage {
            model_id: [1; 32],
            body: CeremonyBody::Step {
                slot: 0,
                prev: [0; 32],
                step: [0; 32],
                len: MAX_STEP_BYTES + 1,
            },
        };
        assert!(step.check().is_err());

        let r = BlobResponse {
            total: 3,
            data: ByteBuf::from(vec![0u8; 4]),
        };
        assert!(BlobResponse::decode(&codec::encode(&r).unwrap()).is_err());
        let big = vec![0u8; MAX_BLOB_REQUEST_BYTES + 1];
        assert!(BlobRequest::decode(&big).is_err());
    }
}
