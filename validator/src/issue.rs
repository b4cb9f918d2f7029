//! Where a challenge is born: the challenges a validator issues, and scores.
//!
//! A validator scores only what it issued itself, timed from its own publish, with its own
//! fresh nonce in every proof's binding. So no proof can exist before its challenge (a
//! miner cannot pre-prove a challenge it wrote), and a validator that leaks its challenges
//! to a favoured miner lifts only its own weights, which consensus clips to the stake
//! majority's.
//!
//! Two kinds of challenge come from here:
//! - **benchmark** challenges, at the validator's own rate: a random segment of the next
//!   genesis model, a random input in that segment's range;
//! - **adopted** requests: a challenger the genesis admits asks for a proof of a segment on
//!   an input (a disputed inference), and each validator issues a challenge of its own on
//!   the same segment and input, naming the request so the requester can pick out the
//!   proofs. Each admitted challenger has a quota of adopted requests per epoch; anything
//!   past it, from anyone else, or adopted already, is refused and counted.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use provnet_kernels::Model;

use crate::engine::VerifyingModel;
use provnet_wire::{Challenge, PublicKey};
use rand::{Rng, RngCore};

/// What and how fast a validator issues.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueConfig {
    /// Benchmark challenges per second (0: none; adopted requests still go out).
    pub rate: f64,
    /// Milliseconds from publishing a challenge to its deadline.
    pub deadline_ms: u64,
    /// Challengers the genesis admits, with the requests per epoch adopted from each.
    pub challengers: BTreeMap<PublicKey, u32>,
}

impl Default for IssueConfig {
    fn default() -> Self {
        IssueConfig {
            rate: 0.5,
            deadline_ms: 5_000,
            challengers: BTreeMap::new(),
        }
    }
}

/// Why a request was not adopted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("the sender is not an admitted challenger")]
    NotAdmitted,
    #[error("the challenger used its quota of {0} requests this epoch")]
    OverQuota(u32),
    #[error("request adopted already")]
    Duplicate,
    #[error("the request's deadline is under {0} ms away")]
    TooLate(u64),
}

/// Requests remembered to refuse a second adoption. Requests come only from admitted
/// challengers, within their quotas, so this bounds memory, not honest use.
const ADOPTED_KEPT: usize = 4096;
/// A request whose deadline is closer than this is not worth a challenge.
const MIN_REQUEST_MS: u64 = 200;

pub struct Issuer {
    cfg: IssueConfig,
    models: Vec<Arc<VerifyingModel>>,
    issued: u64,
    next_at: f64,
    /// Per admitted challenger: (epoch, requests adopted in it). Keyed by genesis keys only.
    used: BTreeMap<PublicKey, (u64, u32)>,
    adopted: HashSet<[u8; 32]>,
    adopted_order: VecDeque<[u8; 32]>,
}

impl Issuer {
    pub fn new(cfg: IssueConfig, models: Vec<Arc<VerifyingModel>>, now_ms: f64) -> Issuer {
        Issuer {
            cfg,
            models,
            issued: 0,
            // The first benchmark challenge waits a second, for the mesh to form.
            next_at: now_ms + 1_000.0,
            used: BTreeMap::new(),
            adopted: HashSet::new(),
            adopted_order: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &IssueConfig {
        &self.cfg
    }

    pub fn is_admitted(&self, challenger: &PublicKey) -> bool {
        self.cfg.challengers.contains_key(challenger)
    }

    /// The benchmark challenge due at `now_ms`, if one is.
    pub fn benchmark(&mut self, now_ms: f64) -> Option<Challenge> {
        if self.models.is_empty() || !pace(&mut self.next_at, self.cfg.rate, now_ms) {
            return None;
        }
        let model = &self.models[(self.issued as usize) % self.models.len()];
        self.issued += 1;
        random_challenge(&model.model, now_ms as u64 + self.cfg.deadline_ms)
    }

    /// This validator's challenge for `request` from `challenger`, or why not. The
    /// model, segment and input are the engine's to check.
    pub fn adopt(
        &mut self,
        challenger: &PublicKey,
        request: &Challenge,
        epoch: u64,
        now_ms: f64,
    ) -> Result<Challenge, RequestRefusal> {
        let Some(&quota) = self.cfg.challengers.get(challenger) else {
            return Err(RequestRefusal::NotAdmitted);
        };
        let id = request.id(challenger);
        if self.adopted.contains(&id) {
            return Err(RequestRefusal::Duplicate);
        }
        let now = now_ms as u64;
        if request.deadline_ms < now.saturating_add(MIN_REQUEST_MS) {
            return Err(RequestRefusal::TooLate(MIN_REQUEST_MS));
        }
        let used = self.used.entry(*challenger).or_insert((epoch, 0));
        if used.0 != epoch {
            *used = (epoch, 0);
        }
        if used.1 >= quota {
            return Err(RequestRefusal::OverQuota(quota));
        }
        used.1 += 1;
        if self.adopted_order.len() == ADOPTED_KEPT {
            if let Some(old) = self.adopted_order.pop_front() {
                self.adopted.remove(&old);
            }
        }
        self.adopted.insert(id);
        self.adopted_order.push_back(id);
        Ok(Challenge {
            model_id: request.model_id,
            segment: request.segment,
            input: request.input.clone(),
            nonce: fresh_nonce(),
            deadline_ms: request
                .deadline_ms
                .min(now.saturating_add(self.cfg.deadline_ms)),
            request: Some(id),
        })
    }
}

/// Whether an event at `rate` per second is due at `now_ms`, moving `next_at` on if so. One
/// that fell behind starts over from now rather than bursting to catch up.
pub fn pace(next_at: &mut f64, rate: f64, now_ms: f64) -> bool {
    if rate <= 0.0 || now_ms < *next_at {
        return false;
    }
    let every = 1000.0 / rate;
    *next_at += every;
    if *next_at < now_ms {
        *next_at = now_ms + every;
    }
    true
}

/// A challenge on a random segment of `model`, on a state the model reaches at that
/// segment's input (a random model input run through the segments before it: a random
/// point of a later segment's input ranges need not be one, and miners refuse it), with a
/// fresh nonce. `None` (logged) only if the model refuses its own run.
pub fn random_challenge(model: &Model, deadline_ms: u64) -> Option<Challenge> {
    let mut rng = rand::rngs::OsRng;
    let segment = rng.gen_range(0..model.segments.len());
    let input = match provnet_kernels::trace::random_state(model, segment, &mut rng) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(model = %model.name, segment, "no challenge input: {e}");
            return None;
        }
    };
    Some(Challenge {
        model_id: model.id(),
        segment: segment as u32,
        input,
        nonce: fresh_nonce(),
        deadline_ms,
        request: None,
    })
}

fn fresh_nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}
