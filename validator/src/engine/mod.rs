//! The validator role: issues its own challenges (see [`crate::issue`]) and tracks them from
//! its own publish, verifies **every** proof to them (in batches, off the async runtime),
//! classifies each answer (valid, invalid, copied, replayed, late), scores each challenge
//! once its deadline has passed (every tracked miner that did not answer samples 0), closes
//! epochs into weights, and commits and reveals them. State lives in the [`Store`].
//!
//! The engine is synchronous and clock-free: the node passes the time in, so tests drive it
//! directly.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use provnet_kernels::{KernelError, Model, ModelKeys, ProofContext, ProofFile, SegmentVerifier};
use provnet_wire::{
    status::ProofNote, Challenge, ChallengeStatus, Message, ProofSubmission, PublicKey, SeenCommit,
    WeightsCommit, WeightsReveal,
};
use rand::RngCore;
use tracing::{debug, info, warn};

mod status;

use crate::epoch::Epochs;
use crate::issue::{IssueConfig, Issuer, RequestRefusal};
pub use crate::pool::{Verdict, VerifyJob, VerifyPool, MAX_BATCH};
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
    /// What this validator issues.
    pub issue: IssueConfig,
    /// Most of this validator's challenges open at once; benchmark challenges and
    /// requests past it wait or are refused.
    pub max_open: usize,
    /// Most miners an epoch's weights name (the genesis's `max_miners`).
    pub max_miners: usize,
    /// The genesis validators: their challenges are theirs to score, not requests.
    pub validators: std::collections::BTreeSet<PublicKey>,
    /// Epochs of weights and of the challenge log kept in sled (the genesis's
    /// `keep_epochs`); older ones are pruned at each epoch's close.
    pub keep_epochs: u64,
}

impl EngineConfig {
    pub fn new(score: ScoreParams, epochs: Epochs) -> EngineConfig {
        EngineConfig {
            score,
            epochs,
            settle_ms: 500,
            keep_ms: 120_000,
            recent: 32,
            issue: IssueConfig::default(),
            max_open: 4096,
            max_miners: provnet_wire::message::MAX_WEIGHTS,
            validators: Default::default(),
            keep_epochs: 256,
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
    #[error("{0} of this validator's challenges are open already")]
    TooManyOpen(usize),
    #[error("request not adopted: {0}")]
    Request(RequestRefusal),
    #[error("proof for challenge {0}, which this validator did not issue")]
    NotOurs(String),
    #[error("challenge {0} has had {1} answers already")]
    TooManyAnswers(String, usize),
    #[error("proof for challenge {0}, which is closed")]
    ClosedChallenge(String),
    #[error("this miner already answered the challenge")]
    DuplicateAnswer,
    #[error("the miner holds no slot in the registry")]
    Unregistered,
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::UnknownModel(_) => "unknown_model",
            Refusal::NoSuchSegment { .. } => "no_such_segment",
            Refusal::BadInput(_) => "bad_input",
            Refusal::DuplicateChallenge => "duplicate_challenge",
            Refusal::TooManyOpen(_) => "too_many_open",
            Refusal::Request(RequestRefusal::NotAdmitted) => "request_not_admitted",
            Refusal::Request(RequestRefusal::OverQuota(_)) => "request_over_quota",
            Refusal::Request(RequestRefusal::Duplicate) => "request_duplicate",
            Refusal::Request(RequestRefusal::TooLate(_)) => "request_too_late",
            Refusal::NotOurs(_) => "not_ours",
            Refusal::TooManyAnswers(..) => "too_many_answers",
            Refusal::ClosedChallenge(_) => "closed_challenge",
            Refusal::DuplicateAnswer => "duplicate_answer",
            Refusal::Unregistered => "unregistered",
        }
    }
}

struct Pending {
    received_ms: f64,
    proof_bytes: usize,
    hash: [u8; 32],
    /// The output the proof claims, kept only for watched challenges.
    output: Option<Vec<i64>>,
}

/// A valid, on-time proof to a watched challenge (a dispute's leaf): what it proved, and
/// who.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proved {
    pub challenge_id: [u8; 32],
    pub request: Option<[u8; 32]>,
    pub miner: PublicKey,
    pub output: Vec<i64>,
}

/// Watched results waiting to be taken, at most (one per watched challenge is enough).
const MAX_PROVED: usize = 1024;

struct Open {
    record: ChallengeRecord,
    input: Vec<i64>,
    nonce: [u8; 32],
    received_ms: f64,
    pending: HashMap<PublicKey, Pending>,
    /// First sender of each proof's bytes.
    first_sender: HashMap<[u8; 32], PublicKey>,
    /// The hash of each miner's answer (to find copies that beat their original here).
    answer_hash: HashMap<PublicKey, [u8; 32]>,
    outcomes: BTreeMap<PublicKey, Outcome>,
    /// The request it names, when its valid proofs are wanted ([`Validator::issue_watched`]).
    watched: Option<Option<[u8; 32]>>,
    finalized: bool,
}

pub struct Validator {
    store: Store,
    cfg: EngineConfig,
    /// This validator's key: it names the challenges it issues.
    me: PublicKey,
    issuer: Issuer,
    models: HashMap<[u8; 32], Arc<VerifyingModel>>,
    scores: Scores,
    open: HashMap<[u8; 32], Open>,
    open_epoch: u64,
    sent: HashSet<(u64, u8)>,
    refused: BTreeMap<String, u64>,
    recent: Vec<ChallengeStatus>,
    /// Each miner's latest verdicts, for operators (memory only).
    notes: HashMap<PublicKey, VecDeque<ProofNote>>,
    verified: u64,
    /// The registered miners, the only ones scored (see [`Validator::set_roster`]).
    roster: Option<HashSet<PublicKey>>,
    /// Valid proofs to watched challenges, until taken ([`Validator::take_proved`]).
    proved: Vec<Proved>,
}

/// Verdicts kept per miner for its detail view.
const NOTES_PER_MINER: usize = 16;
/// Miners whose verdict notes are kept (the rest are dropped at the next epoch's close).
const NOTES_MINERS: usize = 1024;
/// Miners a status snapshot ranks, at most.
pub const MAX_RANKINGS: usize = 256;
/// Per-miner counters kept before those of forgotten miners are deleted.
const MINER_RECORDS: usize = 4096;
/// Most answers one challenge takes (each from a different miner).
pub const MAX_ANSWERS: usize = 1024;

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
        me: PublicKey,
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
            issuer: Issuer::new(cfg.issue.clone(), models.clone(), now_ms as f64),
            me,
            models: models.into_iter().map(|m| (m.model.id(), m)).collect(),
            cfg,
            scores,
            open: HashMap::new(),
            open_epoch,
            sent: HashSet::new(),
            refused: BTreeMap::new(),
            recent: Vec::new(),
            notes: HashMap::new(),
            verified: 0,
            roster: None,
            proved: Vec::new(),
        })
    }

    fn refuse<T>(&mut self, r: Refusal) -> std::result::Result<T, Refusal> {
        *self.refused.entry(r.as_str().into()).or_default() += 1;
        debug!(target: "validator", reason = r.as_str(), "refused: {r}");
        Err(r)
    }

    /// Checks that `c` names a model, segment and input this validator can verify.
    fn check_challenge(&mut self, c: &Challenge) -> std::result::Result<(), Refusal> {
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
        Ok(())
    }

    /// [`Validator::issue`], keeping the output of every valid, on-time proof for
    /// [`Validator::take_proved`]: a dispute's leaf, scored like any other challenge.
    pub fn issue_watched(
        &mut self,
        c: &Challenge,
        now_ms: f64,
    ) -> std::result::Result<[u8; 32], Refusal> {
        let id = self.issue(c, now_ms)?;
        if let Some(open) = self.open.get_mut(&id) {
            open.watched = Some(c.request);
        }
        Ok(id)
    }

    /// Valid, on-time proofs to watched challenges since the last call.
    pub fn take_proved(&mut self) -> Vec<Proved> {
        std::mem::take(&mut self.proved)
    }

    /// Opens a challenge this validator is about to publish: its clock starts at `now_ms`.
    pub fn issue(&mut self, c: &Challenge, now_ms: f64) -> std::result::Result<[u8; 32], Refusal> {
        self.check_challenge(c)?;
        let id = c.id(&self.me);
        if self.open.contains_key(&id) {
            return self.refuse(Refusal::DuplicateChallenge);
        }
        let open = self.open.values().filter(|o| !o.finalized).count();
        if open >= self.cfg.max_open {
            return self.refuse(Refusal::TooManyOpen(open));
        }
        self.open.insert(
            id,
            Open {
                record: ChallengeRecord {
                    id,
                    challenger: self.me,
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
                answer_hash: HashMap::new(),
                outcomes: BTreeMap::new(),
                watched: None,
                finalized: false,
            },
        );
        Ok(id)
    }

    /// The benchmark challenges due at `now_ms`, opened: publish each, and
    /// [`Validator::withdraw`] any that could not be published.
    pub fn issue_due(&mut self, now_ms: f64) -> Vec<Challenge> {
        let mut out = Vec::new();
        while let Some(c) = self.issuer.benchmark(now_ms) {
            if self.issue(&c, now_ms).is_ok() {
                out.push(c);
            }
        }
        out
    }

    /// A request from an admitted challenger: this validator's own challenge adopting it,
    /// opened (publish it), or why not. Challenges other validators issue are not ours to
    /// score: they come back `Ok(None)`.
    pub fn on_request(
        &mut self,
        sender: &PublicKey,
        request: &Challenge,
        now_ms: f64,
    ) -> std::result::Result<Option<Challenge>, Refusal> {
        if !self.issuer.is_admitted(sender) {
            if self.is_validator(sender) {
                return Ok(None);
            }
            return self.refuse(Refusal::Request(RequestRefusal::NotAdmitted));
        }
        self.check_challenge(request)?;
        let epoch = self.cfg.epochs.of(now_ms as u64);
        let c = match self.issuer.adopt(sender, request, epoch, now_ms) {
            Ok(c) => c,
            Err(r) => return self.refuse(Refusal::Request(r)),
        };
        self.issue(&c, now_ms)?;
        Ok(Some(c))
    }

    /// Whether `key` is a validator: itself, or one whose challenges it hears but does
    /// not score.
    fn is_validator(&self, key: &PublicKey) -> bool {
        *key == self.me || self.cfg.validators.contains(key)
    }

    /// Forgets a challenge that could not be published: nobody was asked, so nobody is
    /// scored on it.
    pub fn withdraw(&mut self, id: &[u8; 32]) {
        if self.open.remove(id).is_some() {
            *self.refused.entry("unpublished".into()).or_default() += 1;
        }
    }

    /// The miners this validator scores: the registry's, kept current by the node. Proofs
    /// from anyone else are refused before any verification work, and a miner that leaves
    /// the registry leaves the scores with it. `None` scores anyone (tests, development).
    pub fn set_roster(&mut self, roster: Option<HashSet<PublicKey>>) -> Result<()> {
        if let Some(r) = &roster {
            let before = self.scores.ema.len();
            self.scores.ema.retain(|m, _| r.contains(m));
            self.notes.retain(|m, _| r.contains(m));
            if self.scores.ema.len() != before {
                self.store.set_scores(&self.scores)?;
            }
        }
        self.roster = roster;
        Ok(())
    }

    /// A proof arrived from `miner`. Returns the verification job, or `None` when the
    /// answer was settled without one (a claim that cannot even be assembled is invalid).
    pub fn on_proof(
        &mut self,
        miner: &PublicKey,
        p: &ProofSubmission,
        now_ms: f64,
    ) -> std::result::Result<Option<VerifyJob>, Refusal> {
        if self.roster.as_ref().is_some_and(|r| !r.contains(miner)) {
            return self.refuse(Refusal::Unregistered);
        }
        let Some(open) = self.open.get_mut(&p.challenge_id) else {
            let known = matches!(self.store.challenge(&p.challenge_id), Ok(Some(_)));
            let id = short(&p.challenge_id);
            if known {
                return self.refuse(Refusal::ClosedChallenge(id));
            }
            // This validator opens its challenges before publishing them, so a proof can
            // never beat its challenge here: this one answers someone else's.
            return self.refuse(Refusal::NotOurs(id));
        };
        if open.outcomes.contains_key(miner) || open.pending.contains_key(miner) {
            return self.refuse(Refusal::DuplicateAnswer);
        }
        let answers = open.outcomes.len() + open.pending.len();
        if answers >= MAX_ANSWERS {
            return self.refuse(Refusal::TooManyAnswers(short(&p.challenge_id), answers));
        }
        let hash = hash_proof(&p.proof);
        open.first_sender.entry(hash).or_insert(*miner);
        open.answer_hash.insert(*miner, hash);
        open.pending.insert(
            *miner,
            Pending {
                received_ms: now_ms,
                proof_bytes: p.proof.len(),
                hash,
                output: open.watched.is_some().then(|| p.output.clone()),
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

    /// Forgets an answer that could not be verified (shed from a full verification
    /// backlog): it neither counts for nor against the miner.
    pub fn forget(&mut self, challenge_id: &[u8; 32], miner: &PublicKey) {
        *self.refused.entry("verify_shed".into()).or_default() += 1;
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
        if let (Some(request), Some(output), Outcome::Valid { .. }) =
            (open.watched, p.output, &outcome)
        {
            if self.proved.len() < MAX_PROVED {
                self.proved.push(Proved {
                    challenge_id: v.challenge_id,
                    request,
                    miner: v.miner,
                    output,
                });
            }
        }
        let verified_ms = now_ms - open.received_ms;
        let mut rec = self.store.miner(&v.miner)?;
        rec.count(&outcome, verified_ms);
        self.store.put_miner(&v.miner, &rec)?;
        if outcome != Outcome::Late && !matches!(outcome, Outcome::Valid { .. }) {
            info!(target: "validator", miner = %short(&v.miner), challenge = %short(&v.challenge_id), ?outcome, %detail, "misconduct");
        }
        if self.notes.len() >= NOTES_MINERS && !self.notes.contains_key(&v.miner) {
            // Full: keep only the notes of miners still scored.
            let ema = &self.scores.ema;
            self.notes.retain(|m, _| ema.contains_key(m));
            if self.store.miner_count() > MINER_RECORDS {
                // Forgotten miners' counters go once there are too many to keep.
                self.store.retain_miners(|m| ema.contains_key(m))?;
            }
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
            // Scored already, this miner with a 0 for no answer: only misconduct counts.
            let one = BTreeMap::from([(v.miner, outcome)]);
            self.scores.note_misconduct(&one);
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
        self.finalize_due(now_ms)?;
        self.close_epochs(now_ms)?;
        self.due_messages(now_ms)
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
            for miner in reclassify_copies(o) {
                let mut rec = self.store.miner(&miner)?;
                rec.invalid = rec.invalid.saturating_sub(1);
                rec.copied += 1;
                self.store.put_miner(&miner, &rec)?;
            }
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
            let weights = self.scores.close_epoch(self.cfg.max_miners);
            let ema = &self.scores.ema;
            self.notes.retain(|m, _| ema.contains_key(m));
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
            self.open_epoch += 1;
            self.store
                .close_epoch(&rec, self.open_epoch, &self.scores)?;
            let keep_from = self.open_epoch.saturating_sub(self.cfg.keep_epochs.max(2));
            self.store
                .prune_validator(keep_from, self.cfg.epochs.start(keep_from))?;
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

    /// The moving averages and this epoch's misconduct.
    pub fn scores(&self) -> &Scores {
        &self.scores
    }

    /// What was refused, by reason.
    pub fn refusals(&self) -> &BTreeMap<String, u64> {
        &self.refused
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

pub use provnet_wire::status::percentile;

/// A copy that reached this validator before its original was judged invalid (its bytes
/// were another miner's, first seen from the copier). Once the challenge is scored, an
/// invalid answer whose bytes another miner sent as a valid proof is a copy: relabelled
/// here (both forfeit the epoch alike). Returns the relabelled miners.
fn reclassify_copies(o: &mut Open) -> Vec<PublicKey> {
    let valid: HashMap<[u8; 32], PublicKey> = o
        .outcomes
        .iter()
        .filter(|(_, x)| matches!(x, Outcome::Valid { .. } | Outcome::Late))
        .filter_map(|(m, _)| Some((*o.answer_hash.get(m)?, *m)))
        .collect();
    let copies: Vec<PublicKey> = o
        .outcomes
        .iter()
        .filter(|(m, x)| {
            **x == Outcome::Invalid
                && o.answer_hash
                    .get(*m)
                    .and_then(|h| valid.get(h))
                    .is_some_and(|owner| owner != *m)
        })
        .map(|(m, _)| *m)
        .collect();
    for m in &copies {
        o.outcomes.insert(*m, Outcome::Copied);
        if let Some(a) = o.record.answers.iter_mut().find(|a| a.miner == *m) {
            a.outcome = Outcome::Copied;
            a.detail = "another miner's proof, which reached this validator after the copy".into();
        }
    }
    copies
}
