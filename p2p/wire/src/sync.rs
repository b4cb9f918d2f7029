//! Catching up on weights. A node that was down while validators committed and revealed
//! their weights missed those gossip messages for good: gossip does not replay. On restart
//! it asks peers for the epochs it missed, and each peer answers with the signed envelopes
//! of the commits and reveals it accepted, byte for byte as they were gossiped.
//!
//! The answering peer is not trusted: every envelope carries its validator's signature, and
//! the asking node checks it ([`crate::Gate::check_archived`]) and then applies the same
//! commit and reveal rules as for live gossip, judged at the time the validator signed.
//!
//! The court catches up the same way ([`CourtSyncRequest`]): the claims, disputes and
//! attestations a peer accepted since a time, each signed by its author, so a node that
//! was down settles the same bonds as everyone else.

use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

use crate::{codec, WireError};

/// Most epochs one request may ask for.
pub const MAX_SYNC_EPOCHS: u64 = 64;
/// Largest encoded request.
pub const MAX_SYNC_REQUEST_BYTES: usize = 64;
/// Largest encoded response; a peer with more to send says where to ask again.
pub const MAX_SYNC_RESPONSE_BYTES: usize = 4 << 20;

/// Asks for every commit and reveal of epochs `from_epoch..=to_epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from_epoch: u64,
    pub to_epoch: u64,
}

impl SyncRequest {
    /// Checks the range: ordered, and at most [`MAX_SYNC_EPOCHS`] long.
    pub fn check(&self) -> Result<(), WireError> {
        let invalid = |reason: String| WireError::Invalid {
            kind: "sync request",
            reason,
        };
        if self.to_epoch < self.from_epoch {
            return Err(invalid(format!(
                "epochs {}..={} are out of order",
                self.from_epoch, self.to_epoch
            )));
        }
        if self.to_epoch - self.from_epoch >= MAX_SYNC_EPOCHS {
            return Err(invalid(format!("more than {MAX_SYNC_EPOCHS} epochs")));
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncRequest, WireError> {
        fits("sync request", bytes, MAX_SYNC_REQUEST_BYTES)?;
        let r: SyncRequest = codec::decode(bytes)?;
        r.check()?;
        Ok(r)
    }
}

/// Asks for every claim, dispute and attestation a peer's court accepted that was signed
/// at or after `since_ms` (Unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourtSyncRequest {
    pub since_ms: u64,
}

impl CourtSyncRequest {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<CourtSyncRequest, WireError> {
        fits("court sync request", bytes, MAX_SYNC_REQUEST_BYTES)?;
        codec::decode(bytes)
    }
}

/// A peer's answer, to a weights or a court sync request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// False when the peer keeps no ledger or court (a relay without a genesis), so it
    /// has nothing to send; ask another.
    pub serving: bool,
    /// Signed envelopes as they were gossiped: WeightsCommit and WeightsReveal in epoch
    /// order; or Claim, DisputeOpen and Attestation in the order they were signed.
    pub envelopes: Vec<ByteBuf>,
    /// Set when the answer stopped at the size limit: the next epoch (weights) or Unix ms
    /// (court) to ask from.
    pub more_from: Option<u64>,
}

impl SyncResponse {
    pub fn not_serving() -> SyncResponse {
        SyncResponse::default()
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let bytes = codec::encode(self)?;
        fits("sync response", &bytes, MAX_SYNC_RESPONSE_BYTES)?;
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncResponse, WireError> {
        fits("sync response", bytes, MAX_SYNC_RESPONSE_BYTES)?;
        codec::decode(bytes)
    }
}

pub(crate) fn fits(kind: &'static str, bytes: &[u8], max: usize) -> Result<(), WireError> {
    match bytes.len() {
        len if len > max => Err(WireError::Oversize { kind, len, max }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ranges_are_refused() {
        let r = SyncRequest {
            from_epoch: 7,
            to_epoch: 9,
        };
        assert_eq!(SyncRequest::decode(&r.encode().unwrap()).unwrap(), r);
        for (from, to) in [(9, 7), (0, MAX_SYNC_EPOCHS)] {
            let bad = SyncRequest {
                from_epoch: from,
                to_epoch: to,
            };
            let e = SyncRequest::decode(&bad.encode().unwrap()).unwrap_err();
            assert!(matches!(e, WireError::Invalid { .. }), "{e}");
        }
        assert!(SyncRequest::decode(&[0xff; 100]).is_err());
    }

    #[test]
    fn court_sync_requests_round_trip() {
        let r = CourtSyncRequest { since_ms: u64::MAX };
        assert_eq!(CourtSyncRequest::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(CourtSyncRequest::decode(&[0xff; 100]).is_err());
    }

    #[test]
    fn responses_round_trip_and_are_bounded() {
        let r = SyncResponse {
            serving: true,
            envelopes: vec![ByteBuf::from(vec![1, 2, 3])],
            more_from: Some(12),
        };
        assert_eq!(SyncResponse::decode(&r.encode().unwrap()).unwrap(), r);
        let big = SyncResponse {
            serving: true,
            envelopes: vec![ByteBuf::from(vec![0; MAX_SYNC_RESPONSE_BYTES])],
            more_from: None,
        };
        assert!(matches!(big.encode(), Err(WireError::Oversize { .. })));
    }
}
