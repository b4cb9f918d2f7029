//! The challenger role: an admitted requester (a user with a disputed segment) publishes
//! proof requests, at its rate or one at a time from the admin endpoint (`POST
//! /requests`). Validators adopt each one with a challenge of their own that names the
//! request, so this role follows the proofs to those challenges, and verifies every one
//! itself (its own verification thread, the genesis verifying key, the adopting
//! challenge's id and nonce, the miner): a requester trusts no validator's word for its
//! proofs. `GET /requests/ID` reads them back, each with everything needed to verify it
//! again elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use provnet_kernels::{Model, ProofContext, ProofFile};
use provnet_validator::{Verdict, VerifyJob, VerifyPool, VerifyingModel};
use provnet_wire::{Challenge, ChallengeStatus, ChallengerStatus, ProofSubmission, PublicKey};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{now_f64, now_ms, short};

/// Requests followed (the newest; older ones are forgotten).
const RECENT: usize = 64;
/// Proofs checked per request, at most (valid ones kept; a Sybil miner can send any
/// number, and honest validators are few).
const MAX_PROOFS_PER_REQUEST: usize = 64;

/// A validator's challenge adopting one of our requests.
struct Adoption {
    request: [u8; 32],
    validator: PublicKey,
    nonce: [u8; 32],
}

/// A proof this node verified.
struct Verified {
    miner: PublicKey,
    validator: PublicKey,
    challenge: [u8; 32],
    nonce: [u8; 32],
    vk_id: [u8; 32],
    output: Vec<i64>,
    proof: Vec<u8>,
    ms_after_request: f64,
}

/// One request and what came back for it.
struct Followed {
    challenge: Challenge,
    published_ms: u64,
    published_at: f64,
    /// Adopting challenges (by id), in arrival order.
    adopted: Vec<[u8; 32]>,
    /// Proofs in the verification thread: (challenge, miner) -> the proof and when it came.
    checking: HashMap<([u8; 32], PublicKey), (ProofSubmission, f64)>,
    valid: Vec<Verified>,
    invalid: u32,
    /// Proofs seen, including those not checked (over the bound, duplicates).
    seen: u32,
}

impl Followed {
    fn checked(&self) -> usize {
        self.checking.len() + self.valid.len() + self.invalid as usize
    }
}

pub struct ChallengerRole {
    models: Vec<Arc<Model>>,
    /// Every genesis model with its verifying keys, by id.
    verifying: HashMap<[u8; 32], Arc<VerifyingModel>>,
    /// The genesis validators: only their challenges adopt a request.
    validators: BTreeSet<PublicKey>,
    pool: VerifyPool,
    pub verdicts: mpsc::Receiver<Verdict>,
    pub rate: f64,
    deadline_ms: u64,
    next_at: f64,
    pub status: ChallengerStatus,
    requests: BTreeMap<[u8; 32], Followed>,
    /// Request ids, oldest first (bounds `requests`).
    order: VecDeque<[u8; 32]>,
    /// An adopting challenge's id -> what it adopts.
    adopted: HashMap<[u8; 32], Adoption>,
}

impl ChallengerRole {
    pub fn new(
        models: Vec<Arc<Model>>,
        verifying: Vec<Arc<VerifyingModel>>,
        validators: BTreeSet<PublicKey>,
        rate: f64,
        deadline_ms: u64,
    ) -> std::io::Result<ChallengerRole> {
        let (tx, verdicts) = mpsc::channel(1024);
        let pool = VerifyPool::start(256, move |v| {
            let _ = tx.blocking_send(v);
        })?;
        Ok(ChallengerRole {
            models,
            verifying: verifying.into_iter().map(|m| (m.model.id(), m)).collect(),
            validators,
            pool,
            verdicts,
            rate,
            deadline_ms,
            next_at: now_f64() + 1000.0,
            status: ChallengerStatus {
                rate,
                ..Default::default()
            },
            requests: BTreeMap::new(),
            order: VecDeque::new(),
            adopted: HashMap::new(),
        })
    }

    /// The request due now, if one is: a random segment of the next model, a state the
    /// model reaches at its input, a fresh nonce.
    pub fn due(&mut self, n: u64) -> Option<Challenge> {
        if !provnet_validator::issue::pace(&mut self.next_at, self.rate, now_f64()) {
            return None;
        }
        let model = &self.models[(n as usize) % self.models.len()];
        provnet_validator::issue::random_challenge(model, now_ms() + self.deadline_ms)
    }

    /// A request asked for by hand (`POST /requests`): for segment `segment` of the
    /// genesis model `model_id`, on `input` (quantized), due in `deadline_ms` (this
    /// role's default when none).
    pub fn requested(
        &self,
        model_id: &[u8; 32],
        segment: u32,
        input: Vec<i64>,
        deadline_ms: Option<u64>,
    ) -> Result<Challenge, String> {
        let m = self
            .models
            .iter()
            .find(|m| m.id() == *model_id)
            .ok_or("no such model in the genesis")?;
        let seg = m.segment(segment as usize).map_err(|e| e.to_string())?;
        seg.check_input(&input).map_err(|e| e.to_string())?;
        let max = provnet_wire::message::MAX_CHALLENGE_TTL_MS;
        let ttl = deadline_ms.unwrap_or(self.deadline_ms);
        if ttl == 0 || ttl > max {
            return Err(format!("deadline_ms {ttl}: 1 to {max}"));
        }
        Ok(Challenge {
            model_id: *model_id,
            segment,
            input,
            nonce: rand::random(),
            deadline_ms: now_ms() + ttl,
            request: None,
        })
    }

    /// Our request went out: follow it.
    pub fn record(&mut self, id: [u8; 32], c: &Challenge) {
        self.requests.insert(
            id,
            Followed {
                challenge: c.clone(),
                published_ms: now_ms(),
                published_at: now_f64(),
                adopted: Vec::new(),
                checking: HashMap::new(),
                valid: Vec::new(),
                invalid: 0,
                seen: 0,
            },
        );
        self.order.push_back(id);
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
        let requests = &self.requests;
        self.adopted
            .retain(|_, a| requests.contains_key(&a.request));
    }

    /// A challenge went by: a genesis validator's that adopts one of our requests (same
    /// model, segment and input) is followed.
    pub fn saw_challenge(&mut self, validator: &PublicKey, c: &Challenge) {
        let Some(r) = c.request else { return };
        let Some(f) = self.requests.get_mut(&r) else {
            return;
        };
        let ours = &f.challenge;
        let same =
            c.model_id == ours.model_id && c.segment == ours.segment && c.input == ours.input;
        if !same || !self.validators.contains(validator) {
            debug!(target: "challenger", request = %short(&r), from = %short(validator), "a challenge naming our request that does not adopt it: ignored");
            return;
        }
        let id = c.id(validator);
        if !f.adopted.contains(&id) {
            f.adopted.push(id);
            self.adopted.insert(
                id,
                Adoption {
                    request: r,
                    validator: *validator,
                    nonce: c.nonce,
                },
            );
        }
    }

    /// A proof went by on gossip: one to a challenge adopting our request goes to the
    /// verification thread (bounded per request; one per miner and challenge).
    pub fn saw_proof(&mut self, miner: &PublicKey, p: &ProofSubmission) {
        let Some(a) = self.adopted.get(&p.challenge_id) else {
            return;
        };
        let Some(f) = self.requests.get_mut(&a.request) else {
            return;
        };
        f.seen += 1;
        let key = (p.challenge_id, *miner);
        let dup = f.checking.contains_key(&key)
            || f.valid
                .iter()
                .any(|v| v.challenge == p.challenge_id && v.miner == *miner);
        if dup || f.checked() >= MAX_PROOFS_PER_REQUEST {
            return;
        }
        let Some(model) = self.verifying.get(&f.challenge.model_id) else {
            return;
        };
        let ctx = ProofContext {
            challenge: p.challenge_id,
            nonce: a.nonce,
            miner: *miner,
        };
        let file = ProofFile::from_claim(
            &model.model,
            f.challenge.segment as usize,
            &p.vk_id,
            &ctx,
            &f.challenge.input,
            &p.output,
            &p.proof,
        );
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                info!(target: "challenger", request = %short(&a.request), miner = %short(miner), "a proof that cannot be ours: {e}");
                f.invalid += 1;
                return;
            }
        };
        let job = VerifyJob {
            challenge_id: p.challenge_id,
            miner: *miner,
            model: model.clone(),
            file,
        };
        match self.pool.submit(job) {
            Ok(()) => {
                f.checking
                    .insert(key, (p.clone(), now_f64() - f.published_at));
            }
            Err(_) => {
                warn!(target: "challenger", request = %short(&a.request), "verification queue full: a proof to our request not checked")
            }
        }
    }

    /// The verification thread's verdict on a proof to one of our requests.
    pub fn on_verdict(&mut self, v: Verdict) {
        let Some(a) = self.adopted.get(&v.challenge_id) else {
            return;
        };
        let Some(f) = self.requests.get_mut(&a.request) else {
            return;
        };
        let Some((p, at)) = f.checking.remove(&(v.challenge_id, v.miner)) else {
            return;
        };
        match v.result {
            Ok(()) => {
                info!(target: "challenger", request = %short(&a.request), miner = %short(&v.miner), ms = at, "a proof to our request verified");
                f.valid.push(Verified {
                    miner: v.miner,
                    validator: a.validator,
                    challenge: v.challenge_id,
                    nonce: a.nonce,
                    vk_id: p.vk_id,
                    output: p.output,
                    proof: p.proof,
                    ms_after_request: at,
                });
            }
            Err(e) => {
                info!(target: "challenger", request = %short(&a.request), miner = %short(&v.miner), "a proof to our request does not verify: {e}");
                f.invalid += 1;
            }
        }
    }

    /// Proofs to `request` still in the verification thread.
    pub fn checking(&self, request: &[u8; 32]) -> usize {
        self.requests.get(request).map_or(0, |f| f.checking.len())
    }

    /// The status, with the requests followed (newest last).
    pub fn status(&self) -> ChallengerStatus {
        let now = now_ms();
        let mut s = self.status.clone();
        s.recent = self
            .order
            .iter()
            .filter_map(|id| Some((id, self.requests.get(id)?)))
            .map(|(id, f)| ChallengeStatus {
                id: hex::encode(id),
                model: short(&f.challenge.model_id),
                segment: f.challenge.segment,
                received_ms: f.published_ms,
                deadline_ms: f.challenge.deadline_ms,
                proofs: f.seen,
                valid: f.valid.len() as u32,
                fastest_ms: f
                    .valid
                    .iter()
                    .map(|v| v.ms_after_request)
                    .min_by(f64::total_cmp),
                status: if f.challenge.deadline_ms <= now {
                    "closed".into()
                } else {
                    "open".into()
                },
            })
            .collect();
        s
    }

    /// One request with its adopting validators and every verified proof, for
    /// `GET /requests/ID`: each proof with its public context (challenge, nonce, miner,
    /// verifying key id), so anyone can check it again.
    pub fn view(&self, id: &[u8; 32]) -> (u16, Value) {
        let Some(f) = self.requests.get(id) else {
            return crate::admin::error(
                404,
                "no such request here (this node follows its newest 64)",
            );
        };
        let c = &f.challenge;
        let proofs: Vec<Value> = f
            .valid
            .iter()
            .map(|v| {
                json!({
                    "miner": hex::encode(v.miner),
                    "validator": hex::encode(v.validator),
                    "challenge": hex::encode(v.challenge),
                    "nonce": hex::encode(v.nonce),
                    "vk_id": hex::encode(v.vk_id),
                    "output": v.output,
                    "proof": hex::encode(&v.proof),
                    "ms_after_request": v.ms_after_request,
                })
            })
            .collect();
        let view = json!({
            "request": hex::encode(id),
            "model": hex::encode(c.model_id),
            "segment": c.segment,
            "input": c.input,
            "deadline_ms": c.deadline_ms,
            "state": if c.deadline_ms <= now_ms() { "closed" } else { "open" },
            "adopted_by": f
                .adopted
                .iter()
                .filter_map(|a| self.adopted.get(a))
                .map(|a| hex::encode(a.validator))
                .collect::<Vec<_>>(),
            "proofs_seen": f.seen,
            "checking": f.checking.len(),
            "valid": f.valid.len(),
            "invalid": f.invalid,
            "proofs": proofs,
        });
        (200, view)
    }
}
