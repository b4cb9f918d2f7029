//! The validator's status snapshot: rankings (capped at [`MAX_RANKINGS`], the best
//! first) joined with the ledger's consensus and rewards, and its challenges.

use std::collections::BTreeMap;

use provnet_wire::{ChallengeStatus, MinerRanking, PublicKey, ValidatorStatus};

use super::{percentile, short, Validator, MAX_RANKINGS};
use crate::ledger::Ledger;
use crate::store::Result;

impl Validator {
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
                    uid: None, // the registry's: the node fills it in
                }
            })
            .collect();
        rankings.sort_by(|a, b| {
            b.weight
                .cmp(&a.weight)
                .then(b.score.total_cmp(&a.score))
                .then(a.miner.cmp(&b.miner))
        });
        // The status is copied every second: the best miners only.
        rankings.truncate(MAX_RANKINGS);
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
