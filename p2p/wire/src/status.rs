//! Read-only snapshots of the gossip layer, for the node's status, metrics and the TUI.

use serde::{Deserialize, Serialize};

use crate::Counters;

/// One connected peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    /// The remote address of its first connection.
    pub address: String,
    pub connected_since_ms: u64,
    /// From identify, once it has answered.
    pub agent: Option<String>,
    /// From its last Announce.
    pub roles: Vec<String>,
    /// Its gossipsub score on our side (below zero: misbehaving).
    pub gossip_score: Option<f64>,
    pub topics: Vec<String>,
}

/// A message refused at this hop, kept for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionRecord {
    pub at_ms: u64,
    /// The peer that forwarded it to us (the one penalised).
    pub peer: String,
    pub topic: String,
    pub reason: String,
    pub detail: String,
}

/// The gossip layer as a whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GossipStatus {
    pub peer_id: String,
    pub netuid: u16,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    /// Validation outcomes of received messages, by reason.
    pub received: Counters,
    pub published: u64,
    pub publish_failures: u64,
    /// Newest last.
    pub recent_rejections: Vec<RejectionRecord>,
}
