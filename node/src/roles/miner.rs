//! The miner role: validators' challenges from gossip go to the proving queue
//! (`provnet-miner`: bounded, checked, proved on its own threads), and proofs go back out.
//! Anyone else's challenge is refused before it is queued.
//!
//! Also the test-only adversaries (hidden `--adversary`), which the multi-process tests run
//! to show each cheat ends with no weight.

use std::collections::{HashMap, VecDeque};

use clap::ValueEnum;
use provnet_miner::{Done, Miner};
use provnet_wire::{Challenge, Message, ProofSubmission, PublicKey};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::challenger::ChallengerRole;
use super::{now_ms, short};

/// Test-only miner behaviours, for the adversarial tests. Hidden from `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Adversary {
    /// Publishes proofs with a corrupted byte.
    Invalid,
    /// Re-publishes other miners' proofs under its own key instead of proving.
    Copy,
    /// Proves one challenge, then answers every later one with that old proof.
    Replay,
    /// Proves honestly but publishes after the deadline.
    Late,
    /// Proves honestly, and also writes challenges of its own once a second, proves them,
    /// and publishes each proof just before its challenge (so it would always be first).
    SelfChallenge,
    /// A validator: contributes a well-formed step to the network's setup ceremony that
    /// fails verification (its H query moved wrongly), and votes for it.
    CeremonyGarbage,
}

pub struct MinerRole {
    pub miner: Miner,
    pub done: mpsc::Receiver<Done>,
    pub adversary: Option<Adversary>,
    /// Replay: the proof kept to answer later challenges with.
    kept: Option<ProofSubmission>,
    /// Copy: challenges already copied.
    copied: VecDeque<[u8; 32]>,
    /// Late: proofs held until after their deadline.
    held: Vec<(u64, ProofSubmission)>,
    /// Self-challenge: where its challenges come from, and those proving now.
    own: Option<ChallengerRole>,
    own_pending: HashMap<[u8; 32], Challenge>,
    pub published: u64,
}

impl MinerRole {
    pub fn new(
        miner: Miner,
        done: mpsc::Receiver<Done>,
        adversary: Option<Adversary>,
        own: Option<ChallengerRole>,
    ) -> MinerRole {
        MinerRole {
            miner,
            done,
            adversary,
            kept: None,
            copied: VecDeque::new(),
            held: Vec::new(),
            own,
            own_pending: HashMap::new(),
            published: 0,
        }
    }

    /// A challenge from gossip; returns what to publish now (the replay adversary's).
    pub fn on_challenge(&mut self, sender: &PublicKey, c: &Challenge) -> Option<Message> {
        let id = c.id(sender);
        match self.adversary {
            Some(Adversary::Copy) => None,
            Some(Adversary::Replay) if self.kept.is_some() => {
                let mut old = self.kept.clone().expect("checked");
                old.challenge_id = id;
                Some(Message::ProofSubmission(old))
            }
            _ => {
                if let Err(r) = self.miner.offer(sender, id, c.clone()) {
                    info!(target: "miner", challenge = %short(&id), reason = r.as_str(), "challenge refused: {r}");
                }
                None
            }
        }
    }

    /// Another miner's proof went by: the copy adversary re-publishes it.
    pub fn on_proof(&mut self, p: &ProofSubmission) -> Option<Message> {
        if self.adversary != Some(Adversary::Copy) || self.copied.contains(&p.challenge_id) {
            return None;
        }
        self.copied.push_back(p.challenge_id);
        if self.copied.len() > 1024 {
            self.copied.pop_front();
        }
        Some(Message::ProofSubmission(p.clone()))
    }

    /// A worker finished; returns what to publish, in order.
    pub fn on_done(&mut self, d: Done) -> Vec<Message> {
        match d {
            Done::Proved(p) => {
                info!(
                    target: "miner",
                    challenge = %short(&p.challenge_id),
                    prove_ms = format!("{:.1}", p.prove_ms),
                    waited_ms = format!("{:.1}", p.waited_ms),
                    "proved"
                );
                let mut sub = p.submission;
                match self.adversary {
                    Some(Adversary::Invalid) => {
                        let last = sub.proof.len() - 1;
                        sub.proof[last] ^= 0x01;
                    }
                    Some(Adversary::Replay) => {
                        self.kept.get_or_insert(sub.clone());
                    }
                    Some(Adversary::Late) => {
                        self.held.push((p.deadline_ms + 300, sub));
                        return Vec::new();
                    }
                    Some(Adversary::SelfChallenge) => {
                        if let Some(c) = self.own_pending.remove(&sub.challenge_id) {
                            return vec![Message::ProofSubmission(sub), Message::Challenge(c)];
                        }
                    }
                    _ => {}
                }
                vec![Message::ProofSubmission(sub)]
            }
            Done::Failed {
                challenge_id,
                error,
            } => {
                warn!(target: "miner", challenge = %short(&challenge_id), "proving failed: {error}");
                Vec::new()
            }
            Done::Expired { challenge_id } => {
                self.own_pending.remove(&challenge_id);
                info!(target: "miner", challenge = %short(&challenge_id), "dropped: the deadline came before a worker was free");
                Vec::new()
            }
        }
    }

    /// What the adversaries publish on the clock: the late one's held proofs; the
    /// self-challenger queues a challenge of its own.
    pub fn tick(&mut self, me: &PublicKey) -> Vec<Message> {
        let now = now_ms();
        let (due, keep): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(t, _)| *t <= now);
        self.held = keep;
        if let Some(c) = self.own.as_mut().and_then(|o| o.due(0)) {
            let id = c.id(me);
            if self.miner.offer(me, id, c.clone()).is_ok() && self.own_pending.len() < 64 {
                self.own_pending.insert(id, c);
            }
        }
        due.into_iter()
            .map(|(_, s)| Message::ProofSubmission(s))
            .collect()
    }
}
