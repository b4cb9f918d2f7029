//! The validator role on the network: it issues challenges (benchmark ones at its rate, and
//! adopted requests from admitted challengers), hands every proof to its own challenges to
//! the verification thread, feeds verdicts back to the engine (`provnet-validator`), and
//! publishes its weights. Where a challenge is born is `provnet_validator::issue`; where a
//! verdict becomes a score is `provnet_validator::score`.

use provnet_validator::{Refusal, Validator, Verdict, VerifyJob, VerifyPool, VerifyQueue};
use provnet_wire::{Challenge, ProofSubmission, PublicKey};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::short;

/// Proofs waiting for room in the verification queue, at most.
const BACKLOG: usize = 8192;

pub struct ValidatorRole {
    pub engine: Validator,
    pub queue: VerifyQueue,
    pub verdicts: mpsc::Receiver<Verdict>,
}

impl ValidatorRole {
    pub fn new(
        engine: Validator,
        pool: VerifyPool,
        verdicts: mpsc::Receiver<Verdict>,
    ) -> ValidatorRole {
        ValidatorRole {
            engine,
            queue: VerifyQueue::new(pool, BACKLOG),
            verdicts,
        }
    }

    /// Queues a verification (see [`VerifyQueue`]: junk is shed first when it is full).
    fn submit(&mut self, job: VerifyJob) {
        if let Some(miner) = self.queue.submit(job, &mut self.engine) {
            warn!(target: "validator", miner = %short(&miner), "verification backlog full: the least valuable proof shed");
        }
    }

    /// Moves waiting proofs into the verification queue while it has room.
    pub fn drain(&mut self) {
        self.queue.drain();
    }

    /// A challenge from gossip: another validator's (not ours to score), or an admitted
    /// challenger's request, which this validator adopts with a challenge of its own,
    /// returned to publish.
    pub fn on_challenge(
        &mut self,
        sender: &PublicKey,
        c: &Challenge,
        now: f64,
    ) -> Option<Challenge> {
        match self.engine.on_request(sender, c, now) {
            Ok(adopted) => adopted,
            Err(r) => {
                let id = c.id(sender);
                info!(target: "validator", request = %short(&id), reason = r.as_str(), "request refused: {r}");
                None
            }
        }
    }

    pub fn on_proof(&mut self, sender: &PublicKey, p: &ProofSubmission, now: f64) {
        match self.engine.on_proof(sender, p, now) {
            Ok(Some(job)) => self.submit(job),
            Ok(None) => {}
            Err(Refusal::NotOurs(_)) => {} // another validator's challenge
            Err(r) => {
                info!(target: "validator", miner = %short(sender), reason = r.as_str(), "proof refused: {r}");
            }
        }
    }

    pub fn on_verdict(&mut self, v: Verdict, now: f64) {
        if let Err(e) = self.engine.on_verdict(v, now) {
            warn!(target: "validator", "recording a verdict: {e}");
        }
        self.drain();
    }
}
