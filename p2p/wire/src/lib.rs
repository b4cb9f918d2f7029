//! provnet's wire format: the messages every role exchanges, the signed CBOR envelope that
//! carries them, the versioned gossip topics, and the rules a node applies to a message
//! before it forwards it (size, encoding, netuid, timestamp window, signature, replay and
//! per-sender rate).
//!
//! This is a leaf crate: it does no I/O and knows nothing of tokio or libp2p, so scoring,
//! proving and the TUI can share these types and every rule can be tested without sockets.
//! Proofs are opaque bytes here; the kernels crate gives them meaning.

pub mod ceremony;
pub mod codec;
pub mod dispute;
pub mod envelope;
pub mod error;
pub mod gate;
mod lru;
pub mod message;
pub mod status;
pub mod sync;
mod tag;
pub mod topic;

pub use ceremony::{BlobRequest, BlobResponse, CeremonyBody, CeremonyMessage};
pub use dispute::{
    Attestation, Claim, Digest, DisputeOpen, DisputeReveal, DisputeVerdict, LeafRequest,
    LeafResponse, LeafState,
};
pub use envelope::{Envelope, Kind, Network, Signer, PROTOCOL_VERSION};
pub use error::WireError;
pub use gate::{
    Admission, Counters, Gate, GateConfig, IgnoreReason, RegistrationRule, RejectReason,
    SharedKeys, Verdict, Verified,
};
pub use message::{
    Announce, Challenge, Message, MinerWeight, ProofSubmission, ProofSystem, Register, Role,
    SeenCommit, WeightsCommit, WeightsReveal,
};
pub use status::{
    ChallengeStatus, ChallengerStatus, CourtStatus, DisputeStatus, EpochRewards, GossipStatus,
    LedgerStatus, MinerRanking, MinerStatus, NodeStatus, PeerStatus, RejectionRecord,
    ValidatorStatus,
};
pub use sync::{CourtSyncRequest, SyncRequest, SyncResponse};
pub use topic::Topic;

/// A node's ed25519 public key (its hotkey); the libp2p PeerId is derived from the same key.
pub type PublicKey = [u8; 32];

/// Milliseconds since the Unix epoch, the clock every timestamp on the wire uses.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
