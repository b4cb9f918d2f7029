//! The checks a node runs on every gossip message before it is forwarded or delivered.
//!
//! Cheap checks come first (size, decoding, version, netuid, topic, timestamp window), then
//! the signature, then the checks that need the verified sender: replay (a window of recent
//! sequence numbers per sender) and rate (a token bucket per sender). Only then is the
//! payload decoded and checked. Every outcome is counted by reason.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, Kind, Network, PROTOCOL_VERSION};
use crate::lru::Lru;
use crate::message::Message;
use crate::{PublicKey, Topic, WireError};

/// Limits the gate enforces. Defaults suit a public network; tests tighten them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Oldest accepted timestamp, relative to our clock.
    pub max_age_ms: u64,
    /// How far ahead of our clock a timestamp may be (clock skew).
    pub max_future_ms: u64,
    /// Senders whose replay windows and rate buckets are remembered.
    pub tracked_senders: usize,
    /// Sustained messages per second per sender.
    pub rate_per_sec: f64,
    /// Burst allowance per sender.
    pub rate_burst: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            max_age_ms: 60_000,
            max_future_ms: 10_000,
            tracked_senders: 16_384,
            rate_per_sec: 50.0,
            rate_burst: 200.0,
        }
    }
}

/// Who may publish what, decided by the genesis. A message from a sender outside its set is
/// refused before its signature is checked (the sender field is read from the envelope;
/// the signature then proves it), so a flood from fresh keys costs a lookup each and is
/// never forwarded.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Keys that may publish challenges: the validators, which issue them, and the
    /// challengers the genesis admits, whose requests validators adopt. `None` admits
    /// anyone (a development network without a genesis).
    pub challengers: Option<HashSet<PublicKey>>,
    /// Keys that may publish weights commits and reveals: the genesis validators. `None`
    /// admits anyone (the ledger still refuses outsiders).
    pub validators: Option<HashSet<PublicKey>>,
    /// The work and freshness a registration needs. `None`: registrations are not checked.
    pub registration: Option<RegistrationRule>,
    /// The registered miners, kept current by the node as its metagraph changes. Proofs
    /// from anyone else are dropped without being forwarded (ignored, not penalised: two
    /// honest nodes may briefly disagree on a registration). `None`: anyone's proofs.
    pub miners: Option<SharedKeys>,
    /// Keys that may publish claims and reveals: the genesis accounts, which
    /// can post the bonds. `None` admits anyone (the court still refuses outsiders).
    pub accounts: Option<HashSet<PublicKey>>,
    /// Keys that may open disputes: the challengers the genesis admits. `None` admits
    /// anyone.
    pub disputers: Option<HashSet<PublicKey>>,
}

/// A set of keys the node updates while the gate reads it.
pub type SharedKeys = Arc<RwLock<HashSet<PublicKey>>>;

/// What a registration must carry to be forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationRule {
    /// Leading zero bits of [`crate::Register::work_hash`].
    pub work_bits: u32,
    /// The network's epoch length: work is for the current or the previous epoch.
    pub epoch_ms: u64,
}

impl Admission {
    fn admits(&self, kind: Kind, sender: &PublicKey) -> bool {
        match kind {
            Kind::Challenge => self.challengers.as_ref().is_none_or(|s| s.contains(sender)),
            Kind::WeightsCommit | Kind::WeightsReveal | Kind::Attestation | Kind::Ceremony => {
                self.validators.as_ref().is_none_or(|s| s.contains(sender))
            }
            Kind::Claim | Kind::DisputeReveal => {
                self.accounts.as_ref().is_none_or(|s| s.contains(sender))
            }
            Kind::DisputeOpen => self.disputers.as_ref().is_none_or(|s| s.contains(sender)),
            Kind::ProofSubmission | Kind::Announce | Kind::Register => true,
        }
    }

    fn registered(&self, miner: &PublicKey) -> bool {
        self.miners
            .as_ref()
            .is_none_or(|m| m.read().map(|m| m.contains(miner)).unwrap_or(true))
    }
}

/// Why a message was refused and its forwarder penalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    Oversize,
    Malformed,
    WrongVersion,
    ForeignNetuid,
    ForeignGenesis,
    WrongTopic,
    Stale,
    FromFuture,
    BadSignature,
    Replay,
    RateLimited,
    InvalidPayload,
    /// The sender may not publish this kind (see [`Admission`]).
    Unadmitted,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::Malformed => "malformed",
            RejectReason::WrongVersion => "wrong_version",
            RejectReason::ForeignNetuid => "foreign_netuid",
            RejectReason::ForeignGenesis => "foreign_genesis",
            RejectReason::WrongTopic => "wrong_topic",
            RejectReason::Stale => "stale",
            RejectReason::FromFuture => "from_future",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::Replay => "replay",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::Unadmitted => "unadmitted",
        }
    }
}

/// Why a message was dropped without penalty (it may be honest, just not useful).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IgnoreReason {
    /// Our own message came back to us.
    OwnMessage,
    /// A challenge whose deadline has passed, or a registration for an old epoch.
    Expired,
    /// A proof from a key that holds no miner slot.
    Unregistered,
    /// A registration from a miner that holds a slot already.
    Registered,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::OwnMessage => "own_message",
            IgnoreReason::Expired => "expired",
            IgnoreReason::Unregistered => "unregistered",
            IgnoreReason::Registered => "registered",
        }
    }
}

/// A message that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub sender: PublicKey,
    pub timestamp_ms: u64,
    pub sequence: u64,
    pub message: Message,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept(Box<Verified>),
    Ignore(IgnoreReason),
    /// Refused; the string says why, for the debug log.
    Reject(RejectReason, String),
}

/// Outcome counts, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub accepted: u64,
    pub ignored: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
}

impl Counters {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(reason.as_str()).copied().unwrap_or(0)
    }

    pub fn ignored(&self, reason: IgnoreReason) -> u64 {
        self.ignored.get(reason.as_str()).copied().unwrap_or(0)
    }

    pub fn total_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn count(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Accept(_) => self.accepted += 1,
            Verdict::Ignore(r) => *self.ignored.entry(r.as_str().into()).or_default() += 1,
            Verdict::Reject(r, _) => *self.rejected.entry(r.as_str().into()).or_default() += 1,
        }
    }
}

const WINDOW_WORDS: usize = 16;
/// How far behind a sender's newest sequence a late message may still arrive.
pub const REPLAY_WINDOW: u64 = (WINDOW_WORDS * 64) as u64;

/// Which of a sender's last [`REPLAY_WINDOW`] sequence numbers have been seen.
/// Bit `i` stands for `highest - i`.
#[derive(Clone, Debug, Default)]
struct ReplayWindow {
    highest: Option<u64>,
    bits: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    /// Marks `seq` seen; false when it was seen already or is too old to tell.
    fn check_and_mark(&mut self, seq: u64) -> bool {
        let Some(high) = self.highest else {
            self.highest = Some(seq);
            self.bits = [0; WINDOW_WORDS];
            self.bits[0] = 1;
            return true;
        };
        if seq > high {
            self.shift(seq - high);
            self.highest = Some(seq);
            self.bits[0] |= 1;
            return true;
        }
        let i = high - seq;
        if i >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.bits[w] >> b & 1 == 1 {
            return false;
        }
        self.bits[w] |= 1 << b;
        true
    }

    fn shift(&mut self, d: u64) {
        if d >= REPLAY_WINDOW {
            self.bits = [0; WINDOW_WORDS];
            return;
        }
        let (w, b) = ((d / 64) as usize, (d % 64) as u32);
        for k in (0..WINDOW_WORDS).rev() {
            let hi = if k >= w { self.bits[k - w] << b } else { 0 };
            let lo = if b > 0 && k > w {
                self.bits[k - w - 1] >> (64 - b)
            } else {
                0
            };
            self.bits[k] = hi | lo;
        }
    }
}

#[derive(Clone, Debug)]
struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    fn take(&mut self, now_ms: u64, rate: f64, burst: f64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + elapsed * rate / 1000.0).min(burst);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct SenderState {
    replay: ReplayWindow,
    bucket: TokenBucket,
}

/// The validation state of one node on one network.
pub struct Gate {
    net: Network,
    own: PublicKey,
    cfg: GateConfig,
    admission: Admission,
    senders: Lru<PublicKey, SenderState>,
    counters: Counters,
}

impl Gate {
    pub fn new(net: Network, own: PublicKey, cfg: GateConfig) -> Gate {
        Gate {
            net,
            own,
            senders: Lru::new(cfg.tracked_senders),
            cfg,
            admission: Admission::default(),
            counters: Counters::default(),
        }
    }

    /// The gate with `admission` deciding who may publish what.
    pub fn with_admission(mut self, admission: Admission) -> Gate {
        self.admission = admission;
        self
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Senders whose replay windows and rate buckets are held now.
    pub fn senders_tracked(&self) -> usize {
        self.senders.len()
    }

    /// Senders forgotten to stay within `tracked_senders` (their replay windows with them).
    pub fn senders_evicted(&self) -> u64 {
        self.senders.evicted()
    }

    /// Checks `bytes` received on `topic` at `now_ms`, and counts the outcome.
    pub fn check(&mut self, topic: Topic, bytes: &[u8], now_ms: u64) -> Verdict {
        let verdict = self.judge(topic, bytes, now_ms);
        self.counters.count(&verdict);
        verdict
    }

    /// The checks that need no clock or sender state: size, encoding, version, network,
    /// and (for gossip) that the kind belongs on the topic.
    fn open(&self, topic: Option<Topic>, bytes: &[u8]) -> Result<Envelope, (RejectReason, String)> {
        use RejectReason as R;
        if bytes.len() > Kind::max_envelope() {
            return Err((R::Oversize, format!("{} bytes", bytes.len())));
        }
        let env = Envelope::decode(bytes).map_err(|e| (R::Malformed, e.to_string()))?;
        if env.version != PROTOCOL_VERSION {
            return Err((R::WrongVersion, format!("version {}", env.version)));
        }
        if env.netuid != self.net.netuid {
            return Err((R::ForeignNetuid, format!("netuid {}", env.netuid)));
        }
        if env.genesis != self.net.genesis {
            let theirs = hex::encode(env.genesis);
            return Err((R::ForeignGenesis, format!("genesis {theirs}")));
        }
        if let Some(topic) = topic.filter(|t| Topic::of(env.kind) != *t) {
            let kind = env.kind.as_str();
            let why = format!("{kind} on the {} topic", topic.as_str());
            return Err((R::WrongTopic, why));
        }
        if env.payload.len() > env.kind.max_payload() {
            let (len, max) = (env.payload.len(), env.kind.max_payload());
            return Err((R::Oversize, format!("{len}-byte payload, limit {max}")));
        }
        Ok(env)
    }

    fn payload(env: &Envelope) -> Result<Message, (RejectReason, String)> {
        env.message().map_err(|e| match e {
            e @ WireError::Oversize { .. } => (RejectReason::Oversize, e.to_string()),
            e => (RejectReason::InvalidPayload, e.to_string()),
        })
    }

    /// Checks an envelope kept from the past, as a peer sends it when this node catches up
    /// (see [`crate::sync`]): everything [`Gate::check`] checks except the age window,
    /// replay and rate, which only mean something for live gossip. A timestamp ahead of
    /// `now_ms` by more than the gate allows is still refused. Counts nothing.
    pub fn check_archived(
        &self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Verified, (RejectReason, String)> {
        let env = self.open(None, bytes)?;
        if env.timestamp_ms.saturating_sub(now_ms) > self.cfg.max_future_ms {
            let ahead = env.timestamp_ms - now_ms;
            return Err((
                RejectReason::FromFuture,
                format!("timestamp {ahead} ms ahead"),
            ));
        }
        env.verify()
            .map_err(|e| (RejectReason::BadSignature, e.to_string()))?;
        let message = Self::payload(&env)?;
        Ok(Verified {
            sender: env.sender,
            timestamp_ms: env.timestamp_ms,
            sequence: env.sequence,
            message,
        })
    }

    fn judge(&mut self, topic: Topic, bytes: &[u8], now_ms: u64) -> Verdict {
        use RejectReason as R;
        let reject = |r: RejectReason, why: String| Verdict::Reject(r, why);
        let env = match self.open(Some(topic), bytes) {
            Ok(env) => env,
            Err((r, why)) => return reject(r, why),
        };
        if !self.admission.admits(env.kind, &env.sender) {
            let (kind, who) = (env.kind.as_str(), hex::encode(&env.sender[..8]));
            return reject(R::Unadmitted, format!("{kind} from {who}, not admitted"));
        }
        if env.kind == Kind::ProofSubmission && !self.admission.registered(&env.sender) {
            return Verdict::Ignore(IgnoreReason::Unregistered);
        }
        if now_ms.saturating_sub(env.timestamp_ms) > self.cfg.max_age_ms {
            let age = now_ms - env.timestamp_ms;
            return reject(R::Stale, format!("sent {age} ms ago"));
        }
        if env.timestamp_ms.saturating_sub(now_ms) > self.cfg.max_future_ms {
            let ahead = env.timestamp_ms - now_ms;
            return reject(R::FromFuture, format!("timestamp {ahead} ms ahead"));
        }
        if let Err(e) = env.verify() {
            return reject(R::BadSignature, e.to_string());
        }
        if env.sender == self.own {
            return Verdict::Ignore(IgnoreReason::OwnMessage);
        }
        let (rate, burst) = (self.cfg.rate_per_sec, self.cfg.rate_burst);
        let state = self
            .senders
            .get_or_insert_with(&env.sender, || SenderState {
                replay: ReplayWindow::default(),
                bucket: TokenBucket {
                    tokens: burst,
                    last_ms: now_ms,
                },
            });
        if !state.replay.check_and_mark(env.sequence) {
            return reject(
                R::Replay,
                format!("sequence {} seen or too old", env.sequence),
            );
        }
        if !state.bucket.take(now_ms, rate, burst) {
            return reject(R::RateLimited, format!("over {rate} messages/s"));
        }
        let message = match Self::payload(&env) {
            Ok(m) => m,
            Err((r, why)) => return reject(r, why),
        };
        if let Message::Challenge(c) = &message {
            if c.deadline_ms <= now_ms {
                return Verdict::Ignore(IgnoreReason::Expired);
            }
        }
        if let (Message::Register(r), Some(rule)) = (&message, self.admission.registration) {
            let epoch = |t: u64| t / rule.epoch_ms.max(1);
            if r.epoch > epoch(now_ms + self.cfg.max_future_ms) {
                return reject(
                    R::InvalidPayload,
                    format!("registration for epoch {}, ahead", r.epoch),
                );
            }
            if r.epoch.saturating_add(1) < epoch(now_ms) {
                return Verdict::Ignore(IgnoreReason::Expired);
            }
            let bits = r.work_bits(&self.net.genesis, &env.sender);
            if bits < rule.work_bits {
                let need = rule.work_bits;
                return reject(
                    R::InvalidPayload,
                    format!("registration with {bits} bits of work, {need} needed"),
                );
            }
            if self.admission.miners.is_some() && self.admission.registered(&env.sender) {
                return Verdict::Ignore(IgnoreReason::Registered);
            }
        }
        Verdict::Accept(Box::new(Verified {
            sender: env.sender,
            timestamp_ms: env.timestamp_ms,
            sequence: env.sequence,
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn replay_window_matches_a_set_of_seen_sequences() {
        // A seeded walk of sequences that jumps ahead, back and repeats.
        let mut w = ReplayWindow::default();
        let mut seen = HashSet::new();
        let mut high = 0u64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = match x % 4 {
                0 => high + 1 + x % 70,
                1 => high.saturating_sub(x % 1100),
                2 => high + 1 + x % 2000,
                _ => high.saturating_sub(x % 64),
            };
            let expect = !seen.contains(&seq) && (seq > high || high - seq < REPLAY_WINDOW);
            assert_eq!(w.check_and_mark(seq), expect, "seq {seq} high {high}");
            if expect {
                seen.insert(seq);
                high = high.max(seq);
            }
        }
    }
}
