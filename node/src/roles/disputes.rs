//! Disputed inference on a node: every node keeps the court (claims, disputes, bonds; see
//! `provnet_validator::court`); an inference node (`--role inference`) claims runs of the
//! genesis models at `--claim-rate`; a challenger audits a fraction (`--audit-rate`) of
//! the claims it hears by running them itself, and disputes those whose trace differs;
//! both sides answer what their disputes ask of them from the traces they keep. Also the
//! test-only liars (`adversary` builds): an inference node that corrupts one boundary
//! tensor of some claims, a challenger that disputes honest claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use provnet_kernels::trace::{self, MerkleTree};
use provnet_kernels::Model;
use provnet_validator::court::{self, Court, SegmentRunner};
use provnet_wire::{
    Claim, CourtStatus, DisputeOpen, LeafRequest, LeafResponse, LeafState, Message, PublicKey,
};
use rand::Rng;
use tracing::{info, warn};

use super::short;
use crate::admin::Reply;

/// Runs this node stands behind (its claims, and its own runs of the claims it disputes),
/// at most.
const MAX_RUNS: usize = 4_096;
/// A message a dispute owes goes out again after this long if it did not take.
const RESEND_MS: u64 = 2_000;
/// Disputes shown in the status.
const STATUS_DISPUTES: usize = 64;
/// Corrupted claims a cheater remembers for the devnet's report.
const MAX_CORRUPTED: usize = 1_024;
/// Model runs (claims and audits) on blocking threads at once, at most.
const MAX_IN_FLIGHT: usize = 4;
/// How long one node may take to give a leaf state.
const LEAF_ASK_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
/// After nobody gave a leaf state, how long before the court may ask again.
const LEAF_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A referee's fetch of a leaf state: who gave it, and what (none: nobody asked did).
pub type LeafFetched = ([u8; 32], Option<(PublicKey, LeafState)>);

/// Asks each of `from` in turn for a dispute's state at `cut`, until one gives a state
/// that hashes to the agreed `hash`. Sides are asked by the PeerId of their key (dialed
/// if need be); a wrong answer, a refusal or a timeout moves on to the next.
pub async fn fetch_leaf(
    net: &provnet_p2p::NetworkHandle,
    dispute: [u8; 32],
    cut: u32,
    hash: [u8; 32],
    from: &[PublicKey],
) -> Option<(PublicKey, LeafState)> {
    let req = LeafRequest {
        dispute_id: dispute,
        cut,
    };
    for key in from {
        let Some(peer) = provnet_p2p::identity::peer_id(key) else {
            continue;
        };
        let why = match tokio::time::timeout(LEAF_ASK_WITHIN, net.leaf(peer, req)).await {
            Err(_) => "no answer in time".to_string(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(LeafResponse { state: None })) => "it holds no such state".to_string(),
            Ok(Ok(LeafResponse { state: Some(l) })) => {
                let views: Vec<&[i64]> = l.tensors.iter().map(Vec::as_slice).collect();
                let ours = l.dispute_id == dispute && l.cut == cut;
                if ours && trace::state_hash(cut as usize, &views) == hash {
                    info!(target: "court", dispute = %short(&dispute), cut, from = %short(key), "leaf state fetched");
                    return Some((*key, l));
                }
                warn!(target: "court", dispute = %short(&dispute), from = %short(key), "a leaf state that is not the agreed one: ignored");
                "not the agreed state".to_string()
            }
        };
        tracing::debug!(target: "court", dispute = %short(&dispute), from = %short(key), "no leaf state: {why}");
    }
    warn!(target: "court", dispute = %short(&dispute), cut, asked = from.len(), "nobody gave the leaf state; asking again shortly");
    tokio::time::sleep(LEAF_RETRY_AFTER).await;
    None
}

/// A model run to do off the roles task; `None` when it comes to nothing.
pub type Job = Box<dyn FnOnce() -> Option<Work> + Send>;

/// What a finished run asks the node to publish.
pub enum Work {
    Claim {
        claim: Claim,
        run: Run,
        corrupt: Option<u32>,
        /// The admin endpoint's request this answers, if it came from there.
        reply: Option<Reply>,
    },
    /// A requested claim that cannot be made.
    Refused { reply: Reply, why: String },
    Dispute {
        open: DisputeOpen,
        run: Run,
        reply: Option<Reply>,
    },
}

/// One run of a model: the tensor at every cut and the tree over their state hashes.
pub struct Run {
    pub tensors: Vec<Vec<i64>>,
    pub tree: MerkleTree,
}

impl Run {
    /// Runs `model` on `input`; with `corrupt`, the output of that segment is off by one
    /// in its first value (kept inside its range) and the rest is run on from there, as a
    /// node that cut a corner would.
    pub fn of(model: &Model, input: &[i64], corrupt: Option<u32>) -> Option<Run> {
        let t = trace::run_with(model, input, |seg, y| {
            if corrupt == Some(seg.index as u32) {
                let hi = seg.output().hi() as i64;
                y[0] = if y[0] < hi { y[0] + 1 } else { y[0] - 1 };
            }
        })
        .ok()?;
        Some(Run {
            tree: t.tree(),
            tensors: t.tensors,
        })
    }
}

struct Runner<'a>(&'a HashMap<[u8; 32], Arc<Model>>);

impl SegmentRunner for Runner<'_> {
    fn run(&self, model_id: &[u8; 32], segment: u32, input: &[i64]) -> Option<Vec<i64>> {
        let seg = self.0.get(model_id)?.segments.get(segment as usize)?;
        seg.check_input(input).ok()?;
        Some(seg.eval(input))
    }
}

/// How this node takes part.
#[derive(Clone, Debug, Default)]
pub struct DisputeConfig {
    /// Claims per second (inference nodes).
    pub claim_rate: f64,
    /// Share of heard claims re-executed (challengers).
    pub audit_rate: f64,
    /// Test only: share of this node's claims with one corrupted tensor.
    pub cheat_rate: f64,
    /// Test only: share of heard claims disputed with a corrupted trace of its own.
    pub false_dispute_rate: f64,
}

pub struct DisputeRole {
    pub court: Court,
    me: PublicKey,
    cfg: DisputeConfig,
    models: HashMap<[u8; 32], Arc<Model>>,
    /// Each model's genesis name.
    names: HashMap<[u8; 32], String>,
    /// Claim id -> the run this node stands behind for it.
    runs: HashMap<[u8; 32], Run>,
    next_claim_at: f64,
    /// Dispute id -> (the round last revealed for it; when).
    sent: HashMap<[u8; 32], (u32, u64)>,
    corrupted: BTreeMap<[u8; 32], u32>,
    claims_published: u64,
    disputes_opened: u64,
    /// Runs on blocking threads now.
    in_flight: usize,
    audits_skipped: u64,
    /// Leaf states given to referees, fetched from others, and fetches nobody answered.
    leaf_served: u64,
    leaf_fetched: u64,
    leaf_fetch_failed: u64,
    /// Claims, disputes and attestations taken from peers while catching up.
    synced: u64,
}

impl DisputeRole {
    pub fn new(
        court: Court,
        me: PublicKey,
        cfg: DisputeConfig,
        models: Vec<(String, Arc<Model>)>,
    ) -> DisputeRole {
        DisputeRole {
            court,
            me,
            cfg,
            names: models.iter().map(|(n, m)| (m.id(), n.clone())).collect(),
            models: models.into_iter().map(|(_, m)| (m.id(), m)).collect(),
            runs: HashMap::new(),
            next_claim_at: super::now_f64() + 1_000.0,
            sent: HashMap::new(),
            corrupted: BTreeMap::new(),
            claims_published: 0,
            disputes_opened: 0,
            in_flight: 0,
            audits_skipped: 0,
            leaf_served: 0,
            leaf_fetched: 0,
            leaf_fetch_failed: 0,
            synced: 0,
        }
    }

    /// The claim due now, if this is an inference node and one is: a random input in the
    /// first segment's range, and the run to do (on a blocking thread, never this task),
    /// corrupted at a random segment for the share `cheat_rate`.
    pub fn due_claim(&mut self) -> Option<Job> {
        let rate = self.cfg.claim_rate;
        if rate <= 0.0
            || self.in_flight >= MAX_IN_FLIGHT
            || !provnet_validator::issue::pace(&mut self.next_claim_at, rate, super::now_f64())
        {
            return None;
        }
        let mut rng = rand::rngs::OsRng;
        let model = self.models.values().min_by_key(|m| m.id())?.clone();
        let first = model.segments.first()?;
        let input: Vec<i64> = first
            .input_bounds()
            .into_iter()
            .map(|(lo, hi)| rng.gen_range(lo as i64..=hi as i64))
            .collect();
        let corrupt = (rng.gen::<f64>() < self.cfg.cheat_rate)
            .then(|| rng.gen_range(0..model.segments.len() as u32));
        Some(self.claim_job(model, input, corrupt, None))
    }

    /// A claim asked for over the admin endpoint: `model` is a genesis model's hex id or
    /// name; the answer goes to `reply` once the claim is out (or why not).
    pub fn requested_claim(&mut self, model: &str, input: Vec<i64>, reply: Reply) -> Option<Job> {
        let found = self
            .models
            .values()
            .find(|m| {
                hex::encode(m.id()) == model.to_lowercase()
                    || self.names.get(&m.id()).is_some_and(|n| n == model)
            })
            .cloned();
        let Some(m) = found else {
            let _ = reply.send(crate::admin::error(
                404,
                &format!("no genesis model {model}"),
            ));
            return None;
        };
        if self.in_flight >= MAX_IN_FLIGHT {
            let _ = reply.send(crate::admin::error(503, "model runs in flight: try again"));
            return None;
        }
        // The test-only cheater corrupts requested claims too (`provnet claim` runs one).
        let mut rng = rand::rngs::OsRng;
        let corrupt = (rng.gen::<f64>() < self.cfg.cheat_rate)
            .then(|| rng.gen_range(0..m.segments.len() as u32));
        Some(self.claim_job(m, input, corrupt, Some(reply)))
    }

    fn claim_job(
        &mut self,
        model: Arc<Model>,
        input: Vec<i64>,
        corrupt: Option<u32>,
        reply: Option<Reply>,
    ) -> Job {
        let bond = self.court.params().claim_bond;
        let nonce: [u8; 16] = rand::rngs::OsRng.gen();
        self.in_flight += 1;
        Box::new(move || {
            let Some(run) = Run::of(&model, &input, corrupt) else {
                let why = format!(
                    "the input is not one the model takes ({} values, each in its range)",
                    model.segments.first().map_or(0, |s| s.n_in())
                );
                return reply.map(|reply| Work::Refused { reply, why });
            };
            let claim = Claim {
                model_id: model.id(),
                input,
                output: run.tensors.last().cloned().unwrap_or_default(),
                cuts: run.tensors.len() as u32,
                trace_root: run.tree.root(),
                bond,
                nonce,
            };
            Some(Work::Claim {
                claim,
                run,
                corrupt,
                reply,
            })
        })
    }

    /// A job came back (done or not).
    pub fn job_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Our claim went out: stand behind it.
    pub fn claimed(&mut self, id: [u8; 32], run: Run, corrupt: Option<u32>) {
        self.claims_published += 1;
        if let Some(seg) = corrupt {
            if self.corrupted.len() < MAX_CORRUPTED {
                self.corrupted.insert(id, seg);
            }
        }
        self.keep_run(id, run);
    }

    fn keep_run(&mut self, claim: [u8; 32], run: Run) {
        if self.runs.len() >= MAX_RUNS {
            let court = &self.court;
            self.runs.retain(|c, _| {
                court
                    .claims()
                    .get(c)
                    .is_some_and(|r| r.finished_ms.is_none())
            });
        }
        if self.runs.len() < MAX_RUNS {
            self.runs.insert(claim, run);
        }
    }

    /// Someone else's claim went by: a challenger audits a share of them (the run on a
    /// blocking thread), and disputes one whose trace is not what it gets itself (the
    /// false challenger: any it picks). Audits past [`MAX_IN_FLIGHT`] are skipped and
    /// counted.
    pub fn audit(&mut self, claimant: &PublicKey, id: [u8; 32], c: &Claim) -> Option<Job> {
        if *claimant == self.me {
            return None;
        }
        let mut rng = rand::rngs::OsRng;
        let model = self.models.get(&c.model_id)?.clone();
        let corrupt = if rng.gen::<f64>() < self.cfg.false_dispute_rate {
            Some(rng.gen_range(0..model.segments.len() as u32))
        } else if rng.gen::<f64>() < self.cfg.audit_rate {
            None
        } else {
            return None;
        };
        if self.in_flight >= MAX_IN_FLIGHT {
            self.audits_skipped += 1;
            warn!(target: "court", claim = %short(&id), skipped = self.audits_skipped, "audit skipped: {MAX_IN_FLIGHT} runs in flight");
            return None;
        }
        Some(self.dispute_job(model, id, c, corrupt, None))
    }

    /// A dispute asked for by hand (over the admin endpoint): this node runs the claim
    /// itself and disputes it if its trace differs; the answer goes to `reply`.
    pub fn requested_dispute(&mut self, id: [u8; 32], reply: Reply) -> Option<Job> {
        let Some(c) = self.court.claims().get(&id).map(|r| r.claim.clone()) else {
            let _ = reply.send(crate::admin::error(404, "no such claim here"));
            return None;
        };
        let Some(model) = self.models.get(&c.model_id).cloned() else {
            let _ = reply.send(crate::admin::error(
                404,
                "the claim's model is not in the genesis",
            ));
            return None;
        };
        if self.in_flight >= MAX_IN_FLIGHT {
            let _ = reply.send(crate::admin::error(503, "model runs in flight: try again"));
            return None;
        }
        Some(self.dispute_job(model, id, &c, None, Some(reply)))
    }

    fn dispute_job(
        &mut self,
        model: Arc<Model>,
        id: [u8; 32],
        c: &Claim,
        corrupt: Option<u32>,
        reply: Option<Reply>,
    ) -> Job {
        self.in_flight += 1;
        let (input, root) = (c.input.clone(), c.trace_root);
        let bond = self.court.params().dispute_bond;
        Box::new(move || {
            let Some(run) = Run::of(&model, &input, corrupt) else {
                let why = "the claim's input is not one the model takes".to_string();
                return reply.map(|reply| Work::Refused { reply, why });
            };
            if run.tree.root() == root {
                let why = "this node's run of the claim has the same trace: nothing to dispute";
                return reply.map(|reply| Work::Refused {
                    reply,
                    why: why.into(),
                });
            }
            info!(target: "court", claim = %short(&id), "the claim's trace is not this node's: disputing it");
            let open = DisputeOpen {
                claim_id: id,
                trace_root: run.tree.root(),
                bond,
            };
            Some(Work::Dispute { open, run, reply })
        })
    }

    /// Our dispute went out: stand behind our run.
    pub fn disputed(&mut self, claim: [u8; 32], run: Run) {
        self.disputes_opened += 1;
        self.keep_run(claim, run);
    }

    /// What our disputes ask of us now (not sent within the last [`RESEND_MS`]).
    pub fn owed(&mut self, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        for o in self.court.owed(&self.me) {
            let (dispute, claim, tag) = (o.dispute, o.claim, o.round);
            if self
                .sent
                .get(&dispute)
                .is_some_and(|(t, at)| *t == tag && now_ms < at + RESEND_MS)
            {
                continue;
            }
            let Some(run) = self.runs.get(&claim) else {
                warn!(target: "court", dispute = %short(&dispute), "a dispute asks for a run this node no longer holds: it will lose on its clock");
                self.sent.insert(dispute, (tag, now_ms));
                continue;
            };
            let msg = court::reveal(dispute, o.round, &o.points, o.full, &run.tree)
                .map(Message::DisputeReveal);
            self.sent.insert(dispute, (tag, now_ms));
            out.extend(msg);
        }
        if self.sent.len() > 4 * court::MAX_OPEN_DISPUTES {
            let disputes = self.court.disputes();
            self.sent
                .retain(|d, _| disputes.get(d).is_some_and(|d| !d.finished()));
        }
        out
    }

    /// A referee asks for a dispute's state at a cut: a referee that has the agreed leaf
    /// state gives that; a side gives its own run's tensor (any cut: the referee checks
    /// it against the agreed hash).
    pub fn leaf_answer(&mut self, req: &LeafRequest) -> LeafResponse {
        let state = |tensors: Vec<Vec<i64>>| LeafState {
            dispute_id: req.dispute_id,
            cut: req.cut,
            tensors,
        };
        if let Some(held) = self.court.leaf_held(&req.dispute_id, req.cut) {
            self.leaf_served += 1;
            return LeafResponse {
                state: Some(state(held.to_vec())),
            };
        }
        let Some(d) = self.court.disputes().get(&req.dispute_id) else {
            return LeafResponse::default();
        };
        if self.me != d.claimant && self.me != d.challenger {
            return LeafResponse::default();
        }
        let tensor = self
            .runs
            .get(&d.claim_id)
            .and_then(|run| run.tensors.get(req.cut as usize));
        match tensor {
            Some(t) => {
                self.leaf_served += 1;
                LeafResponse {
                    state: Some(state(vec![t.clone()])),
                }
            }
            None => LeafResponse::default(),
        }
    }

    /// Where catching up on the court starts: a minute before the newest message archived
    /// here (messages signed while it was going down), or as far back as the court keeps
    /// records.
    pub fn catch_up_since(&self, now_ms: u64) -> u64 {
        let keep = now_ms.saturating_sub(self.court.params().keep_ms);
        match self.court.last_archived_ms() {
            Ok(Some(last)) => last.saturating_sub(60_000).max(keep),
            _ => keep,
        }
    }

    /// Applies peers' claims, disputes and attestations (checked by signature).
    pub fn apply_synced(
        &mut self,
        msgs: Vec<(PublicKey, Message, u64, Vec<u8>)>,
    ) -> provnet_validator::store::Result<court::SyncedReport> {
        let r = self.court.apply_synced(msgs)?;
        self.synced += r.applied as u64;
        Ok(r)
    }

    /// A peer catching up on the court: what this court archived since the time it asks.
    pub fn sync_answer(&self, req: &provnet_wire::CourtSyncRequest) -> provnet_wire::SyncResponse {
        // Room for the response's own framing.
        let budget = provnet_wire::sync::MAX_SYNC_RESPONSE_BYTES - 64 * 1024;
        match self.court.archived(req.since_ms, budget) {
            Ok((envelopes, more_from)) => provnet_wire::SyncResponse {
                serving: true,
                envelopes: envelopes.into_iter().map(Into::into).collect(),
                more_from,
            },
            Err(e) => {
                warn!(target: "court", "store: {e}");
                provnet_wire::SyncResponse::not_serving()
            }
        }
    }

    /// A fetch of a leaf state came back: with the state, or with nothing from anyone.
    pub fn leaf_fetched(&mut self, got: bool) {
        match got {
            true => self.leaf_fetched += 1,
            false => self.leaf_fetch_failed += 1,
        }
    }

    /// The court's clocks, with this node's models for a leaf nobody proved.
    pub fn tick(&mut self, now_ms: u64) -> provnet_validator::store::Result<Vec<court::Action>> {
        self.court.tick(now_ms, &Runner(&self.models))
    }

    /// A claim with its disputes, for `GET /claims/ID`.
    pub fn claim_view(&self, id: &[u8; 32]) -> (u16, serde_json::Value) {
        let court = &self.court;
        let Some(c) = court.claims().get(id) else {
            return crate::admin::error(404, "no such claim here");
        };
        let disputes: Vec<_> = c
            .disputes
            .iter()
            .filter_map(|d| court.disputes().get(d))
            .map(|d| court.dispute_status(d))
            .collect();
        let state = match (c.overturned, c.finished_ms) {
            (true, _) => "overturned",
            (false, Some(_)) => "upheld",
            (false, None) if disputes.iter().any(|d| d.final_verdict.is_none()) => "disputed",
            (false, None) => "open",
        };
        let view = serde_json::json!({
            "claim": hex::encode(c.id),
            "claimant": hex::encode(c.claimant),
            "model": hex::encode(c.claim.model_id),
            "output": c.claim.output,
            "cuts": c.claim.cuts,
            "trace_root": hex::encode(c.claim.trace_root),
            "bond": c.claim.bond,
            "received_ms": c.received_ms,
            "window_ends_ms": c.received_ms + court.params().window_ms,
            "state": state,
            "disputes": disputes,
        });
        (200, view)
    }

    /// One dispute, for `GET /disputes/ID`.
    pub fn dispute_view(&self, id: &[u8; 32]) -> (u16, serde_json::Value) {
        match self.court.disputes().get(id) {
            None => crate::admin::error(404, "no such dispute here"),
            Some(d) => (
                200,
                serde_json::to_value(self.court.dispute_status(d)).unwrap_or_default(),
            ),
        }
    }

    pub fn status(&self) -> Option<CourtStatus> {
        let mut s = match self.court.status(STATUS_DISPUTES) {
            Ok(s) => s,
            Err(e) => {
                warn!(target: "court", "store: {e}");
                return None;
            }
        };
        s.claims_published = self.claims_published;
        s.disputes_opened = self.disputes_opened;
        s.audits_skipped = self.audits_skipped;
        s.leaf_served = self.leaf_served;
        s.leaf_fetched = self.leaf_fetched;
        s.leaf_fetch_failed = self.leaf_fetch_failed;
        s.synced = self.synced;
        s.corrupted = self
            .corrupted
            .iter()
            .map(|(c, seg)| (hex::encode(c), *seg))
            .collect();
        Some(s)
    }
}
