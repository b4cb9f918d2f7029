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
    /// Topics on which it is in our gossip mesh (full messages flow both ways).
    #[serde(default)]
    pub mesh: Vec<String>,
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
    /// Connections closed at once: the unreserved slots were full, or the peer's IP had
    /// enough peers.
    #[serde(default)]
    pub connections_refused: u64,
    /// Ledger messages dropped: registrations past the backlog's bound while the ledger
    /// subscriber was behind (weights are kept; see `ledger_backlog`).
    #[serde(default)]
    pub ledger_dropped: u64,
    /// Weights messages and registrations accepted but not yet taken by the ledger
    /// subscriber (it fell behind; they wait here instead of being dropped).
    #[serde(default)]
    pub ledger_backlog: u64,
}

/// A miner's queue and prover.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerStatus {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub in_flight: usize,
    pub threads: usize,
    pub max_concurrent: usize,
    pub proved: u64,
    pub failed: u64,
    pub dropped_expired: u64,
    /// Challenges not queued, by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
    pub prove_ms_p50: Option<f64>,
    pub prove_ms_p95: Option<f64>,
    /// Proofs published to the network.
    pub published: u64,
    /// Proving time of every proof made, as a histogram (for metrics).
    #[serde(default)]
    pub prove_seconds: Histogram,
    /// The proving backend in use: "cpu" or "cuda".
    #[serde(default)]
    pub backend: String,
}

/// A cumulative histogram in the Prometheus style: `buckets[i]` counts observations
/// `<= bounds[i]`; `count` and `sum` cover all of them (the `+Inf` bucket is `count`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn with_bounds(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            buckets: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, n) in self.bounds.iter().zip(self.buckets.iter_mut()) {
            if v <= *b {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// One proof from one miner, as a validator judged it (for the miner's detail view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProofNote {
    /// Short hex of the challenge id.
    pub challenge: String,
    /// When the verdict came, on the validator's clock.
    pub at_ms: u64,
    /// valid, invalid, copied, replayed or late.
    pub outcome: String,
    pub latency_ms: Option<f64>,
    pub proof_bytes: Option<u64>,
    /// Why it failed, when it did.
    pub detail: String,
}

/// A warning or error the node logged, kept for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

/// One challenge as a validator or challenger saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChallengeStatus {
    pub id: String,
    pub model: String,
    pub segment: u32,
    pub received_ms: u64,
    pub deadline_ms: u64,
    pub proofs: u32,
    pub valid: u32,
    /// Fastest valid proof, ms after the challenge arrived.
    pub fastest_ms: Option<f64>,
    /// "open" or "closed".
    pub status: String,
}

/// One miner as this node ranks it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerRanking {
    /// Hex of the miner's public key.
    pub miner: String,
    /// Moving average of its samples (validators only).
    pub score: f64,
    /// This validator's weight for it in the last closed epoch, out of 65535.
    pub weight: u16,
    /// Consensus weight (C_m) and incentive (I_m) of the last epoch with consensus.
    pub consensus: f64,
    pub incentive: f64,
    pub valid: u64,
    pub invalid: u64,
    pub copied: u64,
    pub replayed: u64,
    pub late: u64,
    /// Challenge receipt to proof receipt, on this validator's clock.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    /// Challenge receipt to the proof's verdict (verification included).
    pub verified_ms_p50: Option<f64>,
    pub verified_ms_p95: Option<f64>,
    pub proof_bytes: Option<u64>,
    pub reward_last_epoch: u64,
    pub reward_total: u64,
    /// Its latest proofs, newest last (since this validator started).
    #[serde(default)]
    pub recent_proofs: Vec<ProofNote>,
    /// Its slot in the miner registry; `None` once it has left it.
    #[serde(default)]
    pub uid: Option<u16>,
}

/// One epoch's rewards.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRewards {
    pub epoch: u64,
    pub owner: u64,
    pub miners: u64,
    pub validators: u64,
    pub unallocated: u64,
    /// Validators that revealed weights for the epoch (hex).
    pub revealed_by: Vec<String>,
    /// Per validator (hex): its dividends' share of the emission.
    pub dividends: std::collections::BTreeMap<String, u64>,
}

/// Consensus and the reward ledger, which every node with a genesis keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerStatus {
    pub last_consensus_epoch: Option<u64>,
    /// Newest last.
    pub recent: Vec<EpochRewards>,
    pub owner_total: u64,
    /// Per miner and per validator (hex), everything earned so far.
    pub miner_totals: std::collections::BTreeMap<String, u64>,
    pub validator_totals: std::collections::BTreeMap<String, u64>,
    /// Reveals and commits refused, by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Set while the node, just restarted, fetches the weights it missed from peers:
    /// consensus for this epoch and later waits until then.
    #[serde(default)]
    pub catching_up_from: Option<u64>,
    /// Miners holding a slot in the registry, and the slots there are.
    #[serde(default)]
    pub registered_miners: u32,
    #[serde(default)]
    pub max_miners: u16,
    /// Registrations refused, by reason.
    #[serde(default)]
    pub registrations_refused: std::collections::BTreeMap<String, u64>,
    /// Registrations heard and waiting for their epoch's batch.
    #[serde(default)]
    pub registrations_pending: u32,
}

/// The validator role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidatorStatus {
    pub open_challenges: usize,
    pub verified: u64,
    pub verify_batches: u64,
    pub verify_queue: usize,
    /// Last epoch whose weights this validator committed.
    pub last_committed_epoch: Option<u64>,
    pub last_revealed_epoch: Option<u64>,
    /// Best first.
    pub rankings: Vec<MinerRanking>,
    /// Newest last.
    pub recent_challenges: Vec<ChallengeStatus>,
    /// Challenges and proofs refused before verification, by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
}

/// The challenger role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChallengerStatus {
    pub published: u64,
    pub publish_failures: u64,
    /// Challenges per second (0: one-shot only).
    pub rate: f64,
    /// Newest last.
    pub recent: Vec<ChallengeStatus>,
}

/// Everything a node shows operators: written to `<data-dir>/status.json` and served to
/// the TUI. Read-only; a snapshot, not a live view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub at_ms: u64,
    pub software_version: String,
    pub public_key: String,
    pub peer_id: String,
    pub roles: Vec<String>,
    pub netuid: u16,
    /// Hex of the genesis hash (empty on a development network).
    pub genesis: String,
    pub epoch: u64,
    pub epoch_secs: u64,
    pub epoch_ends_ms: u64,
    pub gossip: GossipStatus,
    pub peers: Vec<PeerStatus>,
    pub miner: Option<MinerStatus>,
    pub validator: Option<ValidatorStatus>,
    pub challenger: Option<ChallengerStatus>,
    pub ledger: Option<LedgerStatus>,
    /// Claims, disputes and bonds as this node's court keeps them.
    #[serde(default)]
    pub court: Option<CourtStatus>,
    /// Recent warnings and errors from the node's log, newest last.
    #[serde(default)]
    pub log: Vec<LogLine>,
    /// While the node runs a setup ceremony (before its roles start): where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceremony: Option<String>,
}

/// The value at quantile `q` of sorted samples (nearest rank); `None` when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Disputed inference as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CourtStatus {
    pub claims_open: u32,
    pub claims_total: u32,
    pub disputes_open: u32,
    /// Newest first, at most 64.
    pub disputes: Vec<DisputeStatus>,
    /// Messages the court refused, by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Final verdicts, by verdict.
    pub verdicts: std::collections::BTreeMap<String, u64>,
    /// Dispute opened to verdict final, ms, newest last (at most 256).
    pub ms_to_verdict: Vec<u64>,
    /// The same, every dispute since the node started, in seconds.
    #[serde(default)]
    pub verdict_seconds: Histogram,
    /// This node's balance (none: not a funded account).
    pub balance: Option<u64>,
    pub burned: u64,
    /// An inference node's claims published.
    pub claims_published: u64,
    /// A challenger's disputes opened.
    pub disputes_opened: u64,
    /// Audits skipped because too many model runs were in flight.
    #[serde(default)]
    pub audits_skipped: u64,
    /// Leaf states this node gave referees that asked (a side's, or a referee's).
    #[serde(default)]
    pub leaf_served: u64,
    /// Leaf states this referee fetched, and fetches that nobody answered.
    #[serde(default)]
    pub leaf_fetched: u64,
    #[serde(default)]
    pub leaf_fetch_failed: u64,
    /// Claims, disputes and attestations taken from peers while catching up.
    #[serde(default)]
    pub synced: u64,
    /// A cheating inference node's own record (test builds): claim -> the segment whose
    /// output it corrupted.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub corrupted: std::collections::BTreeMap<String, u32>,
}

/// One dispute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DisputeStatus {
    pub id: String,
    pub claim: String,
    pub claimant: String,
    pub challenger: String,
    /// `round N`, `leaf`, `decided`, `final` or `abandoned`.
    pub stage: String,
    pub rounds: u32,
    /// The cut range still disputed (the leaf: `hi = lo + 1`).
    pub lo: u32,
    pub hi: u32,
    /// When the current clock runs out (Unix ms), while one runs.
    pub deadline_ms: Option<u64>,
    pub opened_ms: u64,
    /// This node's verdict, and the final one.
    pub verdict: Option<String>,
    pub final_verdict: Option<String>,
    pub segment: Option<u32>,
    pub prover: Option<String>,
    pub ms_to_verdict: Option<u64>,
    /// Bonds slashed by the final verdict.
    pub slashed: u64,
    /// Where the time went, ms: the claim's receipt to the dispute (the audit), the
    /// dispute to the leaf (bisection), the leaf to this node's verdict (its proof), the
    /// verdict to finality (attestations).
    #[serde(default)]
    pub audit_ms: Option<u64>,
    #[serde(default)]
    pub bisect_ms: Option<u64>,
    #[serde(default)]
    pub leaf_ms: Option<u64>,
    #[serde(default)]
    pub attest_ms: Option<u64>,
}
