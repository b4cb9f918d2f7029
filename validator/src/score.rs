//! Scoring miners: each challenge gives every answering miner a sample in [0, 1]; samples
//! feed an exponential moving average per miner; at epoch end the averages become weights.
//!
//! A valid proof's sample is `latency_weight * fastest / latency + size_weight *
//! min(1, reference_bytes / proof_bytes)`. Latency is measured on the validator's clock
//! from its receipt of the challenge to its receipt of the proof, and `fastest` is the
//! fastest valid proof for that challenge, so the fastest miner scores
//! `latency_weight + size_weight` (1 by default). Twice as slow scores half the latency
//! term, and so on smoothly. An invalid, copied or replayed proof, or a late one, samples 0
//! and pulls the average down. A miner caught with an invalid, copied or replayed proof gets
//! weight 0 for the whole epoch, whatever its average.
//!
//! Weight needs ongoing work: every miner the validator tracks gets a sample from every
//! challenge it issues, and no answer samples 0, so a miner that goes silent decays
//! (by `1 - ema_alpha` a challenge) and is forgotten once its average falls below
//! [`FORGET_BELOW`]. An epoch's weights name at most `max_miners` miners, the best ones.

use std::collections::{BTreeMap, BTreeSet};

use provnet_wire::{MinerWeight, PublicKey};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreParams {
    /// Weight of each new sample in the moving average.
    pub ema_alpha: f64,
    pub latency_weight: f64,
    pub size_weight: f64,
    /// A proof this size or smaller gets the whole size term.
    pub reference_proof_bytes: usize,
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            ema_alpha: 0.1,
            latency_weight: 0.9,
            size_weight: 0.1,
            reference_proof_bytes: 128,
        }
    }
}

/// What a validator made of one miner's answer to one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Valid {
        latency_ms: f64,
        proof_bytes: usize,
    },
    /// The proof did not verify for this challenge and miner.
    Invalid,
    /// Another miner's proof, re-published under this miner's key.
    Copied,
    /// A proof made for an earlier challenge.
    Replayed,
    /// Arrived after the deadline.
    Late,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Valid { .. } => "valid",
            Outcome::Invalid => "invalid",
            Outcome::Copied => "copied",
            Outcome::Replayed => "replayed",
            Outcome::Late => "late",
        }
    }

    /// Outcomes that forfeit the epoch's weight.
    pub fn is_misconduct(self) -> bool {
        matches!(self, Outcome::Invalid | Outcome::Copied | Outcome::Replayed)
    }
}

/// The sample each miner earns from one challenge's outcomes.
pub fn challenge_samples(
    params: &ScoreParams,
    outcomes: &BTreeMap<PublicKey, Outcome>,
) -> BTreeMap<PublicKey, f64> {
    let fastest = outcomes
        .values()
        .filter_map(|o| match o {
            Outcome::Valid { latency_ms, .. } => Some(latency_ms.max(1e-3)),
            _ => None,
        })
        .fold(f64::INFINITY, f64::min);
    outcomes
        .iter()
        .map(|(miner, o)| {
            let sample = match *o {
                Outcome::Valid {
                    latency_ms,
                    proof_bytes,
                } => {
                    let speed = fastest / latency_ms.max(1e-3);
                    let size =
                        (params.reference_proof_bytes as f64 / proof_bytes.max(1) as f64).min(1.0);
                    params.latency_weight * speed + params.size_weight * size
                }
                _ => 0.0,
            };
            (*miner, sample)
        })
        .collect()
}

/// A miner whose average falls below this at an epoch's close is forgotten (its weight
/// would round to 0 against any miner doing real work).
pub const FORGET_BELOW: f64 = 1e-4;

/// Per-miner moving averages and this epoch's misconduct.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub ema: BTreeMap<PublicKey, f64>,
    pub misconduct: BTreeSet<PublicKey>,
}

impl Scores {
    /// Folds one challenge's outcomes in: each answering miner's sample, and a 0 for every
    /// tracked miner that did not answer.
    pub fn record(&mut self, params: &ScoreParams, outcomes: &BTreeMap<PublicKey, Outcome>) {
        let a = params.ema_alpha;
        for (miner, s) in self.ema.iter_mut() {
            if !outcomes.contains_key(miner) {
                *s *= 1.0 - a;
            }
        }
        for (miner, sample) in challenge_samples(params, outcomes) {
            let s = self.ema.entry(miner).or_insert(0.0);
            *s = a * sample + (1.0 - a) * *s;
        }
        self.note_misconduct(outcomes);
    }

    /// Marks the epoch's misconduct among `outcomes` without sampling them (an answer that
    /// came after its challenge was scored: its 0 was counted then).
    pub fn note_misconduct(&mut self, outcomes: &BTreeMap<PublicKey, Outcome>) {
        for (miner, o) in outcomes {
            if o.is_misconduct() {
                self.misconduct.insert(*miner);
            }
        }
    }

    /// The epoch's weights (best miner = `u16::MAX`, zero weights left out, at most
    /// `max_miners` of them, the best, sorted by miner), then a fresh epoch: misconduct is
    /// forgotten, averages carry on, and miners whose average fell below [`FORGET_BELOW`]
    /// are forgotten.
    pub fn close_epoch(&mut self, max_miners: usize) -> Vec<MinerWeight> {
        self.ema.retain(|_, s| *s >= FORGET_BELOW);
        let eligible = |m: &PublicKey| !self.misconduct.contains(m);
        let best = self
            .ema
            .iter()
            .filter(|(m, _)| eligible(m))
            .map(|(_, s)| *s)
            .fold(0.0, f64::max);
        let weights = if best > 0.0 {
            self.ema
                .iter()
                .filter(|(m, _)| eligible(m))
                .map(|(m, s)| MinerWeight {
                    miner: *m,
                    weight: (s / best * f64::from(u16::MAX)).round() as u16,
                })
                .filter(|w| w.weight > 0)
                .collect()
        } else {
            Vec::new()
        };
        let weights = best_of(weights, max_miners);
        self.misconduct.clear();
        weights
    }
}

/// The `max` heaviest of `weights` (ties to the smaller key), sorted by miner.
fn best_of(mut weights: Vec<MinerWeight>, max: usize) -> Vec<MinerWeight> {
    if weights.len() > max {
        weights.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.miner.cmp(&b.miner)));
        weights.truncate(max);
        weights.sort_by_key(|w| w.miner);
    }
    weights
}
