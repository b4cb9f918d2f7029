//! The dispute game's messages: an inference node's [`Claim`], a challenger's
//! [`DisputeOpen`], each side's [`DisputeReveal`] of its cut hashes in bisection rounds,
//! and each validator's [`Attestation`] of the verdict travel on the `dispute` topic. The
//! agreed state at the leaf ([`LeafState`]) is bulk that only referees need: each fetches
//! it by request-response (`/provnet/<netuid>/leaf/1`, [`LeafRequest`] and
//! [`LeafResponse`]) from either side, or from another referee that has it, and checks it
//! against the agreed hash, so who answers need not be trusted.
//!
//! The rules that need state (is this claim open, is the sender a side of this dispute, do
//! the Merkle proofs hold) belong to the court (`provnet_validator::court`); here are the
//! stateless ones: sizes, counts and orderings.

use serde::{Deserialize, Serialize};

use crate::message::MAX_TENSOR;
use crate::sync::fits;
use crate::{codec, PublicKey, WireError};

/// Most cuts a claim's trace may have (2^24: a model of 16M segments).
pub const MAX_CUTS: u32 = 1 << 24;
/// Most cut hashes one reveal carries.
pub const MAX_REVEAL_POINTS: usize = 4096;
/// Most Merkle levels in one proof (2^24 leaves need 24).
pub const MAX_PROOF_DEPTH: usize = 24;
/// Most sibling hashes in one reveal, all proofs together (keeps it inside a message).
pub const MAX_REVEAL_SIBLINGS: usize = 4096;
/// Most tensors live across one cut.
pub const MAX_STATE_TENSORS: usize = 64;

/// 32 bytes as CBOR bytes (a hash in a list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "serde_bytes")] pub [u8; 32]);

/// An inference node's claim that it ran `model_id` on `input` and got `output`, with the
/// Merkle root over its state hashes at every cut (`s_0` for the input to `s_L` for the
/// output, `cuts = L + 1`), backed by a bond. The claimant is the envelope's sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(with = "serde_bytes")]
    pub model_id: [u8; 32],
    /// The model's quantized input.
    pub input: Vec<i64>,
    /// The model's quantized output, as claimed.
    pub output: Vec<i64>,
    pub cuts: u32,
    #[serde(with = "serde_bytes")]
    pub trace_root: [u8; 32],
    pub bond: u64,
    /// Makes two claims of the same run distinct.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
}

impl Claim {
    /// The claim's id: a hash of the claimant and every field.
    pub fn id(&self, claimant: &PublicKey) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/claim/v1");
        h.update(claimant);
        h.update(&self.model_id);
        for t in [&self.input, &self.output] {
            h.update(&(t.len() as u64).to_le_bytes());
            for v in t {
                h.update(&v.to_le_bytes());
            }
        }
        h.update(&self.cuts.to_le_bytes());
        h.update(&self.trace_root);
        h.update(&self.bond.to_le_bytes());
        h.update(&self.nonce);
        *h.finalize().as_bytes()
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        for (what, t) in [("input", &self.input), ("output", &self.output)] {
            if t.is_empty() || t.len() > MAX_TENSOR {
                return Err(format!("{what} has {} values (1 to {MAX_TENSOR})", t.len()));
            }
        }
        if self.cuts < 2 || self.cuts > MAX_CUTS {
            return Err(format!("{} cuts (2 to {MAX_CUTS})", self.cuts));
        }
        Ok(())
    }
}

/// A challenger disputes a claim: its own trace of the same run has root `trace_root`, and
/// it backs that with a bond. The challenger is the envelope's sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeOpen {
    #[serde(with = "serde_bytes")]
    pub claim_id: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub trace_root: [u8; 32],
    pub bond: u64,
}

impl DisputeOpen {
    /// The dispute's id: a hash of the challenger and every field.
    pub fn id(&self, challenger: &PublicKey) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/dispute/v1");
        h.update(challenger);
        h.update(&self.claim_id);
        h.update(&self.trace_root);
        h.update(&self.bond.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// One side's answer to a bisection round: its state hash at each cut the round asks for,
/// in the round's order, each with the sibling hashes that prove it against the side's
/// trace root (empty when the round asks for every cut: the root is then rebuilt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeReveal {
    #[serde(with = "serde_bytes")]
    pub dispute_id: [u8; 32],
    pub round: u32,
    pub hashes: Vec<Digest>,
    pub proofs: Vec<Vec<Digest>>,
}

impl DisputeReveal {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.hashes.is_empty() || self.hashes.len() > MAX_REVEAL_POINTS {
            let n = self.hashes.len();
            return Err(format!("{n} hashes (1 to {MAX_REVEAL_POINTS})"));
        }
        if !self.proofs.is_empty() && self.proofs.len() != self.hashes.len() {
            let (p, h) = (self.proofs.len(), self.hashes.len());
            return Err(format!("{p} proofs for {h} hashes"));
        }
        if self.proofs.iter().any(|p| p.len() > MAX_PROOF_DEPTH) {
            return Err(format!("a proof over {MAX_PROOF_DEPTH} levels"));
        }
        let siblings: usize = self.proofs.iter().map(Vec::len).sum();
        if siblings > MAX_REVEAL_SIBLINGS {
            return Err(format!(
                "{siblings} sibling hashes (at most {MAX_REVEAL_SIBLINGS})"
            ));
        }
        Ok(())
    }
}

/// The state both sides agree on at the leaf's input cut, which the segment proof starts
/// from. Either side (or a referee holding it) may give it; it must hash to the agreed
/// `s_cut`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafState {
    #[serde(with = "serde_bytes")]
    pub dispute_id: [u8; 32],
    pub cut: u32,
    pub tensors: Vec<Vec<i64>>,
}

impl LeafState {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.tensors.is_empty() || self.tensors.len() > MAX_STATE_TENSORS {
            let n = self.tensors.len();
            return Err(format!("{n} tensors (1 to {MAX_STATE_TENSORS})"));
        }
        let values: usize = self.tensors.iter().map(Vec::len).sum();
        if values > MAX_TENSOR || self.tensors.iter().any(Vec::is_empty) {
            return Err(format!(
                "{values} values in all, or an empty tensor (at most {MAX_TENSOR})"
            ));
        }
        Ok(())
    }
}

/// Largest encoded [`LeafRequest`].
pub const MAX_LEAF_REQUEST_BYTES: usize = 96;
/// Largest encoded [`LeafResponse`]: every tensor of a state at 9 CBOR bytes a value, with
/// room to spare.
pub const MAX_LEAF_RESPONSE_BYTES: usize = 4 << 20;

/// Asks a node for the state at `cut` of a dispute's traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRequest {
    #[serde(with = "serde_bytes")]
    pub dispute_id: [u8; 32],
    pub cut: u32,
}

impl LeafRequest {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<LeafRequest, WireError> {
        fits("leaf request", bytes, MAX_LEAF_REQUEST_BYTES)?;
        codec::decode(bytes)
    }
}

/// A node's answer: the state, or none when it holds no such state (not a side of the
/// dispute, and not a referee that fetched it already).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafResponse {
    pub state: Option<LeafState>,
}

impl LeafResponse {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let bytes = codec::encode(self)?;
        fits("leaf response", &bytes, MAX_LEAF_RESPONSE_BYTES)?;
        Ok(bytes)
    }

    /// Decodes and checks the sizes ([`LeafState`]'s rules).
    pub fn decode(bytes: &[u8]) -> Result<LeafResponse, WireError> {
        fits("leaf response", bytes, MAX_LEAF_RESPONSE_BYTES)?;
        let r: LeafResponse = codec::decode(bytes)?;
        if let Some(l) = &r.state {
            l.check().map_err(|reason| WireError::Invalid {
                kind: "leaf response",
                reason,
            })?;
        }
        Ok(r)
    }
}

crate::tag::byte_tag! {
    /// How a dispute ended.
    pub enum DisputeVerdict("dispute verdict") {
        /// The proven output matches the challenger's state, not the claimant's.
        ClaimantWrong = 1 => "claimant_wrong",
        /// The proven output matches the claimant's state, or the challenger's trace
        /// agrees with the claim's output.
        ChallengerWrong = 2 => "challenger_wrong",
        /// The proven output matches neither side.
        BothWrong = 3 => "both_wrong",
        /// The claimant did not answer in time (or its reveal did not hold).
        TimeoutClaimant = 4 => "timeout_claimant",
        /// The challenger did not answer in time (or its reveal did not hold).
        TimeoutChallenger = 5 => "timeout_challenger",
    }
}

impl DisputeVerdict {
    /// Whether the claimant loses its bond.
    pub fn claimant_loses(self) -> bool {
        matches!(
            self,
            DisputeVerdict::ClaimantWrong
                | DisputeVerdict::BothWrong
                | DisputeVerdict::TimeoutClaimant
        )
    }

    /// Whether the challenger loses its bond.
    pub fn challenger_loses(self) -> bool {
        matches!(
            self,
            DisputeVerdict::ChallengerWrong
                | DisputeVerdict::BothWrong
                | DisputeVerdict::TimeoutChallenger
        )
    }
}

/// A validator's verdict on a dispute: the segment it came down to (none when it ended
/// before a leaf) and the miner whose proof decided it (none: no proof by the deadline,
/// and the validator executed the segment itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    #[serde(with = "serde_bytes")]
    pub dispute_id: [u8; 32],
    pub verdict: DisputeVerdict,
    pub segment: Option<u32>,
    pub prover: Option<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_requests_and_responses_round_trip_and_bad_states_are_refused() {
        let r = LeafRequest {
            dispute_id: [3; 32],
            cut: u32::MAX,
        };
        assert_eq!(LeafRequest::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(LeafRequest::decode(&[0x42; MAX_LEAF_REQUEST_BYTES + 1]).is_err());
        let state = |tensors: Vec<Vec<i64>>| LeafResponse {
            state: Some(LeafState {
                dispute_id: [3; 32],
                cut: 4,
                tensors,
            }),
        };
        for ok in [LeafResponse::default(), state(vec![vec![1, -1, i64::MIN]])] {
            assert_eq!(LeafResponse::decode(&ok.encode().unwrap()).unwrap(), ok);
        }
        // No tensor, an empty tensor, more values than a challenge can carry.
        for bad in [
            state(vec![]),
            state(vec![vec![1], vec![]]),
            state(vec![vec![0; MAX_TENSOR + 1]]),
        ] {
            let e = LeafResponse::decode(&bad.encode().unwrap()).unwrap_err();
            assert!(matches!(e, WireError::Invalid { .. }), "{e}");
        }
        let huge = state(vec![vec![i64::MAX; MAX_LEAF_RESPONSE_BYTES / 8]]);
        assert!(matches!(huge.encode(), Err(WireError::Oversize { .. })));
        assert!(LeafResponse::decode(&[0xff; 16]).is_err());
    }
}
