//! The validator role: tracks challenges as they arrive, verifies **every** proof (in
//! batches, off the async runtime), classifies each answer (valid, invalid, copied,
//! replayed, late), scores each challenge once its deadline has passed, closes epochs into
//! weights, and commits and reveals them. State lives in the [`Store`].
//!
//! The engine is synchronous and clock-free: the node passes the time in, so tests drive it
//! directly.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use provnet_kernels::{KernelError, Model, ModelKeys, ProofContext, ProofFile, SegmentVerifier};
use provnet_wire::{
    status::ProofNote, Challenge, ChallengeStatus, Message, MinerRanking, ProofSubmission,
    PublicKey, SeenCommit, ValidatorStatus, WeightsCommit, WeightsReveal,
};
use rand::RngCore;
use tracing::{debug, info, warn};

use crate::epoch::Epochs;
use crate::ledger::Ledger;
use crate::score::{Outcome, ScoreParams, Scores};
use crate::store::{AnswerRecord, ChallengeRecord, Result, Store, WeightsRecord};

/// A model this validator verifies: its verifying keys, prepared once.
pub struct VerifyingModel {
    pub model: Model,
    pub verifiers: Vec<SegmentVerifier>,
}

impl VerifyingModel {
    pub fn load(dir: &Path) -> std::result::Result<VerifyingModel, KernelError> {
        let model = Model::load(dir)?;
        let keys = ModelKeys::open(dir, &model)?;
        let verifiers = (0..model.segments.len())
            .map(|i| {
                let (vk, id) = keys.verifying_key(i)?;
                Ok(SegmentVerifier::new(i, vk, id))
            })
            .collect::<std::result::Result<Vec<_>, KernelError>>()?;
        Ok(VerifyingModel { model, verifiers })
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub score: ScoreParams,
    pub epochs: Epochs,
    /// After a deadline, how long to wait for verdicts still being computed before scoring.
    pub settle_ms: u64,
    /// How long after its deadline a challenge stays in memory, so late and duplicate
    /// answers are recognised.
    pub keep_ms: u64,
    /// Challenges kept for the status snapshot.
    pub recent: usize,
}

impl EngineConfig {
    pub fn new(score: ScoreParams, epochs: Epochs) -> EngineConfig {
        EngineConfig {
            score,
            epochs,
            settle_ms: 500,
            keep_ms: 120_000,
            recent: 32,
        }
    }
}

/// Why a challenge or proof was not taken up (counted; the node keeps serving).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error("segment {segment} does not exist (the model has {count})")]
    NoSuchSegment { segment: u32, count: usize },
    #[error("bad challenge input: {0}")]
    BadInput(String),
    #[error("challenge already known")]
    DuplicateChallenge,
    #[error("proof for an unknown challenge {0}")]
    UnknownChallenge(String),
    #[error("proof for challenge {0}, which is closed")]
    ClosedChallenge(String),
    #[error("this miner already answered the challenge")]
    DuplicateAnswer,
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::UnknownModel(_) => "unknown_model",
            Refusal::NoSuchSegment { .. } => "no_such_segment",
            Refusal::BadInput(_) => "bad_input",
            Refusal::DuplicateChallenge => "duplicate_challenge",
            Refusal::UnknownChallenge(_) => "unknown_challenge",
            Refusal::ClosedChallenge(_) => "closed_challenge",
            Refusal::DuplicateAnswer => "duplicate_answer",
        }
    }
}

/// One proof to verify.
pub struct VerifyJob {
    pub challenge_id: [u8; 32],
    pub miner: PublicKey,
    pub model: Arc<VerifyingModel>,
    pub file: ProofFile,
}

/// A verdict on a [`VerifyJob`].
pub struct Verdict {
    pub challenge_id: [u8; 32],
    pub miner: PublicKey,
    pub result: std::result::Result<(), String>,
}

struct Pending {
    received_ms: f64,
    proof_bytes: usize,
    hash: [u8; 32],
}

struct Open {
    record: ChallengeRecord,
    input: Vec<i64>,
    nonce: [u8; 32],
    received_ms: f64,
    pending: HashMap<PublicKey, Pending>,
    /// First sender of each proof's bytes.
    first_sender: HashMap<[u8; 32], PublicKey>,
    outcomes: BTreeMap<PublicKey, Outcome>,
    finalized: bool,
}

pub struct Validator {
    store: Store,
    cfg: EngineConfig,
    models: HashMap<[u8; 32], Arc<VerifyingModel>>,
    scores: Scores,
    open: HashMap<[u8; 32], Open>,
    open_epoch: u64,
    sent: HashSet<(u64, u8)>,
    refused: BTreeMap<String, u64>,
    recent: Vec<ChallengeStatus>,
    /// Each miner's latest verdicts, for operators (memory only).
    notes: HashMap<PublicKey, VecDeque<ProofNote>>,
    /// Proofs that arrived before their challenge (gossip took another path), by
    /// challenge: (miner, proof, received). Kept [`EARLY_KEEP_MS`], at most [`EARLY_MAX`].
    early: HashMap<[u8; 32], Vec<(PublicKey, ProofSubmission, f64)>>,
    early_count: usize,
    /// Verification jobs for early proofs whose challenge has now arrived.
    ready: Vec<VerifyJob>,
    verified: u64,
}

/// Verdicts kept per miner for its detail view.
const NOTES_PER_MINER: usize = 16;
/// How long a proof may wait for its challenge to arrive, and how many may wait.
const EARLY_KEEP_MS: f64 = 5_000.0;
const EARLY_MAX: usize = 1024;

pub fn hash_proof(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn short(id: &[u8]) -> String {
    hex::encode(&id[..8.min(id.len())])
}

impl Validator {
    pub fn open(
        store: Store,
        models: Vec<Arc<VerifyingModel>>,
        cfg: EngineConfig,
        now_ms: u64,
    ) -> Result<Validator> {
        let scores = store.scores()?;
        let open_epoch = match store.open_epoch()? {
            Some(e) => e,
            None => {
                let e = cfg.epochs.of(now_ms);
                store.set_open_epoch(e)?;
                e
            }
        };
        Ok(Validator {
            store,
            models: models.into_iter().map(|m| (m.model.id(), m)).collect(),
            cfg,
            scores,
            open: HashMap::new(),
            open_epoch,
            sent: HashSet::new(),
            refused: BTreeMap::new(),
            recent: Vec::new(),
            notes: HashMap::new(),
            early: HashMap::new(),
            early_count: 0,
            ready: Vec::new(),
            verified: 0,
        })
    }

    fn refuse<T>(&mut self, r: Refusal) -> std::result::Result<T, Refusal> {
        *self.refused.entry(r.as_str().into()).or_default() += 1;
        debug!(target: "validator", reason = r.as_str(), "refused: {r}");
        Err(r)
    }

    /// A challenge arrived from `challenger`. Its clock starts now.
    pub fn on_challenge(
        &mut self,
        challenger: &PublicKey,
        c: &Challenge,
        now_ms: f64,
    ) -> std::result::Result<[u8; 32], Refusal> {
        let id = c.id(challenger);
        let Some(vm) = self.models.get(&c.model_id) else {
            return self.refuse(Refusal::UnknownModel(short(&c.model_id)));
        };
        let seg = match vm.model.segment(c.segment as usize) {
            Ok(s) => s,
            Err(_) => {
                let count = vm.model.segments.len();
                return self.refuse(Refusal::NoSuchSegment {
                    segment: c.segment,
                    count,
                });
            }
        };
        if let Err(e) = seg.check_input(&c.input) {
            return self.refuse(Refusal::BadInput(e.to_string()));
        }
        if self.open.contains_key(&id) {
            return self.refuse(Refusal::DuplicateChallenge);
        }
        self.open.insert(
            id,
            Open {
                record: ChallengeRecord {
                    id,
                    challenger: *challenger,
                    model_id: c.model_id,
                    segment: c.segment,
                    received_ms: now_ms as u64,
                    deadline_ms: c.deadline_ms,
                    answers: Vec::new(),
                },
                input: c.input.clone(),
                nonce: c.nonce,
                received_ms: now_ms,
                pending: HashMap::new(),
                first_sender: HashMap::new(),
                outcomes: BTreeMap::new(),
                finalized: false,
            },
        );
        // Proofs that beat their challenge here count as received with it.
        for (miner, p, _) in self.early.remove(&id).unwrap_or_default() {
            self.early_count -= 1;
            if let Ok(Some(job)) = self.on_proof(&miner, &p, now_ms) {
                self.ready.push(job);
            }
        }
        Ok(id)
    }

    /// Verification jobs for proofs that arrived before their challenge and can now be
    /// checked (call after [`Validator::on_challenge`]).
    pub fn take_ready(&mut self) -> Vec<VerifyJob> {
        std::mem::take(&mut self.ready)
    }

    /// A proof arrived from `miner`. Returns the verification job, or `None` when the
    /// answer was settled without one (a claim that cannot even be assembled is invalid).
    pub fn on_proof(
        &mut self,
        miner: &PublicKey,
        p: &ProofSubmission,
        now_ms: f64,
    ) -> std::result::Result<Option<VerifyJob>, Refusal> {
        let Some(open) = self.open.get_mut(&p.challenge_id) else {
            let known = matches!(self.store.challenge(&p.challenge_id), Ok(Some(_)));
            let id = short(&p.challenge_id);
            if known {
                return self.refuse(Refusal::ClosedChallenge(id));
            }
            // Its challenge may still be on its way: hold it a while (counted as an
            // unknown challenge only if the challenge never comes).
            let waiting = self.early.entry(p.challenge_id).or_default();
            if self.early_count < EARLY_MAX && !waiting.iter().any(|(m, _, _)| m == miner) {
                waiting.push((*miner, p.clone(), now_ms));
                self.early_count += 1;
                return Ok(None);
            }
            if waiting.is_empty() {
                self.early.remove(&p.challenge_id);
            }
            return self.refuse(Refusal::UnknownChallenge(id));
        };
        if open.outcomes.contains_key(miner) || open.pending.contains_key(miner) {
            return self.refuse(Refusal::DuplicateAnswer);
        }
        let hash = hash_proof(&p.proof);
        open.first_sender.entry(hash).or_insert(*miner);
        open.pending.insert(
            *miner,
            Pending {
                received_ms: now_ms,
                proof_bytes: p.proof.len(),
                hash,
            },
        );
        let vm = self.models[&open.record.model_id].clone();
        let ctx = ProofContext {
            challenge: p.challenge_id,
            nonce: open.nonce,
            miner: *miner,
        };
        let file = if p.model_id != open.record.model_id || p.segment != open.record.segment {
            Err("the proof names another model or segment than the challenge".to_string())
        } else {
            ProofFile::from_claim(
                &vm.model,
                p.segment as usize,
                &p.vk_id,
                &ctx,
                &open.input,
                &p.output,
                &p.proof,
            )
            .map_err(|e| e.to_string())
        };
        match file {
            Ok(file) => Ok(Some(VerifyJob {
                challenge_id: p.challenge_id,
                miner: *miner,
                model: vm,
                file,
            })),
            Err(reason) => {
                let verdict = Verdict {
                    challenge_id: p.challenge_id,
                    miner: *miner,
                    result: Err(reason),
                };
                if let Err(e) = self.on_verdict(verdict, now_ms) {
                    warn!(target: "validator", "recording a verdict: {e}");
                }
                Ok(None)
            }
        }
    }

    /// Forgets an answer that could not be verified (the verification queue was full): it
    /// neither counts for nor against the miner.
    pub fn forget(&mut self, challenge_id: &[u8; 32], miner: &PublicKey) {
        *self.refused.entry("verify_queue_full".into()).or_default() += 1;
        if let Some(o) = self.open.get_mut(challenge_id) {
            o.pending.remove(miner);
        }
    }

    /// A verdict came back from the verification pool: classify and record the answer.
    pub fn on_verdict(&mut self, v: Verdict, now_ms: f64) -> Result<()> {
        self.verified += 1;
        let Some(open) = self.open.get_mut(&v.challenge_id) else {
            return Ok(()); // dropped after keep_ms: nothing left to score
        };
        let Some(p) = open.pending.remove(&v.miner) else {
            return Ok(());
        };
        let late = p.received_ms > open.record.deadline_ms as f64;
        let (outcome, detail) = match &v.result {
            Ok(()) if late => (Outcome::Late, "valid, after the deadline".to_string()),
            Ok(()) => (
                Outcome::Valid {
                    latency_ms: p.received_ms - open.received_ms,
                    proof_bytes: p.proof_bytes,
                },
                String::new(),
            ),
            Err(reason) => {
                let first = open.first_sender.get(&p.hash).copied();
                if first.is_some_and(|m| m != v.miner) {
                    (Outcome::Copied, format!("another miner's proof: {reason}"))
                } else if let Some((earlier, _)) = self
                    .store
                    .proof_seen(&p.hash)?
                    .filter(|(c, _)| *c != v.challenge_id)
                {
                    (
                        Outcome::Replayed,
                        format!("a proof made for challenge {}", short(&earlier)),
                    )
                } else {
                    (Outcome::Invalid, reason.clone())
                }
            }
        };
        if v.result.is_ok() {
            self.store
                .put_proof_seen(&p.hash, &v.challenge_id, &v.miner)?;
        }
        let verified_ms = now_ms - open.received_ms;
        let mut rec = self.store.miner(&v.miner)?;
        rec.count(&outcome, verified_ms);
        self.store.put_miner(&v.miner, &rec)?;
        if outcome != Outcome::Late && !matches!(outcome, Outcome::Valid { .. }) {
            info!(target: "validator", miner = %short(&v.miner), challenge = %short(&v.challenge_id), ?outcome, %detail, "misconduct");
        }
        let notes = self.notes.entry(v.miner).or_default();
        if notes.len() == NOTES_PER_MINER {
            notes.pop_front();
        }
        notes.push_back(ProofNote {
            challenge: short(&v.challenge_id),
            at_ms: now_ms as u64,
            outcome: outcome.name().into(),
            latency_ms: match outcome {
                Outcome::Valid { latency_ms, .. } => Some(latency_ms),
                _ => None,
            },
            proof_bytes: Some(p.proof_bytes as u64),
            detail: detail.clone(),
        });
        open.record.answers.push(AnswerRecord {
            miner: v.miner,
            outcome,
            verified_ms,
            detail,
        });
        if open.finalized {
            // Scored already: an answer this late counts on its own.
            let one = BTreeMap::from([(v.miner, outcome)]);
            self.scores.record(&self.cfg.score, &one);
            self.store.put_challenge(&open.record)?;
            self.store.set_scores(&self.scores)?;
        } else {
            open.outcomes.insert(v.miner, outcome);
        }
        Ok(())
    }

    /// Scores challenges whose deadline has passed, closes epochs, and returns the weight
    /// commits and reveals to publish now.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Message>> {
        self.expire_early(now_ms);
        self.finalize_due(now_ms)?;
        self.close_epochs(now_ms)?;
        self.due_messages(now_ms)
    }

    /// Drops early proofs whose challenge never came.
    fn expire_early(&mut self, now_ms: u64) {
        let now = now_ms as f64;
        let mut dropped = 0;
        self.early.retain(|_, v| {
            let before = v.len();
            v.retain(|(_, _, at)| now - at < EARLY_KEEP_MS);
            dropped += before - v.len();
            !v.is_empty()
        });
        if dropped > 0 {
            self.early_count -= dropped;
            *self.refused.entry("unknown_challenge".into()).or_default() += dropped as u64;
            debug!(target: "validator", dropped, "proofs for challenges that never came");
        }
    }

    fn finalize_due(&mut self, now_ms: u64) -> Result<()> {
        let settle = self.cfg.settle_ms;
        let keep = self.cfg.keep_ms;
        let due: Vec<[u8; 32]> = self
            .open
            .iter()
            .filter(|(_, o)| {
                let d = o.record.deadline_ms;
                !o.finalized
                    && ((now_ms >= d + settle && o.pending.is_empty()) || now_ms >= d + keep)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut changed = false;
        for id in due {
            let o = self.open.get_mut(&id).expect("listed above");
            o.finalized = true;
            self.scores.record(&self.cfg.score, &o.outcomes);
            self.store.put_challenge(&o.record)?;
            changed = true;
            let fastest = o
                .outcomes
                .values()
                .filter_map(|x| match x {
                    Outcome::Valid { latency_ms, .. } => Some(*latency_ms),
                    _ => None,
                })
                .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
            let st = ChallengeStatus {
                id: hex::encode(id),
                model: short(&o.record.model_id),
                segment: o.record.segment,
                received_ms: o.record.received_ms,
                deadline_ms: o.record.deadline_ms,
                proofs: o.outcomes.len() as u32,
                valid: o
                    .outcomes
                    .values()
                    .filter(|x| matches!(x, Outcome::Valid { .. }))
                    .count() as u32,
                fastest_ms: fastest,
                status: "closed".into(),
            };
            debug!(target: "validator", challenge = %short(&id), proofs = st.proofs, valid = st.valid, "challenge scored");
            self.recent.push(st);
        }
        if self.recent.len() > self.cfg.recent {
            let cut = self.recent.len() - self.cfg.recent;
            self.recent.drain(..cut);
        }
        self.open
            .retain(|_, o| !(o.finalized && now_ms >= o.record.deadline_ms + keep));
        if changed {
            self.store.set_scores(&self.scores)?;
        }
        Ok(())
    }

    fn close_epochs(&mut self, now_ms: u64) -> Result<()> {
        let cur = self.cfg.epochs.of(now_ms);
        while self.open_epoch < cur {
            let epoch = self.open_epoch;
            let weights = self.scores.close_epoch();
            let mut salt = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            let reveal = WeightsReveal {
                epoch,
                salt,
                weights,
                seen_commits: Vec::new(),
            };
            let rec = WeightsRecord {
                epoch,
                commitment: reveal.commitment(),
                weights: reveal.weights,
                salt,
                closed_at_ms: now_ms,
            };
            self.store.put_weights(&rec)?;
            self.open_epoch += 1;
            self.store.set_open_epoch(self.open_epoch)?;
            self.store.set_scores(&self.scores)?;
            // The salt must be on disk before its commitment leaves the node.
            self.store.flush()?;
            info!(target: "validator", epoch, miners = rec.weights.len(), "epoch closed: weights set");
        }
        Ok(())
    }

    /// Commit twice in the commit window and reveal twice in the reveal window, so a peer
    /// that restarts or joins late still hears them.
    fn due_messages(&mut self, now_ms: u64) -> Result<Vec<Message>> {
        let e = self.cfg.epochs;
        let cur = e.of(now_ms);
        let Some(last) = cur.checked_sub(1) else {
            return Ok(Vec::new());
        };
        let Some(rec) = self.store.weights(last)? else {
            return Ok(Vec::new());
        };
        let quarter = e.length_ms / 4;
        let start = e.start(cur);
        let mut out = Vec::new();
        let phases = [
            (0u8, start, e.commit_deadline(last)),
            (1, start + quarter, e.commit_deadline(last)),
            (2, e.reveal_from(last), e.consensus_at(last)),
            (3, e.reveal_from(last) + quarter, e.consensus_at(last)),
        ];
        for (phase, from, until) in phases {
            if now_ms >= from && now_ms < until && self.sent.insert((last, phase)) {
                out.push(if phase < 2 {
                    Message::WeightsCommit(WeightsCommit {
                        epoch: last,
                        commitment: rec.commitment,
                    })
                } else {
                    Message::WeightsReveal(WeightsReveal {
                        epoch: last,
                        salt: rec.salt,
                        weights: rec.weights.clone(),
                        // What this node's ledger accepted in the commit window, for nodes
                        // that missed it.
                        seen_commits: self
                            .store
                            .commits(last)?
                            .into_iter()
                            .map(|(validator, commitment)| SeenCommit {
                                validator,
                                commitment,
                            })
                            .collect(),
                    })
                });
            }
        }
        Ok(out)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The role's snapshot, rankings joined with the ledger's consensus and rewards.
    pub fn status(
        &self,
        ledger: &Ledger,
        verify_queue: usize,
        batches: u64,
    ) -> Result<ValidatorStatus> {
        let miners = self.store.miners()?;
        let history = self.store.weights_history()?;
        let last_weights: BTreeMap<PublicKey, u16> = history
            .last()
            .map(|r| r.weights.iter().map(|w| (w.miner, w.weight)).collect())
            .unwrap_or_default();
        let ls = ledger.store();
        let last_consensus = ls.last_consensus_epoch()?;
        let outcome = match last_consensus {
            Some(e) => ls.consensus(e)?,
            None => None,
        };
        let totals = ls.totals()?;
        let mut keys: Vec<PublicKey> = miners.keys().copied().collect();
        keys.extend(self.scores.ema.keys().copied());
        keys.sort_unstable();
        keys.dedup();
        let mut rankings: Vec<MinerRanking> = keys
            .iter()
            .map(|m| {
                let rec = miners.get(m).cloned().unwrap_or_default();
                let sorted = |v: &[f64]| {
                    let mut v = v.to_vec();
                    v.sort_by(f64::total_cmp);
                    v
                };
                let lat = sorted(&rec.latency_ms);
                let ver = sorted(&rec.verified_ms);
                let of = |map: Option<&BTreeMap<PublicKey, f64>>| {
                    map.and_then(|x| x.get(m)).copied().unwrap_or(0.0)
                };
                MinerRanking {
                    miner: hex::encode(m),
                    score: self.scores.ema.get(m).copied().unwrap_or(0.0),
                    weight: last_weights.get(m).copied().unwrap_or(0),
                    consensus: of(outcome.as_ref().map(|o| &o.consensus)),
                    incentive: of(outcome.as_ref().map(|o| &o.incentive)),
                    valid: rec.valid,
                    invalid: rec.invalid,
                    copied: rec.copied,
                    replayed: rec.replayed,
                    late: rec.late,
                    latency_ms_p50: percentile(&lat, 0.5),
                    latency_ms_p95: percentile(&lat, 0.95),
                    verified_ms_p50: percentile(&ver, 0.5),
                    verified_ms_p95: percentile(&ver, 0.95),
                    proof_bytes: rec.last_proof_bytes,
                    reward_last_epoch: outcome
                        .as_ref()
                        .and_then(|o| o.rewards.miners.get(m))
                        .copied()
                        .unwrap_or(0),
                    reward_total: totals.miners.get(m).copied().unwrap_or(0),
                    recent_proofs: self
                        .notes
                        .get(m)
                        .map(|n| n.iter().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        rankings.sort_by(|a, b| {
            b.weight
                .cmp(&a.weight)
                .then(b.score.total_cmp(&a.score))
                .then(a.miner.cmp(&b.miner))
        });
        let mut recent = self.recent.clone();
        for (id, o) in &self.open {
            if !o.finalized {
                recent.push(ChallengeStatus {
                    id: hex::encode(id),
                    model: short(&o.record.model_id),
                    segment: o.record.segment,
                    received_ms: o.record.received_ms,
                    deadline_ms: o.record.deadline_ms,
                    proofs: (o.outcomes.len() + o.pending.len()) as u32,
                    valid: 0,
                    fastest_ms: None,
                    status: "open".into(),
                });
            }
        }
        Ok(ValidatorStatus {
            open_challenges: self.open.values().filter(|o| !o.finalized).count(),
            verified: self.verified,
            verify_batches: batches,
            verify_queue,
            last_committed_epoch: history.last().map(|r| r.epoch),
            last_revealed_epoch: self
                .sent
                .iter()
                .filter(|(_, p)| *p >= 2)
                .map(|(e, _)| *e)
                .max(),
            rankings,
            recent_challenges: recent,
            refused: self.refused.clone(),
        })
    }
}

pub use provnet_wire::status::percentile;

/// Verifies proofs on a dedicated thread: whatever has queued up while it worked is
/// verified as one batch per segment (one shared final exponentiation), bisected when a
/// batch fails so every proof gets its own verdict.
pub struct VerifyPool {
    tx: Option<mpsc::SyncSender<VerifyJob>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PoolStats>,
}

#[derive(Default)]
struct PoolStats {
    queued: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicU64,
}

/// Most proofs verified together.
pub const MAX_BATCH: usize = 256;

impl VerifyPool {
    /// `capacity` bounds the queue; `on_verdict` is called on the pool's thread.
    pub fn start(
        capacity: usize,
        on_verdict: impl Fn(Verdict) + Send + 'static,
    ) -> std::io::Result<VerifyPool> {
        let (tx, rx) = mpsc::sync_channel::<VerifyJob>(capacity);
        let stats = Arc::new(PoolStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || verify_loop(&rx, &st, &on_verdict))?;
        Ok(VerifyPool {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Queues a job; returns false (and drops the job) if the queue is full.
    pub fn submit(&self, job: VerifyJob) -> bool {
        use std::sync::atomic::Ordering;
        let tx = self.tx.as_ref().expect("open until dropped");
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = tx.try_send(job).is_ok();
        if !sent {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    pub fn queued(&self) -> usize {
        self.stats.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.stats
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn verify_loop(rx: &mpsc::Receiver<VerifyJob>, st: &PoolStats, on_verdict: &dyn Fn(Verdict)) {
    use std::sync::atomic::Ordering;
    let mut rng = rand::rngs::OsRng;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        st.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        // One batch per (model, segment).
        let mut groups: BTreeMap<([u8; 32], u32), Vec<VerifyJob>> = BTreeMap::new();
        for j in jobs {
            groups
                .entry((j.model.model.id(), j.file.segment))
                .or_default()
                .push(j);
        }
        for ((_, segment), group) in groups {
            st.batches.fetch_add(1, Ordering::Relaxed);
            let vm = group[0].model.clone();
            let results: Vec<std::result::Result<(), String>> =
                match vm.verifiers.get(segment as usize) {
                    None => group
                        .iter()
                        .map(|_| Err(format!("segment {segment} does not exist")))
                        .collect(),
                    Some(verifier) => {
                        let items: Vec<(&ProofFile, ProofContext)> =
                            group.iter().map(|j| (&j.file, j.file.context())).collect();
                        verifier
                            .verify_files(&vm.model, &items, &mut rng)
                            .into_iter()
                            .map(|r| r.map_err(|e| e.to_string()))
                            .collect()
                    }
                };
            for (job, result) in group.into_iter().zip(results) {
                on_verdict(Verdict {
                    challenge_id: job.challenge_id,
                    miner: job.miner,
                    result,
                });
            }
        }
    }
}
