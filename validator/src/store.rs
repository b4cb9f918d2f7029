//! The validator's and the ledger's state in sled: one tree per kind of record, values in
//! CBOR, epochs as big-endian keys so trees iterate in epoch order.
//!
//! Trees:
//! - `meta`: the open epoch, the moving averages ([`Scores`]), the bonds, reward totals.
//! - `weights`: epoch -> this validator's [`WeightsRecord`] (weights, salt, commitment).
//! - `challenges`: challenge id -> [`ChallengeRecord`] (the challenge log, with outcomes).
//! - `proofs`: blake3 of proof bytes -> (challenge id, miner): how replays are recognised.
//! - `miners`: miner -> [`MinerRecord`] (counters and recent latencies).
//! - `commits`, `reveals`: epoch ‖ validator -> commitment / revealed weights.
//! - `consensus`: epoch -> [`EpochOutcome`]; `rewards`: epoch -> [`Rewards`].
//! - `archive`: epoch ‖ kind ‖ validator -> the signed envelope of a commit or reveal, as
//!   gossiped, kept for [`ARCHIVE_EPOCHS`] epochs to serve to peers catching up.
//!
//! Writes that others act on (a salt before its commitment is published, an epoch's
//! consensus) are flushed before the node goes on, so `kill -9` loses none of them.

use std::collections::BTreeMap;
use std::path::Path;

use provnet_wire::{MinerWeight, PublicKey, SeenCommit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::consensus::{Bonds, EpochOutcome, Rewards};
use crate::score::{Outcome, Scores};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source} (is another node using this data dir?)")]
    Open { path: String, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record in {tree} ({key}): {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One epoch's weights as this validator set them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsRecord {
    pub epoch: u64,
    pub weights: Vec<MinerWeight>,
    pub salt: [u8; 32],
    pub commitment: [u8; 32],
    pub closed_at_ms: u64,
}

/// One miner's answer to one challenge, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub miner: PublicKey,
    pub outcome: Outcome,
    /// Challenge receipt to verdict, ms.
    pub verified_ms: f64,
    pub detail: String,
}

/// A challenge and what every miner made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    pub id: [u8; 32],
    pub challenger: PublicKey,
    pub model_id: [u8; 32],
    pub segment: u32,
    pub received_ms: u64,
    pub deadline_ms: u64,
    pub answers: Vec<AnswerRecord>,
}

/// Latency samples kept per miner.
pub const MINER_SAMPLES: usize = 256;

/// Per-miner counters and recent valid-proof latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerRecord {
    pub valid: u64,
    pub invalid: u64,
    pub copied: u64,
    pub replayed: u64,
    pub late: u64,
    /// Newest last: challenge receipt to proof receipt, ms.
    pub latency_ms: Vec<f64>,
    /// Newest last: challenge receipt to verdict, ms.
    pub verified_ms: Vec<f64>,
    pub last_proof_bytes: Option<u64>,
}

impl MinerRecord {
    pub fn count(&mut self, outcome: &Outcome, verified_ms: f64) {
        match *outcome {
            Outcome::Valid {
                latency_ms,
                proof_bytes,
            } => {
                self.valid += 1;
                push_capped(&mut self.latency_ms, latency_ms);
                push_capped(&mut self.verified_ms, verified_ms);
                self.last_proof_bytes = Some(proof_bytes as u64);
            }
            Outcome::Invalid => self.invalid += 1,
            Outcome::Copied => self.copied += 1,
            Outcome::Replayed => self.replayed += 1,
            Outcome::Late => self.late += 1,
        }
    }
}

fn push_capped(v: &mut Vec<f64>, x: f64) {
    if v.len() >= MINER_SAMPLES {
        v.remove(0);
    }
    v.push(x);
}

/// Everything paid out so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardTotals {
    pub owner: u64,
    pub unallocated: u64,
    pub miners: BTreeMap<PublicKey, u64>,
    pub validators: BTreeMap<PublicKey, u64>,
}

/// A reveal as heard, kept for the commit attestations it carries and in case its own
/// commit was missed (see [`crate::ledger`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeardReveal {
    pub commitment: [u8; 32],
    pub weights: Vec<MinerWeight>,
    pub seen_commits: Vec<SeenCommit>,
}

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    pub(crate) weights: sled::Tree,
    pub(crate) challenges: sled::Tree,
    proofs: sled::Tree,
    miners: sled::Tree,
    commits: sled::Tree,
    reveals: sled::Tree,
    heard: sled::Tree,
    consensus: sled::Tree,
    rewards: sled::Tree,
    archive: sled::Tree,
}

/// sled's page cache, per store.
const STORE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Epochs of signed commits and reveals kept to serve to peers catching up.
pub const ARCHIVE_EPOCHS: u64 = 256;

/// What an archived envelope carries; commits sort before reveals within an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archived {
    Commit = 0,
    Reveal = 1,
}

const META_OPEN_EPOCH: &[u8] = b"open_epoch";
const META_SCORES: &[u8] = b"scores";
const META_METAGRAPH: &[u8] = b"metagraph";
const META_BONDS: &[u8] = b"bonds";
const META_TOTALS: &[u8] = b"reward_totals";
const META_LEDGER_FROM: &[u8] = b"ledger_from_epoch";
const META_LAST_CONSENSUS: &[u8] = b"last_consensus_epoch";

pub(crate) fn epoch_key(epoch: u64) -> [u8; 8] {
    epoch.to_be_bytes()
}

fn pair_key(epoch: u64, who: &PublicKey) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&epoch.to_be_bytes());
    k[8..].copy_from_slice(who);
    k
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        // sled caches up to 1 GiB by default, which reads as a node's memory growing
        // without bound; what a node reads back is small and recent.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(STORE_CACHE_BYTES)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let t = |name: &str| db.open_tree(name);
        Ok(Store {
            meta: t("meta")?,
            weights: t("weights")?,
            challenges: t("challenges")?,
            proofs: t("proofs")?,
            miners: t("miners")?,
            commits: t("commits")?,
            reveals: t("reveals")?,
            heard: t("heard")?,
            consensus: t("consensus")?,
            rewards: t("rewards")?,
            archive: t("archive")?,
            db,
        })
    }

    /// A tree of this store's database, for state kept beside the validator's (the
    /// court's claims, disputes and bonds).
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Waits until every write so far is on disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub(crate) fn get<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>> {
        match tree.get(key)? {
            None => Ok(None),
            Some(v) => serde_cbor::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    tree: name,
                    key: hex::encode(key),
                    reason: e.to_string(),
                }),
        }
    }

    pub(crate) fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<()> {
        let bytes = serde_cbor::to_vec(value).expect("plain data serializes");
        tree.insert(key, bytes)?;
        Ok(())
    }

    pub(crate) fn all<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
    ) -> Result<Vec<T>> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv?;
                serde_cbor::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    tree: name,
                    key: hex::encode(&k),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    // --- validator state ---

    pub fn open_epoch(&self) -> Result<Option<u64>> {
        Self::get(&self.meta, "meta", META_OPEN_EPOCH)
    }

    pub fn set_open_epoch(&self, epoch: u64) -> Result<()> {
        Self::put(&self.meta, META_OPEN_EPOCH, &epoch)
    }

    /// The miner registry (see [`crate::registry`]).
    pub fn metagraph(&self) -> Result<Option<crate::registry::Metagraph>> {
        Self::get(&self.meta, "meta", META_METAGRAPH)
    }

    pub fn put_metagraph(&self, g: &crate::registry::Metagraph) -> Result<()> {
        Self::put(&self.meta, META_METAGRAPH, g)
    }

    pub fn scores(&self) -> Result<Scores> {
        Ok(Self::get(&self.meta, "meta", META_SCORES)?.unwrap_or_default())
    }

    pub fn set_scores(&self, s: &Scores) -> Result<()> {
        Self::put(&self.meta, META_SCORES, s)
    }

    pub fn weights(&self, epoch: u64) -> Result<Option<WeightsRecord>> {
        Self::get(&self.weights, "weights", &epoch_key(epoch))
    }

    pub fn put_weights(&self, r: &WeightsRecord) -> Result<()> {
        Self::put(&self.weights, &epoch_key(r.epoch), r)
    }

    /// Closes a validator's epoch atomically: its weights, the next open epoch and the
    /// scores carried into it are written in one transaction, so a kill at any point
    /// leaves either the epoch open or all three written.
    pub fn close_epoch(&self, r: &WeightsRecord, open_epoch: u64, scores: &Scores) -> Result<()> {
        let enc = |v: &dyn erased::Cbor| v.cbor();
        let (weights, open, sc) = (enc(r), enc(&open_epoch), enc(scores));
        use sled::Transactional;
        (&self.meta, &self.weights)
            .transaction(|(m, w)| {
                w.insert(&epoch_key(r.epoch), weights.clone())?;
                m.insert(META_OPEN_EPOCH, open.clone())?;
                m.insert(META_SCORES, sc.clone())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        Ok(())
    }

    /// Every epoch's weights, oldest first.
    pub fn weights_history(&self) -> Result<Vec<WeightsRecord>> {
        Self::all(&self.weights, "weights")
    }

    pub fn challenge(&self, id: &[u8; 32]) -> Result<Option<ChallengeRecord>> {
        Self::get(&self.challenges, "challenges", id)
    }

    pub fn put_challenge(&self, r: &ChallengeRecord) -> Result<()> {
        Self::put(&self.challenges, &r.id, r)
    }

    /// The whole challenge log.
    pub fn challenges(&self) -> Result<Vec<ChallengeRecord>> {
        Self::all(&self.challenges, "challenges")
    }

    pub fn challenge_count(&self) -> usize {
        self.challenges.len()
    }

    /// Who first sent these proof bytes, and for which challenge.
    pub fn proof_seen(&self, hash: &[u8; 32]) -> Result<Option<([u8; 32], PublicKey)>> {
        Self::get(&self.proofs, "proofs", hash)
    }

    pub fn put_proof_seen(
        &self,
        hash: &[u8; 32],
        challenge: &[u8; 32],
        miner: &PublicKey,
    ) -> Result<()> {
        if self.proofs.get(hash)?.is_none() {
            Self::put(&self.proofs, hash, &(challenge, miner))?;
        }
        Ok(())
    }

    pub fn miner(&self, miner: &PublicKey) -> Result<MinerRecord> {
        Ok(Self::get(&self.miners, "miners", miner)?.unwrap_or_default())
    }

    pub fn put_miner(&self, miner: &PublicKey, r: &MinerRecord) -> Result<()> {
        Self::put(&self.miners, miner, r)
    }

    pub fn miner_count(&self) -> usize {
        self.miners.len()
    }

    /// Deletes the records of miners `keep` says no to.
    pub fn retain_miners(&self, keep: impl Fn(&PublicKey) -> bool) -> Result<()> {
        for k in self.miners.iter().keys() {
            let k = k?;
            if let Ok(m) = <PublicKey>::try_from(k.as_ref()) {
                if !keep(&m) {
                    self.miners.remove(&k)?;
                }
            }
        }
        Ok(())
    }

    pub fn miners(&self) -> Result<BTreeMap<PublicKey, MinerRecord>> {
        self.miners
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let key: PublicKey = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: "miners",
                    key: hex::encode(&k),
                    reason: "key is not 32 bytes".into(),
                })?;
                let rec = serde_cbor::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    tree: "miners",
                    key: hex::encode(&k),
                    reason: e.to_string(),
                })?;
                Ok((key, rec))
            })
            .collect()
    }

    // --- ledger state ---

    pub fn commit(&self, epoch: u64, v: &PublicKey) -> Result<Option<[u8; 32]>> {
        Self::get(&self.commits, "commits", &pair_key(epoch, v))
    }

    pub fn put_commit(&self, epoch: u64, v: &PublicKey, c: &[u8; 32]) -> Result<()> {
        Self::put(&self.commits, &pair_key(epoch, v), c)
    }

    pub fn reveal(&self, epoch: u64, v: &PublicKey) -> Result<Option<Vec<MinerWeight>>> {
        Self::get(&self.reveals, "reveals", &pair_key(epoch, v))
    }

    pub fn put_reveal(&self, epoch: u64, v: &PublicKey, w: &[MinerWeight]) -> Result<()> {
        Self::put(&self.reveals, &pair_key(epoch, v), &w)
    }

    /// Every reveal for `epoch` whose commitment this node saw in the commit window.
    pub fn reveals(&self, epoch: u64) -> Result<BTreeMap<PublicKey, Vec<MinerWeight>>> {
        Self::scan_epoch(&self.reveals, "reveals", epoch)
    }

    /// Every commitment for `epoch` accepted in its commit window, by validator.
    pub fn commits(&self, epoch: u64) -> Result<BTreeMap<PublicKey, [u8; 32]>> {
        Self::scan_epoch(&self.commits, "commits", epoch)
    }

    /// Every reveal for `epoch` heard in the reveal window, with or without a commit.
    pub fn heard(&self, epoch: u64) -> Result<BTreeMap<PublicKey, HeardReveal>> {
        Self::scan_epoch(&self.heard, "heard", epoch)
    }

    /// Keeps the first reveal heard from `v` for `epoch`.
    pub fn put_heard(&self, epoch: u64, v: &PublicKey, h: &HeardReveal) -> Result<()> {
        let bytes = serde_cbor::to_vec(h).expect("plain data serializes");
        let _ =
            self.heard
                .compare_and_swap(pair_key(epoch, v), None as Option<&[u8]>, Some(bytes))?;
        Ok(())
    }

    fn scan_epoch<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        epoch: u64,
    ) -> Result<BTreeMap<PublicKey, T>> {
        tree.scan_prefix(epoch_key(epoch))
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = |reason: String| StoreError::Corrupt {
                    tree: name,
                    key: hex::encode(&k),
                    reason,
                };
                let who: PublicKey = k[8..]
                    .try_into()
                    .map_err(|_| corrupt("key is not epoch ‖ key".into()))?;
                let w = serde_cbor::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
                Ok((who, w))
            })
            .collect()
    }

    /// Keeps the signed envelope of `v`'s commit or reveal for `epoch` (the first one).
    pub fn put_archived(
        &self,
        epoch: u64,
        kind: Archived,
        v: &PublicKey,
        envelope: &[u8],
    ) -> Result<()> {
        let mut k = [0u8; 41];
        k[..8].copy_from_slice(&epoch_key(epoch));
        k[8] = kind as u8;
        k[9..].copy_from_slice(v);
        let _ = self
            .archive
            .compare_and_swap(k, None as Option<&[u8]>, Some(envelope))?;
        Ok(())
    }

    /// Archived envelopes of epochs `from..=to` in key order, until their total size would
    /// pass `max_bytes` (at least one is returned). The second value is the epoch to ask
    /// from next when the answer was cut short.
    pub fn archived(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        let end = to.checked_add(1).map(epoch_key);
        let range = match end {
            Some(end) => self.archive.range(epoch_key(from)..end),
            None => self.archive.range(epoch_key(from)..),
        };
        Self::capped(range, max_bytes)
    }

    /// The values of an archive's range (keys start with a big-endian u64) up to
    /// `max_bytes` (at least one), and the key prefix to ask from again when it stopped.
    pub(crate) fn capped(
        range: sled::Iter,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for kv in range {
            let (k, v) = kv?;
            if !out.is_empty() && total + v.len() > max_bytes {
                let at = u64::from_be_bytes(k[..8].try_into().expect("8-byte prefix"));
                return Ok((out, Some(at)));
            }
            total += v.len();
            out.push(v.to_vec());
        }
        Ok((out, None))
    }

    /// Forgets archived envelopes of epochs before `epoch`.
    pub fn prune_archive(&self, epoch: u64) -> Result<()> {
        Self::prune_tree(&self.archive, epoch)
    }

    /// Forgets the ledger's per-epoch records (commits, reveals, reveals heard, consensus,
    /// rewards) of epochs before `epoch`; totals and bonds carry everything forward.
    pub fn prune_ledger(&self, epoch: u64) -> Result<()> {
        for t in [
            &self.commits,
            &self.reveals,
            &self.heard,
            &self.consensus,
            &self.rewards,
        ] {
            Self::prune_tree(t, epoch)?;
        }
        Ok(())
    }

    /// Forgets a validator's weights of epochs before `epoch`, its challenge log from
    /// before `before_ms`, and the proof hashes that named those challenges (replays of
    /// older proofs are then judged merely invalid: misconduct all the same).
    pub fn prune_validator(&self, epoch: u64, before_ms: u64) -> Result<()> {
        Self::prune_tree(&self.weights, epoch)?;
        let mut removed = std::collections::HashSet::new();
        for kv in self.challenges.iter() {
            let (k, v) = kv?;
            let old = serde_cbor::from_slice::<ChallengeRecord>(&v)
                .map(|r| r.received_ms < before_ms)
                .unwrap_or(true); // a corrupt record goes too
            if old {
                self.challenges.remove(&k)?;
                removed.insert(k.to_vec());
            }
        }
        if removed.is_empty() {
            return Ok(());
        }
        // Only hashes naming a challenge just forgotten: a challenge still open has no
        // record yet, and its proofs' hashes must stay.
        for kv in self.proofs.iter() {
            let (k, v) = kv?;
            let gone = match serde_cbor::from_slice::<([u8; 32], PublicKey)>(&v) {
                Ok((challenge, _)) => removed.contains(challenge.as_slice()),
                Err(_) => true,
            };
            if gone {
                self.proofs.remove(k)?;
            }
        }
        Ok(())
    }

    fn prune_tree(tree: &sled::Tree, epoch: u64) -> Result<()> {
        for k in tree.range(..epoch_key(epoch)).keys() {
            tree.remove(k?)?;
        }
        Ok(())
    }

    pub fn bonds(&self) -> Result<Bonds> {
        Ok(Self::get(&self.meta, "meta", META_BONDS)?.unwrap_or_default())
    }

    pub fn consensus(&self, epoch: u64) -> Result<Option<EpochOutcome>> {
        Self::get(&self.consensus, "consensus", &epoch_key(epoch))
    }

    pub fn rewards(&self, epoch: u64) -> Result<Option<Rewards>> {
        Self::get(&self.rewards, "rewards", &epoch_key(epoch))
    }

    /// Epochs with consensus, oldest first.
    pub fn consensus_epochs(&self) -> Result<Vec<u64>> {
        self.consensus
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                Ok(u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        tree: "consensus",
                        key: hex::encode(&k),
                        reason: "key is not an epoch".into(),
                    }
                })?))
            })
            .collect()
    }

    pub fn totals(&self) -> Result<RewardTotals> {
        Ok(Self::get(&self.meta, "meta", META_TOTALS)?.unwrap_or_default())
    }

    pub fn last_consensus_epoch(&self) -> Result<Option<u64>> {
        Self::get(&self.meta, "meta", META_LAST_CONSENSUS)
    }

    pub fn ledger_from_epoch(&self) -> Result<Option<u64>> {
        Self::get(&self.meta, "meta", META_LEDGER_FROM)
    }

    pub fn set_ledger_from_epoch(&self, epoch: u64) -> Result<()> {
        Self::put(&self.meta, META_LEDGER_FROM, &epoch)
    }

    /// Records one epoch's consensus, its rewards, the new bonds and totals, atomically.
    pub fn put_epoch_outcome(&self, epoch: u64, outcome: &EpochOutcome) -> Result<()> {
        let mut totals = self.totals()?;
        let r = &outcome.rewards;
        totals.owner += r.owner;
        totals.unallocated += r.unallocated;
        for (m, v) in &r.miners {
            *totals.miners.entry(*m).or_default() += v;
        }
        for (m, v) in &r.validators {
            *totals.validators.entry(*m).or_default() += v;
        }
        let enc = |v: &dyn erased::Cbor| v.cbor();
        let mut meta = sled::Batch::default();
        meta.insert(META_TOTALS, enc(&totals));
        meta.insert(META_BONDS, enc(&outcome.bonds));
        meta.insert(META_LAST_CONSENSUS, enc(&epoch));
        use sled::Transactional;
        (&self.meta, &self.consensus, &self.rewards)
            .transaction(|(m, c, rw)| {
                m.apply_batch(&meta)?;
                c.insert(&epoch_key(epoch), enc(outcome))?;
                rw.insert(&epoch_key(epoch), enc(&outcome.rewards))?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        Ok(())
    }
}

/// A transaction's failure: only storage can fail, as ours never abort.
pub(crate) fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(s) => StoreError::Sled(s),
        sled::transaction::TransactionError::Abort(()) => {
            unreachable!("the transaction never aborts")
        }
    }
}

mod erased {
    /// Object-safe CBOR encoding, so one closure encodes values of several types.
    pub trait Cbor {
        fn cbor(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Cbor for T {
        fn cbor(&self) -> Vec<u8> {
            serde_cbor::to_vec(self).expect("plain data serializes")
        }
    }
}
