//! The challenger role: an admitted requester (a user with a disputed segment) publishes
//! proof requests. Validators adopt each one with a challenge of their own that names the
//! request, so this role follows the proofs to those challenges. It only watches proofs;
//! validators judge them (`provnet challenge` verifies what it prints).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use provnet_kernels::Model;
use provnet_wire::{Challenge, ChallengeStatus, ChallengerStatus, ProofSubmission, PublicKey};

use super::{now_f64, now_ms, short};
use crate::identity::hex32;

/// Requests (and the validators' challenges adopting them) followed for the status.
const RECENT: usize = 64;

pub struct ChallengerRole {
    models: Vec<Arc<Model>>,
    pub rate: f64,
    deadline_ms: u64,
    next_at: f64,
    pub status: ChallengerStatus,
    /// Request id -> index in `status.recent`.
    index: BTreeMap<[u8; 32], usize>,
    /// A validator's challenge id -> the request it adopts (bounded with `recent`).
    adopted: HashMap<[u8; 32], [u8; 32]>,
}

impl ChallengerRole {
    pub fn new(models: Vec<Arc<Model>>, rate: f64, deadline_ms: u64) -> ChallengerRole {
        ChallengerRole {
            models,
            rate,
            deadline_ms,
            next_at: now_f64() + 1000.0,
            status: ChallengerStatus {
                rate,
                ..Default::default()
            },
            index: BTreeMap::new(),
            adopted: HashMap::new(),
        }
    }

    /// The request due now, if one is: a random segment of the next model, a random input
    /// in the segment's range, a fresh nonce.
    pub fn due(&mut self, n: u64) -> Option<Challenge> {
        if !provnet_validator::issue::pace(&mut self.next_at, self.rate, now_f64()) {
            return None;
        }
        let model = &self.models[(n as usize) % self.models.len()];
        Some(provnet_validator::issue::random_challenge(
            model,
            now_ms() + self.deadline_ms,
        ))
    }

    pub fn record(&mut self, id: [u8; 32], c: &Challenge) {
        self.index.insert(id, self.status.recent.len());
        self.status.recent.push(ChallengeStatus {
            id: hex::encode(id),
            model: short(&c.model_id),
            segment: c.segment,
            received_ms: now_ms(),
            deadline_ms: c.deadline_ms,
            proofs: 0,
            valid: 0,
            fastest_ms: None,
            status: "open".into(),
        });
        if self.status.recent.len() > RECENT {
            self.status.recent.remove(0);
            self.index = self
                .status
                .recent
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((hex32("id", &s.id).ok()?, i)))
                .collect();
            let index = &self.index;
            self.adopted.retain(|_, r| index.contains_key(r));
        }
    }

    /// A validator's challenge went by: if it adopts one of our requests, follow it.
    pub fn saw_challenge(&mut self, validator: &PublicKey, c: &Challenge) {
        if let Some(r) = c.request.filter(|r| self.index.contains_key(r)) {
            self.adopted.insert(c.id(validator), r);
        }
    }

    /// A proof went by on gossip: count it against the request its challenge adopts
    /// (unverified: the challenger only watches; validators judge).
    pub fn saw_proof(&mut self, p: &ProofSubmission) {
        let Some(r) = self.adopted.get(&p.challenge_id) else {
            return;
        };
        if let Some(&i) = self.index.get(r) {
            let s = &mut self.status.recent[i];
            s.proofs += 1;
            let after = now_ms().saturating_sub(s.received_ms) as f64;
            if s.fastest_ms.is_none_or(|f| after < f) {
                s.fastest_ms = Some(after);
            }
        }
    }

    pub fn close_expired(&mut self) {
        let now = now_ms();
        for s in &mut self.status.recent {
            if s.status == "open" && s.deadline_ms <= now {
                s.status = "closed".into();
            }
        }
    }
}
