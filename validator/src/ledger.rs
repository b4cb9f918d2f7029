//! The ledger every node keeps: validators' weight commitments and reveals, the consensus
//! run for each epoch once its reveals are in, and the rewards it pays, all in sled.
//!
//! Commit-reveal: a reveal counts only if it opens a commitment the same validator made in
//! the commit window, which closes before any reveal is due. A lazy validator that waits to
//! copy others' weights has nothing to copy until it is too late to commit.

use std::collections::BTreeMap;

use provnet_wire::sync::{ByteBuf, MAX_SYNC_EPOCHS, MAX_SYNC_RESPONSE_BYTES};
use provnet_wire::{
    EpochRewards, Gate, LedgerStatus, Message, MinerWeight, PublicKey, SyncRequest, SyncResponse,
    WeightsCommit, WeightsReveal,
};
use tracing::{debug, info, warn};

use crate::consensus::{yuma, ConsensusParams, EpochOutcome};
use crate::epoch::Epochs;
use crate::store::{Archived, HeardReveal, Result, Store, ARCHIVE_EPOCHS};

/// Why a commit or reveal was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerRefusal {
    #[error("the sender is not in the validator set")]
    NotAValidator,
    #[error("epoch {epoch}'s commit window is not open now")]
    OutsideCommitWindow { epoch: u64 },
    #[error("epoch {epoch}'s reveal window is not open now")]
    OutsideRevealWindow { epoch: u64 },
    #[error("a different commitment for epoch {epoch} was already recorded")]
    Equivocation { epoch: u64 },
    #[error("no commitment for epoch {epoch} to open")]
    NoCommit { epoch: u64 },
    #[error("the reveal does not open the commitment for epoch {epoch}")]
    Mismatch { epoch: u64 },
}

impl LedgerRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            LedgerRefusal::NotAValidator => "not_a_validator",
            LedgerRefusal::OutsideCommitWindow { .. } => "outside_commit_window",
            LedgerRefusal::OutsideRevealWindow { .. } => "outside_reveal_window",
            LedgerRefusal::Equivocation { .. } => "equivocation",
            LedgerRefusal::NoCommit { .. } => "no_commit",
            LedgerRefusal::Mismatch { .. } => "mismatch",
        }
    }
}

// One sync request never asks past what peers keep.
const _: () = assert!(ARCHIVE_EPOCHS >= MAX_SYNC_EPOCHS);

/// What [`Ledger::apply_synced`] made of a catch-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Envelopes after duplicates were dropped.
    pub distinct: usize,
    /// Commits and reveals recorded.
    pub commits: u64,
    pub reveals: u64,
    /// Validly signed, refused by the ledger's rules, by reason (`no_commit` reveals are
    /// still kept as heard).
    pub refused: BTreeMap<String, u64>,
    /// Not validly signed for this network, or not weights, by reason.
    pub bad: BTreeMap<String, u64>,
}

/// Network parameters the ledger needs (from the genesis).
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    pub stake: BTreeMap<PublicKey, u64>,
    pub params: ConsensusParams,
    pub emission_per_epoch: u64,
    pub epochs: Epochs,
}

pub struct Ledger {
    store: Store,
    cfg: LedgerConfig,
    refused: BTreeMap<String, u64>,
    /// Consensus waits at this epoch while the node catches up on what it missed.
    hold_from: Option<u64>,
}

impl Ledger {
    /// Opens the ledger; a node that starts for the first time keeps consensus from the
    /// current epoch on.
    pub fn open(store: Store, cfg: LedgerConfig, now_ms: u64) -> Result<Ledger> {
        if store.ledger_from_epoch()?.is_none() {
            store.set_ledger_from_epoch(cfg.epochs.of(now_ms))?;
            store.flush()?;
        }
        Ok(Ledger {
            store,
            cfg,
            refused: BTreeMap::new(),
            hold_from: None,
        })
    }

    /// The epochs whose commits or reveals this node may have missed while it was down:
    /// from the first epoch without consensus to the last whose commit window has opened,
    /// at most the last [`ARCHIVE_EPOCHS`] of them (peers keep no more). None when
    /// consensus is up to date.
    pub fn missed_epochs(&self, now_ms: u64) -> Result<Option<(u64, u64)>> {
        let next = match self.store.last_consensus_epoch()? {
            Some(e) => e + 1,
            None => self.store.ledger_from_epoch()?.unwrap_or(0),
        };
        let Some(last) = self.cfg.epochs.of(now_ms).checked_sub(1) else {
            return Ok(None);
        };
        let from = next.max(last.saturating_sub(ARCHIVE_EPOCHS - 1));
        Ok((from <= last).then_some((from, last)))
    }

    /// Holds consensus for `epoch` and later until [`release`](Ledger::release): while the
    /// node fetches the commits and reveals it missed, running consensus would pay out an
    /// epoch without them, differently from every other node.
    pub fn hold(&mut self, epoch: u64) {
        self.hold_from = Some(epoch);
    }

    pub fn release(&mut self) {
        self.hold_from = None;
    }

    /// [`on_commit`](Ledger::on_commit) for a commit that came in a signed envelope, judged
    /// at `at_ms` (now for live gossip, the signing time for a synced one); the envelope is
    /// kept to serve peers that catch up later.
    pub fn on_signed_commit(
        &mut self,
        validator: &PublicKey,
        c: &WeightsCommit,
        at_ms: u64,
        envelope: &[u8],
    ) -> Result<std::result::Result<(), LedgerRefusal>> {
        let r = self.on_commit(validator, c, at_ms)?;
        if r.is_ok() {
            self.store
                .put_archived(c.epoch, Archived::Commit, validator, envelope)?;
        }
        Ok(r)
    }

    /// [`on_reveal`](Ledger::on_reveal) for a reveal in a signed envelope; see
    /// [`on_signed_commit`](Ledger::on_signed_commit). A reveal kept as heard (its commit was
    /// missed here) is archived too: others may count it on attestation.
    pub fn on_signed_reveal(
        &mut self,
        validator: &PublicKey,
        r: &WeightsReveal,
        at_ms: u64,
        envelope: &[u8],
    ) -> Result<std::result::Result<(), LedgerRefusal>> {
        let out = self.on_reveal(validator, r, at_ms)?;
        if matches!(out, Ok(()) | Err(LedgerRefusal::NoCommit { .. })) {
            self.store
                .put_archived(r.epoch, Archived::Reveal, validator, envelope)?;
        }
        Ok(out)
    }

    /// Checks and applies envelopes peers sent this node to catch up: each must carry a
    /// valid signature for this network ([`Gate::check_archived`]), and is then judged by
    /// the same rules as live gossip at the time its validator signed it. Commits go first,
    /// so a reveal whose commit came in the same batch counts directly. Duplicates (several
    /// peers send the same envelopes) are applied once. Weights for epochs outside `epochs`
    /// (what was asked for) are refused as `not_asked`.
    pub fn apply_synced(
        &mut self,
        gate: &Gate,
        epochs: std::ops::RangeInclusive<u64>,
        mut envelopes: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> Result<SyncReport> {
        envelopes.sort_unstable();
        envelopes.dedup();
        let mut report = SyncReport {
            distinct: envelopes.len(),
            ..Default::default()
        };
        let mut opened = Vec::new();
        for bytes in &envelopes {
            match gate.check_archived(bytes, now_ms) {
                Ok(v) => opened.push((v, bytes)),
                Err((reason, why)) => {
                    *report.bad.entry(reason.as_str().into()).or_default() += 1;
                    debug!(target: "ledger", reason = reason.as_str(), "a synced envelope was refused: {why}");
                }
            }
        }
        opened.sort_by_key(|(v, _)| !matches!(v.message, Message::WeightsCommit(_)));
        for (v, bytes) in opened {
            let epoch = match &v.message {
                Message::WeightsCommit(c) => Some(c.epoch),
                Message::WeightsReveal(r) => Some(r.epoch),
                _ => None,
            };
            if epoch.is_some_and(|e| !epochs.contains(&e)) {
                *report.bad.entry("not_asked".into()).or_default() += 1;
                continue;
            }
            let (r, counter) = match &v.message {
                Message::WeightsCommit(c) => (
                    self.on_signed_commit(&v.sender, c, v.timestamp_ms, bytes)?,
                    &mut report.commits,
                ),
                Message::WeightsReveal(x) => (
                    self.on_signed_reveal(&v.sender, x, v.timestamp_ms, bytes)?,
                    &mut report.reveals,
                ),
                _ => {
                    *report.bad.entry("not_weights".into()).or_default() += 1;
                    continue;
                }
            };
            match r {
                Ok(()) => *counter += 1,
                Err(x) => *report.refused.entry(x.as_str().into()).or_default() += 1,
            }
        }
        Ok(report)
    }

    /// Answers a peer's sync request from the archive.
    pub fn sync_answer(&self, req: &SyncRequest) -> Result<SyncResponse> {
        let to = req
            .to_epoch
            .min(req.from_epoch.saturating_add(MAX_SYNC_EPOCHS - 1));
        // Room for the response's own framing.
        let budget = MAX_SYNC_RESPONSE_BYTES - 64 * 1024;
        let (envelopes, more_from) = self.store.archived(req.from_epoch, to, budget)?;
        let more_from = more_from.or((to < req.to_epoch).then_some(to + 1));
        Ok(SyncResponse {
            serving: true,
            envelopes: envelopes.into_iter().map(ByteBuf::from).collect(),
            more_from,
        })
    }

    pub fn epochs(&self) -> Epochs {
        self.cfg.epochs
    }

    fn refuse(&mut self, r: LedgerRefusal) -> std::result::Result<(), LedgerRefusal> {
        *self.refused.entry(r.as_str().into()).or_default() += 1;
        Err(r)
    }

    /// Records `validator`'s commitment (its own included).
    pub fn on_commit(
        &mut self,
        validator: &PublicKey,
        c: &WeightsCommit,
        now_ms: u64,
    ) -> Result<std::result::Result<(), LedgerRefusal>> {
        if !self.cfg.stake.contains_key(validator) {
            return Ok(self.refuse(LedgerRefusal::NotAValidator));
        }
        let e = self.cfg.epochs;
        if now_ms < e.start(c.epoch.saturating_add(1)) || now_ms >= e.commit_deadline(c.epoch) {
            return Ok(self.refuse(LedgerRefusal::OutsideCommitWindow { epoch: c.epoch }));
        }
        match self.store.commit(c.epoch, validator)? {
            Some(have) if have == c.commitment => Ok(Ok(())),
            Some(_) => Ok(self.refuse(LedgerRefusal::Equivocation { epoch: c.epoch })),
            None => {
                self.store.put_commit(c.epoch, validator, &c.commitment)?;
                Ok(Ok(()))
            }
        }
    }

    /// Records `validator`'s reveal if it opens its commitment.
    pub fn on_reveal(
        &mut self,
        validator: &PublicKey,
        r: &WeightsReveal,
        now_ms: u64,
    ) -> Result<std::result::Result<(), LedgerRefusal>> {
        if !self.cfg.stake.contains_key(validator) {
            return Ok(self.refuse(LedgerRefusal::NotAValidator));
        }
        let e = self.cfg.epochs;
        if now_ms < e.reveal_from(r.epoch) || now_ms >= e.consensus_at(r.epoch) {
            return Ok(self.refuse(LedgerRefusal::OutsideRevealWindow { epoch: r.epoch }));
        }
        let heard = HeardReveal {
            commitment: r.commitment(),
            weights: r.weights.clone(),
            seen_commits: r.seen_commits.clone(),
        };
        match self.store.commit(r.epoch, validator)? {
            None => {
                // Kept: validators with most of the stake may vouch for the commit this
                // node missed (it was down through the commit window).
                self.store.put_heard(r.epoch, validator, &heard)?;
                Ok(self.refuse(LedgerRefusal::NoCommit { epoch: r.epoch }))
            }
            Some(c) if c != r.commitment() => {
                Ok(self.refuse(LedgerRefusal::Mismatch { epoch: r.epoch }))
            }
            Some(_) => {
                self.store.put_heard(r.epoch, validator, &heard)?;
                self.store.put_reveal(r.epoch, validator, &r.weights)?;
                Ok(Ok(()))
            }
        }
    }

    /// Runs consensus for every epoch whose reveal window has closed. Returns the epochs
    /// it ran.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<u64>> {
        let from = self.store.ledger_from_epoch()?.unwrap_or(0);
        let mut next = match self.store.last_consensus_epoch()? {
            Some(e) => e + 1,
            None => from,
        };
        let mut ran = Vec::new();
        while self.cfg.epochs.consensus_at(next) <= now_ms
            && self.hold_from.is_none_or(|h| next < h)
        {
            let outcome = self.run_consensus(next)?;
            self.store.put_epoch_outcome(next, &outcome)?;
            let keep_from = next.saturating_sub(ARCHIVE_EPOCHS);
            self.store.prune_archive(keep_from)?;
            self.store.prune_ledger(keep_from)?;
            // No flush here: sled's own flusher writes it within 200 ms, and an outcome
            // lost to a kill is run again from the reveals on restart.
            ran.push(next);
            next += 1;
        }
        Ok(ran)
    }

    fn run_consensus(&self, epoch: u64) -> Result<EpochOutcome> {
        let mut reveals = self.store.reveals(epoch)?;
        for (v, weights) in self.attested(epoch, &reveals)? {
            info!(target: "ledger", epoch, validator = %hex::encode(&v[..8]), "reveal accepted on attestation: its commit was missed here");
            reveals.insert(v, weights);
        }
        let bonds = self.store.bonds()?;
        let outcome = yuma(
            &self.cfg.params,
            &self.cfg.stake,
            &reveals,
            &bonds,
            self.cfg.emission_per_epoch,
        );
        if reveals.is_empty() {
            warn!(target: "ledger", epoch, "no validator revealed weights: the epoch's emission is unallocated");
        }
        info!(
            target: "ledger",
            epoch,
            reveals = reveals.len(),
            miners_paid = outcome.rewards.miners.len(),
            owner = outcome.rewards.owner,
            unallocated = outcome.rewards.unallocated,
            "consensus"
        );
        Ok(outcome)
    }

    /// Reveals heard for `epoch` without a commit seen here, whose commitment validators
    /// holding more than half of all stake (the revealer included) list among the commits
    /// they saw in the window. (A validator with most of the stake decides the consensus
    /// anyway, so counting its own word adds no power it lacked.) Every node applies the same rule to the reveals it
    /// heard, so a node that was down through the commit window but heard the reveals
    /// reaches the same consensus as the rest.
    fn attested(
        &self,
        epoch: u64,
        accepted: &BTreeMap<PublicKey, Vec<MinerWeight>>,
    ) -> Result<Vec<(PublicKey, Vec<MinerWeight>)>> {
        let heard = self.store.heard(epoch)?;
        let total: u128 = self.cfg.stake.values().map(|s| *s as u128).sum();
        let mut out = Vec::new();
        for (v, h) in &heard {
            if accepted.contains_key(v) {
                continue;
            }
            let vouching: u128 = heard
                .iter()
                .filter(|(_, hu)| {
                    hu.seen_commits
                        .binary_search_by(|s| s.validator.cmp(v))
                        .is_ok_and(|i| hu.seen_commits[i].commitment == h.commitment)
                })
                .map(|(u, _)| self.cfg.stake.get(u).copied().unwrap_or(0) as u128)
                .sum();
            if 2 * vouching > total {
                out.push((*v, h.weights.clone()));
            }
        }
        Ok(out)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last `recent` epochs with consensus, totals and refusals.
    pub fn status(&self, recent: usize) -> Result<LedgerStatus> {
        let epochs = self.store.consensus_epochs()?;
        let mut out = Vec::new();
        for &e in epochs.iter().rev().take(recent).rev() {
            let Some(r) = self.store.rewards(e)? else {
                continue;
            };
            out.push(EpochRewards {
                epoch: e,
                owner: r.owner,
                miners: r.miners.values().sum(),
                validators: r.validators.values().sum(),
                unallocated: r.unallocated,
                revealed_by: self.store.reveals(e)?.keys().map(hex::encode).collect(),
                dividends: r
                    .validators
                    .iter()
                    .map(|(v, x)| (hex::encode(v), *x))
                    .collect(),
            });
        }
        let t = self.store.totals()?;
        Ok(LedgerStatus {
            last_consensus_epoch: self.store.last_consensus_epoch()?,
            recent: out,
            owner_total: t.owner,
            miner_totals: t.miners.iter().map(|(k, v)| (hex::encode(k), *v)).collect(),
            validator_totals: t
                .validators
                .iter()
                .map(|(k, v)| (hex::encode(k), *v))
                .collect(),
            refused: self.refused.clone(),
            catching_up_from: self.hold_from,
            // The registry's: the node fills these in.
            registered_miners: 0,
            max_miners: 0,
            registrations_refused: BTreeMap::new(),
            registrations_pending: 0,
        })
    }
}
