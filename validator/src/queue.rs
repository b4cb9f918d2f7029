//! The way into verification: the [`VerifyPool`]'s bounded queue, with a bounded backlog in
//! front of it for bursts. When both are full, the least valuable proof is shed: one from a
//! miner caught cheating this epoch first, then the lowest score, then the newest. So a
//! flood of junk from registered keys is what gets dropped, and an honest proof is never
//! dropped silently (each shed answer is counted, `verify_shed`, and counts neither way).

use std::collections::VecDeque;

use crate::engine::{Validator, VerifyJob, VerifyPool};
use crate::score::Scores;

pub struct VerifyQueue {
    pool: VerifyPool,
    backlog: VecDeque<VerifyJob>,
    capacity: usize,
    shed: u64,
}

impl VerifyQueue {
    /// `backlog` proofs may wait beyond the pool's own queue.
    pub fn new(pool: VerifyPool, backlog: usize) -> VerifyQueue {
        VerifyQueue {
            pool,
            backlog: VecDeque::new(),
            capacity: backlog,
            shed: 0,
        }
    }

    pub fn pool(&self) -> &VerifyPool {
        &self.pool
    }

    /// Proofs queued or waiting.
    pub fn waiting(&self) -> usize {
        self.pool.queued() + self.backlog.len()
    }

    /// Proofs shed so far.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// Queues `job`, shedding the least valuable waiting proof if there is no room; the
    /// shed one is forgotten by `engine`. Returns the miner shed, if any.
    pub fn submit(&mut self, job: VerifyJob, engine: &mut Validator) -> Option<[u8; 32]> {
        self.drain();
        let job = if self.backlog.is_empty() {
            match self.pool.submit(job) {
                Ok(()) => return None,
                Err(j) => *j,
            }
        } else {
            job
        };
        self.backlog.push_back(job);
        if self.backlog.len() <= self.capacity {
            return None;
        }
        let shed = least_valuable(&self.backlog, engine.scores())?;
        let j = self.backlog.remove(shed)?;
        engine.forget(&j.challenge_id, &j.miner);
        self.shed += 1;
        Some(j.miner)
    }

    /// Moves waiting proofs into the pool's queue while it has room.
    pub fn drain(&mut self) {
        while let Some(j) = self.backlog.pop_front() {
            if let Err(j) = self.pool.submit(j) {
                self.backlog.push_front(*j);
                break;
            }
        }
    }
}

/// The waiting proof to shed: misconduct this epoch, else the lowest score, else the newest.
fn least_valuable(backlog: &VecDeque<VerifyJob>, scores: &Scores) -> Option<usize> {
    let value = |j: &VerifyJob| {
        if scores.misconduct.contains(&j.miner) {
            -1.0
        } else {
            scores.ema.get(&j.miner).copied().unwrap_or(0.0)
        }
    };
    (0..backlog.len())
        .rev()
        .min_by(|&a, &b| value(&backlog[a]).total_cmp(&value(&backlog[b])))
}
