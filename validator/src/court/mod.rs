//! The court: disputed inference, end to end, as every node keeps it.
//!
//! 1. An inference node publishes a [`Claim`] (model, input, output, the Merkle root over
//!    its state hashes at every cut) and locks a bond.
//! 2. Within the claim's window, an admitted challenger that got another result publishes a
//!    [`DisputeOpen`] with its own trace root, and locks a bond.
//! 3. Bisection ([`bisect`]): each round asks both sides for their state hashes at a few
//!    cuts ([`bisect::query`]); each side answers with a [`DisputeReveal`] whose hashes
//!    are proved against its own root. The first cut where they differ narrows the range,
//!    until one segment is left: its input state is agreed, its output state is not. Each
//!    side has `round_ms` per round; a side that does not answer in time loses.
//! 4. The leaf: each validator fetches the agreed input state ([`LeafState`]) from either
//!    side by request-response ([`Action::FetchLeaf`]; or from another validator that has
//!    it), checks it against the agreed hash, and issues it as a challenge of its own,
//!    which miners race like any other (key-bound, scored). The proven output's state hash matches one
//!    side, both or neither: that is the verdict. With no valid proof by the deadline the
//!    validator executes the segment itself.
//! 5. Each validator publishes an [`Attestation`]; when validators with at least 2/3 of
//!    the genesis stake attest the same verdict, it is final, and the bonds are settled in
//!    one transaction ([`bank`]).
//!
//! Every record is in sled and written on every change, so a node killed mid-dispute
//! resumes it. Rules that every node applies (bonds, reveals, finality) run everywhere; only
//! a referee (a validator) issues leaves and attests.
//!
//! A node that was down missed claims, disputes and attestations for good: gossip does not
//! replay. The court keeps every one it accepted as the signed envelope it came in
//! ([`Court::archive`]) and serves them to peers catching up ([`Court::archived`]); a node
//! catching up applies what peers send ([`Court::apply_synced`]) as of the time each was
//! signed, so it locks and settles the same bonds. A dispute it first hears of that way it
//! only observes: it never missed a clock it kept, so it never keeps one for it, and never
//! attests it.

pub mod bank;
pub mod bisect;

use std::collections::BTreeMap;

use provnet_kernels::trace::{self, MerkleProof, MerkleTree};
use provnet_wire::{
    Attestation, Claim, Digest, DisputeOpen, DisputeReveal, DisputeVerdict, LeafState, Message,
    PublicKey,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::store::{Result, Store};
use bank::{Bonds, Settlement};

/// The genesis's dispute rules (`[disputes]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CourtParams {
    /// Smallest bond a claim may carry.
    pub claim_bond: u64,
    /// Smallest bond a dispute may carry.
    pub dispute_bond: u64,
    /// How long a claim may be disputed (ms from its receipt).
    pub window_ms: u64,
    /// Each side's clock per bisection round, and for the leaf's state.
    pub round_ms: u64,
    /// The leaf challenge's deadline.
    pub leaf_ms: u64,
    /// Pieces a range is cut into per round.
    pub arity: u32,
    /// Percent of a slashed bond paid to the side that won.
    pub winner_percent: u8,
    /// Percent of the slashed bonds paid to the miner whose proof decided.
    pub miner_percent: u8,
    /// A dispute not final this long after it opened is abandoned: both bonds go back.
    pub abandon_ms: u64,
    /// Finished claims and their disputes are kept this long, then pruned.
    pub keep_ms: u64,
}

impl Default for CourtParams {
    fn default() -> Self {
        CourtParams {
            claim_bond: 100,
            dispute_bond: 100,
            window_ms: 30_000,
            round_ms: 10_000,
            leaf_ms: 15_000,
            arity: 128,
            winner_percent: 50,
            miner_percent: 10,
            abandon_ms: 600_000,
            keep_ms: 3_600_000,
        }
    }
}

/// Claims open at once, at most (each also locks a bond).
pub const MAX_OPEN_CLAIMS: usize = 16_384;
/// Disputes running at once, at most.
pub const MAX_OPEN_DISPUTES: usize = 1_024;
/// Disputes of one claim, at most.
pub const MAX_DISPUTES_PER_CLAIM: usize = 8;
/// Open claims of one claimant, and running disputes of one challenger, at most: one rich
/// account cannot fill the court's bounds for everyone else.
pub const MAX_OPEN_PER_ACCOUNT: usize = 1_024;

/// Messages held because they came before what they refer to (gossip from different
/// senders is not ordered): at most this many per claim or dispute, per sender, in all.
const EARLY_PER_KEY: usize = 8;
const EARLY_PER_SENDER: usize = 32;
const EARLY_MAX: usize = 1_024;
/// A held message is dropped after this long.
const EARLY_TTL_MS: u64 = 60_000;

/// A message that came before its claim, its dispute or its round.
#[derive(Clone, Debug)]
enum Early {
    Dispute(DisputeOpen),
    Reveal(DisputeReveal),
    Attest(Attestation),
}

/// Who a court works for.
#[derive(Clone, Debug)]
pub struct CourtConfig {
    pub params: CourtParams,
    /// The genesis validators and their stake: attestations count by it.
    pub stake: BTreeMap<PublicKey, u64>,
    /// This node's key.
    pub me: PublicKey,
    /// Whether this node referees (a validator): issues leaves and attests.
    pub referee: bool,
    /// The cuts (segments + 1) of each genesis model.
    pub models: BTreeMap<[u8; 32], u32>,
}

/// Runs one segment natively: the referee's fallback when no proof came in time.
pub trait SegmentRunner {
    fn run(&self, model_id: &[u8; 32], segment: u32, input: &[i64]) -> Option<Vec<i64>>;
}

/// What the node must do for the court.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Issue the leaf as this validator's own challenge (watched), then
    /// [`Court::leaf_issued`].
    IssueLeaf {
        dispute: [u8; 32],
        model_id: [u8; 32],
        segment: u32,
        input: Vec<i64>,
    },
    /// Publish this (this node's attestation; the court has counted it already).
    Publish(Message),
    /// Fetch the agreed state at `cut` (a referee's), asking `from` in order (the
    /// claimant, the challenger, then the other validators), and give what comes to
    /// [`Court::on_leaf_state`]; if none gives it, [`Court::leaf_unavailable`].
    FetchLeaf {
        dispute: [u8; 32],
        cut: u32,
        /// The agreed state hash at `cut`: an answer that does not hash to it is no answer.
        hash: [u8; 32],
        from: Vec<PublicKey>,
    },
}

/// What a side of a dispute owes it now: its state hashes at `points` (with Merkle proofs
/// unless `full`). At the leaf a side owes nothing it must send: it serves the state
/// when referees ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owed {
    pub dispute: [u8; 32],
    pub claim: [u8; 32],
    pub round: u32,
    pub points: Vec<u32>,
    pub full: bool,
}

/// Why the court refused a message (counted by [`CourtRefusal::as_str`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CourtRefusal {
    #[error("the model is not in the genesis")]
    UnknownModel,
    #[error("the claim says {got} cuts, the model has {want}")]
    WrongCuts { got: u32, want: u32 },
    #[error("a bond of {got}, at least {need} needed")]
    BondTooSmall { got: u64, need: u64 },
    #[error("the balance cannot cover the bond")]
    InsufficientBalance,
    #[error("seen already")]
    Duplicate,
    #[error("no such claim")]
    UnknownClaim,
    #[error("no such dispute")]
    UnknownDispute,
    #[error("the claim's dispute window has closed")]
    WindowClosed,
    #[error("the dispute's trace root is the claim's: nothing is disputed")]
    SameTrace,
    #[error("the claim was already overturned")]
    Overturned,
    #[error("too many claims or disputes open")]
    Full,
    #[error("the sender is neither side of this dispute")]
    NotASide,
    #[error("not the round the dispute is in")]
    WrongRound,
    #[error("a reveal that does not hold: {0}")]
    BadReveal(String),
    #[error("the state does not hash to the agreed state: {0}")]
    BadLeaf(String),
    #[error("the dispute is not waiting for that")]
    NotWaiting,
    #[error("not a genesis validator")]
    NotAValidator,
}

impl CourtRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            CourtRefusal::UnknownModel => "unknown_model",
            CourtRefusal::WrongCuts { .. } => "wrong_cuts",
            CourtRefusal::BondTooSmall { .. } => "bond_too_small",
            CourtRefusal::InsufficientBalance => "insufficient_balance",
            CourtRefusal::Duplicate => "duplicate",
            CourtRefusal::UnknownClaim => "unknown_claim",
            CourtRefusal::UnknownDispute => "unknown_dispute",
            CourtRefusal::WindowClosed => "window_closed",
            CourtRefusal::SameTrace => "same_trace",
            CourtRefusal::Overturned => "overturned",
            CourtRefusal::Full => "full",
            CourtRefusal::NotASide => "not_a_side",
            CourtRefusal::WrongRound => "wrong_round",
            CourtRefusal::BadReveal(_) => "bad_reveal",
            CourtRefusal::BadLeaf(_) => "bad_leaf",
            CourtRefusal::NotWaiting => "not_waiting",
            CourtRefusal::NotAValidator => "not_a_validator",
        }
    }
}

/// A claim as the court keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub id: [u8; 32],
    pub claimant: PublicKey,
    pub claim: Claim,
    pub received_ms: u64,
    pub disputes: Vec<[u8; 32]>,
    /// A dispute's final verdict took its bond.
    pub overturned: bool,
    /// Its bond went back (window over, no dispute running, not overturned) or was taken.
    pub finished_ms: Option<u64>,
}

/// Where a dispute stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Round `round` of the range `lo..=hi` asks for `points`; `got` is each side's
    /// answer (claimant, challenger).
    Bisect {
        round: u32,
        lo: u32,
        hi: u32,
        points: Vec<u32>,
        got: [bool; 2],
        deadline_ms: u64,
    },
    /// Segment `segment` is the leaf; its input state, once known, and the proof's clock.
    Leaf {
        segment: u32,
        state: Option<Vec<Vec<i64>>>,
        deadline_ms: u64,
        /// When this referee's leaf challenge expires (none yet: not issued since start).
        #[serde(skip)]
        proof_deadline_ms: Option<u64>,
        /// This referee is fetching the state (not since start).
        #[serde(skip)]
        fetching: bool,
    },
    /// This node's verdict is in; attestations decide.
    Decided,
}

/// A verdict with what it rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: DisputeVerdict,
    pub segment: Option<u32>,
    pub prover: Option<PublicKey>,
}

/// A dispute as the court keeps it: its whole transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRecord {
    pub id: [u8; 32],
    pub claim_id: [u8; 32],
    pub claimant: PublicKey,
    pub challenger: PublicKey,
    /// The challenger's trace root.
    pub root: [u8; 32],
    pub bond: u64,
    pub opened_ms: u64,
    pub stage: Stage,
    /// Every state hash each side revealed (claimant, challenger), by cut.
    pub known: [BTreeMap<u32, [u8; 32]>; 2],
    /// Rounds played.
    pub rounds: u32,
    /// This node's verdict.
    pub local: Option<Decision>,
    pub decided_ms: Option<u64>,
    /// Each validator's attestation.
    pub attestations: BTreeMap<PublicKey, Decision>,
    /// The verdict validators with 2/3 of the stake attest, once they do.
    pub final_verdict: Option<Decision>,
    pub final_ms: Option<u64>,
    /// No final verdict in time: both bonds went back.
    pub abandoned: bool,
    /// What the settlement took from the losing bonds.
    #[serde(default)]
    pub slashed: u64,
    /// When bisection ended at the leaf (Unix ms).
    #[serde(default)]
    pub leaf_from_ms: Option<u64>,
    /// First heard of from a peer catching this node up: observed, never refereed here.
    #[serde(default)]
    pub observed: bool,
}

impl DisputeRecord {
    pub fn finished(&self) -> bool {
        self.final_verdict.is_some() || self.abandoned
    }
}

/// Counts for operators.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CourtCounters {
    pub refused: BTreeMap<String, u64>,
    pub verdicts: BTreeMap<String, u64>,
    /// Open to final, ms, newest last (at most 256).
    pub ms_to_verdict: Vec<u64>,
    /// Open to final, seconds, all of them.
    pub verdict_seconds: provnet_wire::status::Histogram,
}

/// Buckets of [`CourtCounters::verdict_seconds`].
pub const VERDICT_SECONDS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What applying a peer's envelopes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncedReport {
    pub applied: usize,
    /// Already known here.
    pub duplicate: usize,
    /// Refused by the court's rules, by reason.
    pub refused: BTreeMap<String, u64>,
}

pub struct Court {
    cfg: CourtConfig,
    claims_tree: sled::Tree,
    disputes_tree: sled::Tree,
    /// Every claim, dispute and attestation accepted, as signed: key = signed ms (big
    /// endian) ++ 8 bytes of the envelope's hash.
    archive_tree: sled::Tree,
    /// Set while applying a peer's envelopes: disputes opened then are only observed.
    syncing: bool,
    bank: Box<dyn Bonds + Send>,
    claims: BTreeMap<[u8; 32], ClaimRecord>,
    disputes: BTreeMap<[u8; 32], DisputeRecord>,
    counters: CourtCounters,
    /// Early messages, by the claim (disputes) or dispute (reveals, leaf states) they
    /// wait for: (sender, message, when held).
    early: BTreeMap<[u8; 32], Vec<(PublicKey, Early, u64)>>,
    /// What replaying held messages asked for, until [`Court::take_actions`].
    actions: Vec<Action>,
}

const SIDES: [&str; 2] = ["claimant", "challenger"];

fn short(b: &[u8]) -> String {
    hex::encode(&b[..8.min(b.len())])
}

impl Court {
    /// Opens the court's records in `store` (trees `claims` and `disputes`).
    pub fn open(store: &Store, cfg: CourtConfig, bank: Box<dyn Bonds + Send>) -> Result<Court> {
        let claims_tree = store.tree("claims")?;
        let disputes_tree = store.tree("disputes")?;
        let archive_tree = store.tree("court_archive")?;
        let claims = Store::all::<ClaimRecord>(&claims_tree, "claims")?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let disputes = Store::all::<DisputeRecord>(&disputes_tree, "disputes")?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        Ok(Court {
            cfg,
            claims_tree,
            disputes_tree,
            archive_tree,
            syncing: false,
            bank,
            claims,
            disputes,
            counters: CourtCounters {
                verdict_seconds: provnet_wire::status::Histogram::with_bounds(&VERDICT_SECONDS),
                ..Default::default()
            },
            early: BTreeMap::new(),
            actions: Vec::new(),
        })
    }

    pub fn params(&self) -> &CourtParams {
        &self.cfg.params
    }

    pub fn claims(&self) -> &BTreeMap<[u8; 32], ClaimRecord> {
        &self.claims
    }

    pub fn disputes(&self) -> &BTreeMap<[u8; 32], DisputeRecord> {
        &self.disputes
    }

    pub fn counters(&self) -> &CourtCounters {
        &self.counters
    }

    pub fn bank(&self) -> &dyn Bonds {
        self.bank.as_ref()
    }

    fn refuse<T>(&mut self, r: CourtRefusal) -> Result<std::result::Result<T, CourtRefusal>> {
        *self
            .counters
            .refused
            .entry(r.as_str().to_string())
            .or_default() += 1;
        Ok(Err(r))
    }

    /// Keeps a message that came before what it refers to, to apply when that comes
    /// (bounded per key, per sender and in all; the oldest go first).
    fn hold(&mut self, key: [u8; 32], sender: &PublicKey, m: Early, now_ms: u64) {
        let per_sender = self
            .early
            .values()
            .flatten()
            .filter(|(s, _, _)| s == sender)
            .count();
        let held: usize = self.early.values().map(Vec::len).sum();
        let list = self.early.entry(key).or_default();
        if list.len() >= EARLY_PER_KEY || per_sender >= EARLY_PER_SENDER {
            return;
        }
        if held >= EARLY_MAX {
            if let Some(oldest) = self
                .early
                .iter()
                .filter_map(|(k, v)| v.first().map(|(_, _, t)| (*t, *k)))
                .min()
                .map(|(_, k)| k)
            {
                if let Some(v) = self.early.get_mut(&oldest) {
                    v.remove(0);
                }
            }
        }
        *self
            .counters
            .refused
            .entry("held_early".into())
            .or_default() += 1;
        self.early
            .entry(key)
            .or_default()
            .push((*sender, m, now_ms));
    }

    /// Applies what was held for `key` (a claim or a dispute that just arrived or moved
    /// on); what is still early is held again. Actions it causes wait for
    /// [`Court::take_actions`].
    fn replay(&mut self, key: &[u8; 32], now_ms: u64) -> Result<()> {
        let Some(held) = self.early.remove(key) else {
            return Ok(());
        };
        for (sender, m, _) in held {
            match m {
                Early::Dispute(d) => {
                    let _ = self.on_dispute(&sender, &d, now_ms)?;
                }
                Early::Reveal(r) => {
                    if let Ok(a) = self.on_reveal(&sender, &r, now_ms)? {
                        self.actions.extend(a);
                    }
                }
                Early::Attest(a) => {
                    let _ = self.on_attestation(&sender, &a, now_ms)?;
                }
            }
        }
        Ok(())
    }

    /// Whether this node referees dispute `id`: a validator that did not first hear of it
    /// from a peer catching it up.
    fn referees(&self, id: &[u8; 32]) -> bool {
        self.cfg.referee && self.disputes.get(id).is_some_and(|d| !d.observed)
    }

    /// Keeps the signed envelope of a claim, dispute or attestation this court accepted
    /// (`signed_ms`: its timestamp), for peers that catch up.
    pub fn archive(&mut self, signed_ms: u64, envelope: &[u8]) -> Result<()> {
        let mut key = signed_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&blake3::hash(envelope).as_bytes()[..8]);
        self.archive_tree.insert(key, envelope)?;
        Ok(())
    }

    /// Archived envelopes signed at or after `since_ms`, oldest first, up to `max_bytes`
    /// (at least one); and the time to ask from again when it stopped there.
    pub fn archived(&self, since_ms: u64, max_bytes: usize) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        Store::capped(self.archive_tree.range(since_ms.to_be_bytes()..), max_bytes)
    }

    /// When the newest archived envelope was signed.
    pub fn last_archived_ms(&self) -> Result<Option<u64>> {
        Ok(self
            .archive_tree
            .last()?
            .map(|(k, _)| u64::from_be_bytes(k[..8].try_into().expect("8-byte prefix"))))
    }

    /// Applies what peers sent a node catching up: (author, message, signed ms, envelope),
    /// each checked by signature already, applied as of the time its author signed it,
    /// under the same rules as live gossip. What is accepted is archived here
    /// too. Disputes first heard of here are only observed.
    pub fn apply_synced(
        &mut self,
        mut msgs: Vec<(PublicKey, Message, u64, Vec<u8>)>,
    ) -> Result<SyncedReport> {
        // Claims, then disputes, then attestations, each in the order signed: what a
        // message refers to is always there first, whatever the authors' clocks say.
        let rank = |m: &Message| match m {
            Message::Claim(_) => 0,
            Message::DisputeOpen(_) => 1,
            _ => 2,
        };
        msgs.sort_by_key(|(_, m, at, _)| (rank(m), *at));
        let mut report = SyncedReport::default();
        self.syncing = true;
        let result = (|| {
            for (sender, m, at, envelope) in &msgs {
                let taken = match m {
                    Message::Claim(c) => self.on_claim(sender, c, *at)?.map(|_| ()),
                    Message::DisputeOpen(d) => self.on_dispute(sender, d, *at)?.map(|_| ()),
                    Message::Attestation(a) => self.on_attestation(sender, a, *at)?,
                    _ => continue,
                };
                match taken {
                    Ok(()) => {
                        report.applied += 1;
                        self.archive(*at, envelope)?;
                    }
                    Err(CourtRefusal::Duplicate) => report.duplicate += 1,
                    Err(r) => *report.refused.entry(r.as_str().into()).or_default() += 1,
                }
            }
            Ok(())
        })();
        self.syncing = false;
        // Observed disputes ask nothing of this node.
        self.actions.clear();
        result.map(|()| report)
    }

    /// What applying held messages asked for since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn save_claim(&self, id: &[u8; 32]) -> Result<()> {
        match self.claims.get(id) {
            Some(c) => Store::put(&self.claims_tree, id, c),
            None => Ok(()),
        }
    }

    fn save_dispute(&self, id: &[u8; 32]) -> Result<()> {
        match self.disputes.get(id) {
            Some(d) => Store::put(&self.disputes_tree, id, d),
            None => Ok(()),
        }
    }

    /// A claim from gossip (or this node's own): its bond is locked.
    pub fn on_claim(
        &mut self,
        claimant: &PublicKey,
        c: &Claim,
        now_ms: u64,
    ) -> Result<std::result::Result<[u8; 32], CourtRefusal>> {
        let id = c.id(claimant);
        let Some(&cuts) = self.cfg.models.get(&c.model_id) else {
            return self.refuse(CourtRefusal::UnknownModel);
        };
        if c.cuts != cuts {
            return self.refuse(CourtRefusal::WrongCuts {
                got: c.cuts,
                want: cuts,
            });
        }
        if c.bond < self.cfg.params.claim_bond {
            let need = self.cfg.params.claim_bond;
            return self.refuse(CourtRefusal::BondTooSmall { got: c.bond, need });
        }
        if self.claims.contains_key(&id) {
            return self.refuse(CourtRefusal::Duplicate);
        }
        let (all, mine) = self
            .claims
            .values()
            .filter(|c| c.finished_ms.is_none())
            .fold((0, 0), |(a, m), c| {
                (a + 1, m + usize::from(c.claimant == *claimant))
            });
        if all >= MAX_OPEN_CLAIMS || mine >= MAX_OPEN_PER_ACCOUNT {
            return self.refuse(CourtRefusal::Full);
        }
        if !self.bank.lock(&id, claimant, c.bond)? {
            return self.refuse(CourtRefusal::InsufficientBalance);
        }
        self.claims.insert(
            id,
            ClaimRecord {
                id,
                claimant: *claimant,
                claim: c.clone(),
                received_ms: now_ms,
                disputes: Vec::new(),
                overturned: false,
                finished_ms: None,
            },
        );
        self.save_claim(&id)?;
        self.replay(&id, now_ms)?;
        Ok(Ok(id))
    }

    /// A dispute of a claim: the challenger's bond is locked and round 0 opens.
    pub fn on_dispute(
        &mut self,
        challenger: &PublicKey,
        d: &DisputeOpen,
        now_ms: u64,
    ) -> Result<std::result::Result<[u8; 32], CourtRefusal>> {
        let id = d.id(challenger);
        let Some(claim) = self.claims.get(&d.claim_id) else {
            self.hold(d.claim_id, challenger, Early::Dispute(d.clone()), now_ms);
            return self.refuse(CourtRefusal::UnknownClaim);
        };
        let p = &self.cfg.params;
        let refusal = if self.disputes.contains_key(&id) {
            Some(CourtRefusal::Duplicate)
        } else if claim.overturned {
            Some(CourtRefusal::Overturned)
        } else if claim.finished_ms.is_some()
            || now_ms > claim.received_ms.saturating_add(p.window_ms)
        {
            Some(CourtRefusal::WindowClosed)
        } else if d.trace_root == claim.claim.trace_root {
            Some(CourtRefusal::SameTrace)
        } else if d.bond < p.dispute_bond {
            Some(CourtRefusal::BondTooSmall {
                got: d.bond,
                need: p.dispute_bond,
            })
        } else if claim.disputes.len() >= MAX_DISPUTES_PER_CLAIM
            || self.disputes.values().filter(|d| !d.finished()).count() >= MAX_OPEN_DISPUTES
            || self
                .disputes
                .values()
                .filter(|d| !d.finished() && d.challenger == *challenger)
                .count()
                >= MAX_OPEN_PER_ACCOUNT
        {
            Some(CourtRefusal::Full)
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.refuse(r);
        }
        if !self.bank.lock(&id, challenger, d.bond)? {
            return self.refuse(CourtRefusal::InsufficientBalance);
        }
        let cuts = claim.claim.cuts;
        let claimant = claim.claimant;
        let arity = p.arity;
        let deadline_ms = now_ms.saturating_add(p.round_ms);
        let record = DisputeRecord {
            id,
            claim_id: d.claim_id,
            claimant,
            challenger: *challenger,
            root: d.trace_root,
            bond: d.bond,
            opened_ms: now_ms,
            stage: Stage::Bisect {
                round: 0,
                lo: 0,
                hi: cuts - 1,
                points: bisect::query(0, 0, cuts - 1, cuts, arity),
                got: [false; 2],
                deadline_ms,
            },
            known: Default::default(),
            rounds: 0,
            local: None,
            decided_ms: None,
            attestations: BTreeMap::new(),
            final_verdict: None,
            final_ms: None,
            abandoned: false,
            slashed: 0,
            leaf_from_ms: None,
            observed: self.syncing,
        };
        info!(target: "court", dispute = %short(&id), claim = %short(&d.claim_id), challenger = %short(challenger), "dispute opened");
        self.disputes.insert(id, record);
        if let Some(c) = self.claims.get_mut(&d.claim_id) {
            c.disputes.push(id);
        }
        self.save_claim(&d.claim_id)?;
        self.save_dispute(&id)?;
        self.replay(&id, now_ms)?;
        Ok(Ok(id))
    }

    /// One side's answer to a round. A reveal that does not hold is refused (and counted);
    /// the side may still send a good one before its clock runs out.
    pub fn on_reveal(
        &mut self,
        sender: &PublicKey,
        r: &DisputeReveal,
        now_ms: u64,
    ) -> Result<std::result::Result<Vec<Action>, CourtRefusal>> {
        let Some(d) = self.disputes.get(&r.dispute_id) else {
            self.hold(r.dispute_id, sender, Early::Reveal(r.clone()), now_ms);
            return self.refuse(CourtRefusal::UnknownDispute);
        };
        let side = if *sender == d.claimant {
            0
        } else if *sender == d.challenger {
            1
        } else {
            return self.refuse(CourtRefusal::NotASide);
        };
        let Stage::Bisect {
            round, points, got, ..
        } = &d.stage
        else {
            return self.refuse(CourtRefusal::NotWaiting);
        };
        if r.round != *round {
            if r.round > *round {
                // The round this node has not reached yet: a reveal of the round before
                // is still on its way here.
                self.hold(r.dispute_id, sender, Early::Reveal(r.clone()), now_ms);
            }
            return self.refuse(CourtRefusal::WrongRound);
        }
        if got[side] {
            return self.refuse(CourtRefusal::Duplicate);
        }
        let claim = &self.claims[&d.claim_id].claim;
        let root = if side == 0 { claim.trace_root } else { d.root };
        let hashes: Vec<[u8; 32]> = r.hashes.iter().map(|h| h.0).collect();
        if let Err(why) = check_reveal(*round, claim.cuts, points, &root, &hashes, &r.proofs)
            .and_then(|()| consistent(&d.known[side], points, &hashes))
        {
            warn!(target: "court", dispute = %short(&r.dispute_id), side = SIDES[side], "reveal refused: {why}");
            return self.refuse(CourtRefusal::BadReveal(why));
        }
        let points = points.clone();
        let input_state = trace::leaf(0, &claim.input);
        let output_state = trace::leaf(claim.cuts as usize - 1, &claim.output);
        let last = claim.cuts - 1;
        let d = self.disputes.get_mut(&r.dispute_id).expect("looked up");
        for (k, h) in points.iter().zip(&hashes) {
            d.known[side].insert(*k, *h);
        }
        if let Stage::Bisect { got, .. } = &mut d.stage {
            got[side] = true;
        }
        // What a side's own revealed trace says against the claim settles it at once: a
        // trace that does not start from the claim's input, or (the claimant's) that does
        // not end at the output it claimed.
        let mut decided = None;
        if d.known[side].get(&0).is_some_and(|h| *h != input_state) {
            decided = Some(if side == 0 {
                DisputeVerdict::ClaimantWrong
            } else {
                DisputeVerdict::ChallengerWrong
            });
        } else if side == 0 && d.known[0].get(&last).is_some_and(|h| *h != output_state) {
            decided = Some(DisputeVerdict::ClaimantWrong);
        }
        let mut actions = match decided {
            Some(v) => self.decide(&r.dispute_id, v, None, None, now_ms)?,
            None => self.advance(&r.dispute_id, now_ms)?,
        };
        self.save_dispute(&r.dispute_id)?;
        self.replay(&r.dispute_id, now_ms)?;
        actions.extend(self.take_actions());
        Ok(Ok(actions))
    }

    /// Both sides answered the round: narrow the range, to the next round or the leaf.
    fn advance(&mut self, id: &[u8; 32], now_ms: u64) -> Result<Vec<Action>> {
        let (arity, round_ms) = (self.cfg.params.arity, self.cfg.params.round_ms);
        let d = self.disputes.get_mut(id).expect("caller looked it up");
        let Stage::Bisect {
            round,
            points,
            got: [true, true],
            ..
        } = &d.stage
        else {
            return Ok(Vec::new());
        };
        let (round, points) = (*round, points.clone());
        let a: Vec<[u8; 32]> = points.iter().map(|k| d.known[0][k]).collect();
        let b: Vec<[u8; 32]> = points.iter().map(|k| d.known[1][k]).collect();
        d.rounds = round + 1;
        let Some((lo, hi)) = bisect::narrow(&points, &a, &b) else {
            // Same states everywhere asked, the output included: the challenger disputes
            // a result its own trace agrees with.
            return self.decide(id, DisputeVerdict::ChallengerWrong, None, None, now_ms);
        };
        let cuts = self.claims[&d.claim_id].claim.cuts;
        if hi == lo + 1 {
            let input = self.claims[&d.claim_id].claim.input.clone();
            d.leaf_from_ms = Some(now_ms);
            d.stage = Stage::Leaf {
                segment: lo,
                state: (lo == 0).then(|| vec![input]),
                deadline_ms: now_ms.saturating_add(round_ms),
                proof_deadline_ms: None,
                fetching: false,
            };
            info!(target: "court", dispute = %short(id), segment = lo, rounds = round + 1, "bisection done: the leaf is one segment");
            let mut actions = self.issue_leaf(id);
            actions.extend(self.fetch_leaf(id));
            return Ok(actions);
        }
        d.stage = Stage::Bisect {
            round: round + 1,
            lo,
            hi,
            points: bisect::query(round + 1, lo, hi, cuts, arity),
            got: [false; 2],
            deadline_ms: now_ms.saturating_add(round_ms),
        };
        Ok(Vec::new())
    }

    /// The agreed state at the leaf's input cut, as a referee fetched it from `from`
    /// (either side, or another referee: it is checked against the agreed hash, so who
    /// gave it does not matter).
    pub fn on_leaf_state(
        &mut self,
        from: &PublicKey,
        l: &LeafState,
    ) -> Result<std::result::Result<Vec<Action>, CourtRefusal>> {
        let Some(d) = self.disputes.get(&l.dispute_id) else {
            return self.refuse(CourtRefusal::UnknownDispute);
        };
        let Stage::Leaf {
            segment,
            state: None,
            ..
        } = &d.stage
        else {
            return self.refuse(CourtRefusal::NotWaiting);
        };
        if l.cut != *segment {
            let why = format!("cut {}, the leaf starts at {segment}", l.cut);
            return self.refuse(CourtRefusal::BadLeaf(why));
        }
        let agreed = d.known[0].get(segment).copied();
        let views: Vec<&[i64]> = l.tensors.iter().map(Vec::as_slice).collect();
        let got = trace::state_hash(l.cut as usize, &views);
        if agreed != Some(got) {
            let why = format!("hash {} is not the agreed state", short(&got));
            warn!(target: "court", dispute = %short(&l.dispute_id), from = %short(from), "leaf state refused: {why}");
            return self.refuse(CourtRefusal::BadLeaf(why));
        }
        if l.tensors.len() != 1 {
            let why = "a state of several tensors: segments take one".to_string();
            return self.refuse(CourtRefusal::BadLeaf(why));
        }
        let id = l.dispute_id;
        if let Some(d) = self.disputes.get_mut(&id) {
            if let Stage::Leaf {
                state, fetching, ..
            } = &mut d.stage
            {
                *state = Some(l.tensors.clone());
                *fetching = false;
            }
        }
        self.save_dispute(&id)?;
        Ok(Ok(self.issue_leaf(&id)))
    }

    /// Nobody gave the leaf state this referee asked for: it asks again at the next tick,
    /// until the leaf's clock runs out.
    pub fn leaf_unavailable(&mut self, dispute: &[u8; 32]) {
        if let Some(Stage::Leaf { fetching, .. }) =
            self.disputes.get_mut(dispute).map(|d| &mut d.stage)
        {
            *fetching = false;
        }
    }

    /// The state this node holds at `cut` of a dispute's leaf, for a referee that asks
    /// (a referee serves what it fetched; sides serve from their own runs).
    pub fn leaf_held(&self, dispute: &[u8; 32], cut: u32) -> Option<&[Vec<i64>]> {
        match &self.disputes.get(dispute)?.stage {
            Stage::Leaf {
                segment,
                state: Some(state),
                ..
            } if *segment == cut => Some(state),
            _ => None,
        }
    }

    /// The fetch of the leaf state, for a referee that lacks it and is not fetching.
    fn fetch_leaf(&mut self, id: &[u8; 32]) -> Vec<Action> {
        if !self.referees(id) {
            return Vec::new();
        }
        let me = self.cfg.me;
        let referees = self.cfg.stake.keys().filter(|v| **v != me);
        let Some(d) = self.disputes.get_mut(id) else {
            return Vec::new();
        };
        let Stage::Leaf {
            segment,
            state: None,
            fetching: fetching @ false,
            ..
        } = &mut d.stage
        else {
            return Vec::new();
        };
        let Some(hash) = d.known[0].get(segment).copied() else {
            return Vec::new();
        };
        *fetching = true;
        let mut from = vec![d.claimant, d.challenger];
        from.extend(referees.filter(|v| !from.contains(v)).collect::<Vec<_>>());
        from.retain(|k| *k != me);
        vec![Action::FetchLeaf {
            dispute: *id,
            cut: *segment,
            hash,
            from,
        }]
    }

    /// The leaf challenge, for a referee that has the state and has not issued it yet.
    fn issue_leaf(&mut self, id: &[u8; 32]) -> Vec<Action> {
        if !self.referees(id) {
            return Vec::new();
        }
        let Some(d) = self.disputes.get(id) else {
            return Vec::new();
        };
        let Stage::Leaf {
            segment,
            state: Some(state),
            proof_deadline_ms: None,
            ..
        } = &d.stage
        else {
            return Vec::new();
        };
        vec![Action::IssueLeaf {
            dispute: *id,
            model_id: self.claims[&d.claim_id].claim.model_id,
            segment: *segment,
            input: state[0].clone(),
        }]
    }

    /// The referee issued the leaf challenge; its proofs are due by `deadline_ms`.
    pub fn leaf_issued(&mut self, dispute: &[u8; 32], deadline_ms: u64) {
        if let Some(d) = self.disputes.get_mut(dispute) {
            if let Stage::Leaf {
                proof_deadline_ms, ..
            } = &mut d.stage
            {
                *proof_deadline_ms = Some(deadline_ms);
            }
        }
    }

    /// The agreed state at the leaf is one no run of the model can reach (outside the
    /// segment's input range, which every segment's circuit enforces on its output): both
    /// traces are wrong before the leaf.
    pub fn leaf_impossible(&mut self, dispute: &[u8; 32], now_ms: u64) -> Result<Vec<Action>> {
        let Some(Stage::Leaf { segment, .. }) = self.disputes.get(dispute).map(|d| &d.stage) else {
            return Ok(Vec::new());
        };
        let segment = *segment;
        info!(target: "court", dispute = %short(dispute), segment, "the agreed state is out of the model's range: both sides are wrong");
        let actions = self.decide(
            dispute,
            DisputeVerdict::BothWrong,
            Some(segment),
            None,
            now_ms,
        )?;
        self.save_dispute(dispute)?;
        Ok(actions)
    }

    /// A valid proof of the leaf (from this validator's engine): the verdict.
    pub fn on_proved(
        &mut self,
        dispute: &[u8; 32],
        miner: &PublicKey,
        output: &[i64],
        now_ms: u64,
    ) -> Result<Vec<Action>> {
        let Some(d) = self.disputes.get(dispute) else {
            return Ok(Vec::new());
        };
        let Stage::Leaf { segment, .. } = d.stage else {
            return Ok(Vec::new());
        };
        let v = leaf_verdict(d, segment, output);
        info!(target: "court", dispute = %short(dispute), segment, miner = %short(miner), verdict = v.as_str(), "the leaf is proved");
        let actions = self.decide(dispute, v, Some(segment), Some(*miner), now_ms)?;
        self.save_dispute(dispute)?;
        Ok(actions)
    }

    /// This node's verdict: recorded, and (a referee's) attested.
    fn decide(
        &mut self,
        id: &[u8; 32],
        verdict: DisputeVerdict,
        segment: Option<u32>,
        prover: Option<PublicKey>,
        now_ms: u64,
    ) -> Result<Vec<Action>> {
        let referee = self.referees(id);
        let me = self.cfg.me;
        let Some(d) = self.disputes.get_mut(id) else {
            return Ok(Vec::new());
        };
        if d.local.is_some() {
            return Ok(Vec::new());
        }
        let decision = Decision {
            verdict,
            segment,
            prover,
        };
        info!(target: "court", dispute = %short(id), verdict = verdict.as_str(), ?segment, "verdict");
        d.local = Some(decision.clone());
        d.decided_ms = Some(now_ms);
        d.stage = Stage::Decided;
        if !referee || !self.cfg.stake.contains_key(&me) {
            return Ok(Vec::new());
        }
        let a = Attestation {
            dispute_id: *id,
            verdict,
            segment,
            prover: prover.map(Digest),
        };
        self.count_attestation(&me, &a, now_ms)?;
        Ok(vec![Action::Publish(Message::Attestation(a))])
    }

    /// A validator's attestation.
    pub fn on_attestation(
        &mut self,
        validator: &PublicKey,
        a: &Attestation,
        now_ms: u64,
    ) -> Result<std::result::Result<(), CourtRefusal>> {
        if !self.cfg.stake.contains_key(validator) {
            return self.refuse(CourtRefusal::NotAValidator);
        }
        let Some(d) = self.disputes.get(&a.dispute_id) else {
            self.hold(a.dispute_id, validator, Early::Attest(a.clone()), now_ms);
            return self.refuse(CourtRefusal::UnknownDispute);
        };
        let same = Decision {
            verdict: a.verdict,
            segment: a.segment,
            prover: a.prover.map(|p| p.0),
        };
        if d.attestations.get(validator) == Some(&same) {
            return self.refuse(CourtRefusal::Duplicate);
        }
        self.count_attestation(validator, a, now_ms)?;
        Ok(Ok(()))
    }

    fn count_attestation(
        &mut self,
        validator: &PublicKey,
        a: &Attestation,
        now_ms: u64,
    ) -> Result<()> {
        let Some(d) = self.disputes.get_mut(&a.dispute_id) else {
            return Ok(());
        };
        if d.finished() {
            return Ok(());
        }
        d.attestations.insert(
            *validator,
            Decision {
                verdict: a.verdict,
                segment: a.segment,
                prover: a.prover.map(|p| p.0),
            },
        );
        let total: u128 = self.cfg.stake.values().map(|s| u128::from(*s)).sum();
        // Stake behind each (verdict, segment); the prover named by the most stake of the
        // winning group is the one paid.
        let mut behind: BTreeMap<(DisputeVerdict, Option<u32>), u128> = BTreeMap::new();
        for (v, dec) in &d.attestations {
            *behind.entry((dec.verdict, dec.segment)).or_default() +=
                u128::from(self.cfg.stake.get(v).copied().unwrap_or(0));
        }
        let Some((&(verdict, segment), _)) = behind
            .iter()
            .find(|(_, s)| **s * 3 >= total * 2 && total > 0)
        else {
            self.save_dispute(&a.dispute_id)?;
            return Ok(());
        };
        let mut provers: BTreeMap<PublicKey, u128> = BTreeMap::new();
        for (v, dec) in &d.attestations {
            if let (true, Some(p)) = ((dec.verdict, dec.segment) == (verdict, segment), dec.prover)
            {
                *provers.entry(p).or_default() +=
                    u128::from(self.cfg.stake.get(v).copied().unwrap_or(0));
            }
        }
        let prover = provers
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(p, _)| *p);
        let decision = Decision {
            verdict,
            segment,
            prover,
        };
        d.final_verdict = Some(decision);
        d.final_ms = Some(now_ms);
        let elapsed = now_ms.saturating_sub(d.opened_ms);
        info!(target: "court", dispute = %short(&a.dispute_id), verdict = verdict.as_str(), ?segment, ms = elapsed, "verdict final");
        *self
            .counters
            .verdicts
            .entry(verdict.as_str().to_string())
            .or_default() += 1;
        if self.counters.ms_to_verdict.len() >= 256 {
            self.counters.ms_to_verdict.remove(0);
        }
        self.counters.ms_to_verdict.push(elapsed);
        self.counters.verdict_seconds.observe(elapsed as f64 / 1e3);
        let id = a.dispute_id;
        self.settle(&id)?;
        Ok(())
    }

    /// Pays out a dispute that is final (or abandoned): one transaction in the bank, under
    /// the dispute's id, so repeating it after a restart changes nothing.
    fn settle(&mut self, id: &[u8; 32]) -> Result<()> {
        let d = self.disputes[id].clone();
        let claim_held = self.bank.held(&d.claim_id)?;
        let mut s = Settlement {
            bonds: vec![*id],
            ..Default::default()
        };
        let p = &self.cfg.params;
        let share = |v: u64, pct: u8| (u128::from(v) * u128::from(pct.min(100)) / 100) as u64;
        let mut overturn = false;
        match &d.final_verdict {
            None => s.pay.push((d.challenger, d.bond)), // abandoned: the bond goes back
            Some(f) => {
                let mut slashed = 0u64;
                if f.verdict.challenger_loses() {
                    slashed += d.bond;
                } else {
                    s.pay.push((d.challenger, d.bond));
                }
                let mut from_claim = 0;
                if f.verdict.claimant_loses() {
                    if let Some((_, bond)) = claim_held {
                        s.bonds.push(d.claim_id);
                        from_claim = bond;
                        slashed += bond;
                    }
                    overturn = true;
                }
                let to_winner = match f.verdict {
                    DisputeVerdict::ClaimantWrong | DisputeVerdict::TimeoutClaimant => {
                        let w = share(from_claim, p.winner_percent);
                        s.pay.push((d.challenger, w));
                        w
                    }
                    DisputeVerdict::ChallengerWrong | DisputeVerdict::TimeoutChallenger => {
                        let w = share(d.bond, p.winner_percent);
                        s.pay.push((d.claimant, w));
                        w
                    }
                    DisputeVerdict::BothWrong => 0,
                };
                let to_miner = match f.prover {
                    Some(m) => {
                        let v = share(slashed, p.miner_percent).min(slashed - to_winner);
                        s.pay.push((m, v));
                        v
                    }
                    None => 0,
                };
                s.burn = slashed - to_winner - to_miner;
                if let Some(d) = self.disputes.get_mut(id) {
                    d.slashed = slashed;
                }
            }
        }
        s.pay.retain(|(_, v)| *v > 0);
        if !self.bank.settle(id, &s)? {
            warn!(target: "court", dispute = %short(id), "settlement refused by the bank: its bonds are not held as recorded");
        }
        if overturn {
            if let Some(c) = self.claims.get_mut(&d.claim_id) {
                c.overturned = true;
                c.finished_ms.get_or_insert(d.final_ms.unwrap_or(0));
            }
            self.save_claim(&d.claim_id)?;
        }
        self.save_dispute(id)?;
        Ok(())
    }

    /// The clocks: rounds and leaves past their deadline, leaf proofs that did not come
    /// (the referee runs the segment itself), claims past their window, disputes never
    /// made final, and records old enough to prune.
    pub fn tick(&mut self, now_ms: u64, runner: &dyn SegmentRunner) -> Result<Vec<Action>> {
        let mut actions = Vec::new();
        let ids: Vec<[u8; 32]> = self
            .disputes
            .iter()
            .filter(|(_, d)| !d.finished())
            .map(|(id, _)| *id)
            .collect();
        // Only referees keep the clocks: a side whose view of a deadline differs from the
        // validators' (a reveal reached it late) must go on answering what they ask.
        for id in ids {
            // What the clocks say, read first; then carried out.
            let referee = self.referees(&id);
            let d = &self.disputes[&id];
            let mut decision = None;
            let mut issue = false;
            let mut fetch = false;
            match &d.stage {
                Stage::Bisect {
                    got, deadline_ms, ..
                } if referee && now_ms > *deadline_ms => {
                    let v = if !got[0] {
                        DisputeVerdict::TimeoutClaimant
                    } else {
                        DisputeVerdict::TimeoutChallenger
                    };
                    info!(target: "court", dispute = %short(&id), verdict = v.as_str(), "a side ran out of time");
                    decision = Some((v, None));
                }
                Stage::Leaf {
                    state: None,
                    deadline_ms,
                    segment,
                    ..
                } if referee && now_ms > *deadline_ms => {
                    // Both sides hold the agreed state: a claimant that does not give it
                    // up loses its claim.
                    decision = Some((DisputeVerdict::TimeoutClaimant, Some(*segment)));
                }
                Stage::Leaf {
                    state: Some(state),
                    proof_deadline_ms: Some(due),
                    segment,
                    ..
                } if referee && now_ms > *due => {
                    let model = self.claims[&d.claim_id].claim.model_id;
                    match runner.run(&model, *segment, &state[0]) {
                        Some(out) => {
                            let v = leaf_verdict(d, *segment, &out);
                            info!(target: "court", dispute = %short(&id), segment, verdict = v.as_str(), "no proof of the leaf in time: executed it here");
                            decision = Some((v, Some(*segment)));
                        }
                        None => {
                            warn!(target: "court", dispute = %short(&id), segment, "no proof of the leaf, and this node cannot run the segment");
                        }
                    }
                }
                Stage::Leaf {
                    proof_deadline_ms: None,
                    state: Some(_),
                    ..
                } => issue = true,
                Stage::Leaf {
                    state: None,
                    fetching: false,
                    ..
                } => fetch = true,
                _ => {}
            }
            let abandon = now_ms > d.opened_ms.saturating_add(self.cfg.params.abandon_ms);
            if let Some((v, segment)) = decision {
                actions.extend(self.decide(&id, v, segment, None, now_ms)?);
                self.save_dispute(&id)?;
            }
            if issue {
                actions.extend(self.issue_leaf(&id));
            }
            if fetch && self.disputes[&id].local.is_none() {
                actions.extend(self.fetch_leaf(&id));
            }
            if abandon && !self.disputes[&id].finished() {
                warn!(target: "court", dispute = %short(&id), "no final verdict in time: abandoned, bonds go back");
                if let Some(d) = self.disputes.get_mut(&id) {
                    d.abandoned = true;
                }
                self.settle(&id)?; // saves the dispute
            }
        }
        self.finish_claims(now_ms)?;
        self.prune(now_ms)?;
        for list in self.early.values_mut() {
            list.retain(|(_, _, at)| now_ms < at.saturating_add(EARLY_TTL_MS));
        }
        self.early.retain(|_, list| !list.is_empty());
        actions.extend(self.take_actions());
        Ok(actions)
    }

    /// Claims past their window with no dispute running: an upheld claim's bond goes back.
    fn finish_claims(&mut self, now_ms: u64) -> Result<()> {
        let window = self.cfg.params.window_ms;
        let due: Vec<[u8; 32]> = self
            .claims
            .values()
            .filter(|c| {
                c.finished_ms.is_none()
                    && now_ms > c.received_ms.saturating_add(window)
                    && c.disputes
                        .iter()
                        .all(|d| self.disputes.get(d).is_none_or(DisputeRecord::finished))
            })
            .map(|c| c.id)
            .collect();
        for id in due {
            let c = &self.claims[&id];
            if let Some((who, bond)) = self.bank.held(&id)? {
                let s = Settlement {
                    bonds: vec![id],
                    pay: vec![(who, bond)],
                    burn: 0,
                };
                self.bank.settle(&id, &s)?;
            }
            info!(target: "court", claim = %short(&id), claimant = %short(&c.claimant), disputes = c.disputes.len(), "claim final: upheld");
            if let Some(c) = self.claims.get_mut(&id) {
                c.finished_ms = Some(now_ms);
            }
            self.save_claim(&id)?;
        }
        Ok(())
    }

    fn prune(&mut self, now_ms: u64) -> Result<()> {
        let keep = self.cfg.params.keep_ms;
        let cutoff = now_ms.saturating_sub(keep).to_be_bytes();
        for k in self.archive_tree.range(..cutoff).keys() {
            self.archive_tree.remove(k?)?;
        }
        let old: Vec<[u8; 32]> = self
            .claims
            .values()
            .filter(|c| {
                c.finished_ms
                    .is_some_and(|f| now_ms > f.saturating_add(keep))
            })
            .filter(|c| {
                c.disputes
                    .iter()
                    .all(|d| self.disputes.get(d).is_none_or(DisputeRecord::finished))
            })
            .map(|c| c.id)
            .collect();
        for id in old {
            if let Some(c) = self.claims.remove(&id) {
                for d in &c.disputes {
                    self.disputes.remove(d);
                    self.disputes_tree.remove(d)?;
                }
            }
            self.claims_tree.remove(id)?;
        }
        Ok(())
    }

    /// The court for operators: counts, and the newest `limit` disputes.
    pub fn status(&self, limit: usize) -> Result<provnet_wire::CourtStatus> {
        let mut disputes: Vec<&DisputeRecord> = self.disputes.values().collect();
        disputes.sort_by_key(|d| std::cmp::Reverse((d.opened_ms, d.id)));
        let me = self.cfg.me;
        let balance = self.bank.balance(&me)?;
        let claimed = self.claims.values().any(|c| c.claimant == me);
        Ok(provnet_wire::CourtStatus {
            claims_open: self
                .claims
                .values()
                .filter(|c| c.finished_ms.is_none())
                .count() as u32,
            claims_total: self.claims.len() as u32,
            disputes_open: self.disputes.values().filter(|d| !d.finished()).count() as u32,
            disputes: disputes
                .into_iter()
                .take(limit)
                .map(|d| self.dispute_status(d))
                .collect(),
            refused: self.counters.refused.clone(),
            verdicts: self.counters.verdicts.clone(),
            ms_to_verdict: self.counters.ms_to_verdict.clone(),
            verdict_seconds: self.counters.verdict_seconds.clone(),
            balance: (balance > 0 || claimed).then_some(balance),
            burned: self.bank.burned()?,
            ..Default::default()
        })
    }

    /// One dispute for operators.
    pub fn dispute_status(&self, d: &DisputeRecord) -> provnet_wire::DisputeStatus {
        let (stage, lo, hi, deadline_ms) = match &d.stage {
            _ if d.abandoned => ("abandoned".to_string(), 0, 0, None),
            _ if d.final_verdict.is_some() => ("final".to_string(), 0, 0, None),
            Stage::Bisect {
                round,
                lo,
                hi,
                deadline_ms,
                ..
            } => (format!("round {round}"), *lo, *hi, Some(*deadline_ms)),
            Stage::Leaf {
                segment,
                state,
                deadline_ms,
                proof_deadline_ms,
                ..
            } => {
                let due = if state.is_some() {
                    *proof_deadline_ms
                } else {
                    Some(*deadline_ms)
                };
                ("leaf".to_string(), *segment, segment + 1, due)
            }
            Stage::Decided => ("decided".to_string(), 0, 0, None),
        };
        let decided = d.final_verdict.as_ref().or(d.local.as_ref());
        provnet_wire::DisputeStatus {
            id: hex::encode(d.id),
            claim: hex::encode(d.claim_id),
            claimant: hex::encode(d.claimant),
            challenger: hex::encode(d.challenger),
            stage,
            rounds: d.rounds,
            lo,
            hi,
            deadline_ms,
            opened_ms: d.opened_ms,
            verdict: d.local.as_ref().map(|v| v.verdict.as_str().to_string()),
            final_verdict: d
                .final_verdict
                .as_ref()
                .map(|v| v.verdict.as_str().to_string()),
            segment: decided.and_then(|v| v.segment),
            prover: decided.and_then(|v| v.prover).map(hex::encode),
            ms_to_verdict: d.final_ms.map(|f| f.saturating_sub(d.opened_ms)),
            slashed: d.slashed,
            audit_ms: self
                .claims
                .get(&d.claim_id)
                .map(|c| d.opened_ms.saturating_sub(c.received_ms)),
            bisect_ms: d
                .leaf_from_ms
                .or(d.decided_ms)
                .map(|t| t.saturating_sub(d.opened_ms)),
            leaf_ms: d
                .leaf_from_ms
                .zip(d.decided_ms)
                .map(|(l, t)| t.saturating_sub(l)),
            attest_ms: d
                .decided_ms
                .zip(d.final_ms)
                .map(|(t, f)| f.saturating_sub(t)),
        }
    }

    /// What `me` owes the disputes it is a side of: reveals for the current round.
    pub fn owed(&self, me: &PublicKey) -> Vec<Owed> {
        let mut out = Vec::new();
        for d in self.disputes.values().filter(|d| !d.finished()) {
            let side = if *me == d.claimant {
                0
            } else if *me == d.challenger {
                1
            } else {
                continue;
            };
            let cuts = self.claims.get(&d.claim_id).map_or(0, |c| c.claim.cuts);
            match &d.stage {
                Stage::Bisect {
                    round, points, got, ..
                } if !got[side] => out.push(Owed {
                    dispute: d.id,
                    claim: d.claim_id,
                    round: *round,
                    points: points.clone(),
                    full: bisect::is_full(*round, cuts),
                }),
                _ => {}
            }
        }
        out
    }
}

/// A side's answer to a round, from the Merkle tree over its trace's state hashes. `None`
/// when a point is past the trace.
pub fn reveal(
    dispute: [u8; 32],
    round: u32,
    points: &[u32],
    full: bool,
    tree: &MerkleTree,
) -> Option<DisputeReveal> {
    let hashes = points
        .iter()
        .map(|&k| tree.leaves().get(k as usize).copied().map(Digest))
        .collect::<Option<Vec<_>>>()?;
    let proofs = if full {
        Vec::new()
    } else {
        points
            .iter()
            .map(|&k| {
                tree.proof(k as usize)
                    .map(|p| p.siblings.into_iter().map(Digest).collect())
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some(DisputeReveal {
        dispute_id: dispute,
        round,
        hashes,
        proofs,
    })
}

/// Whether a reveal answers the round: one hash per point, each proved against `root`
/// (or, for a whole-trace round, rebuilding it).
fn check_reveal(
    round: u32,
    cuts: u32,
    points: &[u32],
    root: &[u8; 32],
    hashes: &[[u8; 32]],
    proofs: &[Vec<Digest>],
) -> std::result::Result<(), String> {
    if hashes.len() != points.len() {
        return Err(format!("{} hashes for {} cuts", hashes.len(), points.len()));
    }
    if bisect::is_full(round, cuts) {
        if trace::merkle_root(hashes) != *root {
            return Err("the hashes do not rebuild the trace root".into());
        }
        return Ok(());
    }
    if proofs.len() != points.len() {
        return Err(format!("{} proofs for {} cuts", proofs.len(), points.len()));
    }
    for ((k, h), p) in points.iter().zip(hashes).zip(proofs) {
        let proof = MerkleProof {
            siblings: p.iter().map(|d| d.0).collect(),
        };
        if !proof.verify(root, cuts as usize, *k as usize, h) {
            return Err(format!("the proof of cut {k} does not hold"));
        }
    }
    Ok(())
}

/// A side may not change what it revealed in an earlier round.
fn consistent(
    known: &BTreeMap<u32, [u8; 32]>,
    points: &[u32],
    hashes: &[[u8; 32]],
) -> std::result::Result<(), String> {
    match points
        .iter()
        .zip(hashes)
        .find(|(k, h)| known.get(k).is_some_and(|old| old != *h))
    {
        Some((k, _)) => Err(format!("cut {k} differs from the side's earlier reveal")),
        None => Ok(()),
    }
}

/// The proven (or executed) output of the leaf against both sides' output states.
fn leaf_verdict(d: &DisputeRecord, segment: u32, output: &[i64]) -> DisputeVerdict {
    let out = trace::leaf(segment as usize + 1, output);
    let next = segment + 1;
    match (
        d.known[0].get(&next) == Some(&out),
        d.known[1].get(&next) == Some(&out),
    ) {
        (true, _) => DisputeVerdict::ChallengerWrong,
        (false, true) => DisputeVerdict::ClaimantWrong,
        (false, false) => DisputeVerdict::BothWrong,
    }
}
