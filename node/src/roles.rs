//! The roles a node runs on the network, wired between gossip and the role engines:
//! the challenger publishes proof requests, the miner proves them on a worker pool, the
//! validator verifies every proof and sets weights, and every node with a genesis keeps
//! the ledger (commit-reveal and consensus). Everything here runs on one task; proving and
//! verification run on their own threads and report back over bounded channels.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use provnet_kernels::Model;
use provnet_miner::{Done, Miner, MinerConfig, ProvingModel};
use provnet_p2p::{InboundSync, NetEvent, NetworkHandle, Received};
use provnet_validator::{
    EngineConfig, Epochs, Ledger, LedgerConfig, Store, Validator, Verdict, VerifyPool,
    VerifyingModel,
};
use provnet_wire::{
    unix_ms, Challenge, ChallengeStatus, ChallengerStatus, Gate, GateConfig, Message, Network,
    NodeStatus, ProofSubmission, PublicKey, Role,
};
use rand::{Rng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::genesis::Genesis;
use crate::identity::hex32;
use crate::sync::{Fetched, CATCH_UP_LIMIT};

/// Where catching up on missed weights logs.
pub const LOG_TARGET_SYNC: &str = "sync";

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
}

/// What the roles need beyond the network.
pub struct RoleConfig {
    pub roles: Vec<Role>,
    pub genesis: Genesis,
    pub data_dir: PathBuf,
    /// Challenges per second (challenger).
    pub rate: f64,
    pub deadline_ms: u64,
    pub miner: MinerConfig,
    pub backend: provnet_kernels::gpu::BackendChoice,
    pub adversary: Option<Adversary>,
    pub status_file: PathBuf,
    /// Where each snapshot goes for the admin endpoint.
    pub status_tx: tokio::sync::watch::Sender<NodeStatus>,
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn short(b: &[u8]) -> String {
    hex::encode(&b[..8.min(b.len())])
}

struct ChallengerRole {
    models: Vec<Arc<Model>>,
    rate: f64,
    deadline_ms: u64,
    next_at: f64,
    status: ChallengerStatus,
    index: BTreeMap<[u8; 32], usize>,
}

impl ChallengerRole {
    /// A fresh challenge: a random segment of the next model, a random input in the
    /// segment's range, a fresh nonce.
    fn make(&mut self, n: u64) -> Challenge {
        let mut rng = rand::rngs::OsRng;
        let model = &self.models[(n as usize) % self.models.len()];
        let segment = rng.gen_range(0..model.segments.len());
        let seg = &model.segments[segment];
        let (lo, hi) = (seg.input.lo() as i64, seg.input.hi() as i64);
        let input = (0..seg.n_in()).map(|_| rng.gen_range(lo..=hi)).collect();
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Challenge {
            model_id: model.id(),
            segment: segment as u32,
            input,
            nonce,
            deadline_ms: now_ms() + self.deadline_ms,
        }
    }

    fn record(&mut self, id: [u8; 32], c: &Challenge) {
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
        if self.status.recent.len() > 64 {
            self.status.recent.remove(0);
            self.index = self
                .status
                .recent
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((hex32("id", &s.id).ok()?, i)))
                .collect();
        }
    }

    /// A proof went by on gossip: count it against the challenge (unverified: the
    /// challenger only watches; validators judge).
    fn saw_proof(&mut self, p: &ProofSubmission) {
        if let Some(&i) = self.index.get(&p.challenge_id) {
            let s = &mut self.status.recent[i];
            s.proofs += 1;
            let after = now_ms().saturating_sub(s.received_ms) as f64;
            if s.fastest_ms.is_none_or(|f| after < f) {
                s.fastest_ms = Some(after);
            }
        }
    }

    fn close_expired(&mut self) {
        let now = now_ms();
        for s in &mut self.status.recent {
            if s.status == "open" && s.deadline_ms <= now {
                s.status = "closed".into();
            }
        }
    }
}

struct MinerRole {
    miner: Miner,
    done: mpsc::Receiver<Done>,
    adversary: Option<Adversary>,
    /// Replay: the proof kept to answer later challenges with.
    kept: Option<ProofSubmission>,
    /// Copy: challenges already copied.
    copied: VecDeque<[u8; 32]>,
    /// Late: proofs held until after their deadline.
    held: Vec<(u64, ProofSubmission)>,
    published: u64,
}

struct ValidatorRole {
    engine: Validator,
    pool: VerifyPool,
    verdicts: mpsc::Receiver<Verdict>,
}

impl ValidatorRole {
    /// Queues a verification; a full queue drops it, and the answer counts neither way.
    fn submit(&mut self, job: provnet_validator::VerifyJob) {
        let (id, miner) = (job.challenge_id, job.miner);
        if !self.pool.submit(job) {
            self.engine.forget(&id, &miner);
            warn!(target: "validator", "verification queue full: proof dropped");
        }
    }
}

pub struct Roles {
    cfg: RoleConfig,
    me: PublicKey,
    net: NetworkHandle,
    ledger: Ledger,
    challenger: Option<ChallengerRole>,
    miner: Option<MinerRole>,
    validator: Option<ValidatorRole>,
    published_challenges: u64,
    /// Checks the signed envelopes peers send when this node catches up.
    archive_gate: Gate,
    /// Epochs to fetch from peers before running their consensus (set at start).
    missed: Option<(u64, u64)>,
}

/// Loads every genesis model's directory.
fn genesis_models(g: &Genesis) -> Vec<&Path> {
    g.models.iter().map(|m| m.path.as_path()).collect()
}

impl Roles {
    pub fn start(cfg: RoleConfig, net: NetworkHandle) -> Result<Roles> {
        let me = net.public_key();
        let g = &cfg.genesis;
        let epochs = Epochs::new(g.epoch_secs * 1000);
        let stake: BTreeMap<PublicKey, u64> = g
            .validators
            .iter()
            .map(|v| Ok((hex32("validator hotkey", &v.hotkey)?, v.stake)))
            .collect::<Result<_>>()?;
        let store = Store::open(&cfg.data_dir.join("db"))?;
        let ledger = Ledger::open(
            store.clone(),
            LedgerConfig {
                stake: stake.clone(),
                params: g.consensus.clone(),
                emission_per_epoch: g.emission_per_epoch,
                epochs,
            },
            now_ms(),
        )?;
        let missed = ledger.missed_epochs(now_ms())?;
        let mut ledger = ledger;
        if let Some((from, _)) = missed {
            ledger.hold(from);
        }
        let archive_gate = Gate::new(
            Network::with_genesis(g.netuid, &g.hash()),
            me,
            GateConfig::default(),
        );

        let challenger = if cfg.roles.contains(&Role::Challenger) {
            let models = genesis_models(g)
                .into_iter()
                .map(|p| Ok(Arc::new(Model::load(p)?)))
                .collect::<Result<Vec<_>>>()?;
            Some(ChallengerRole {
                models,
                rate: cfg.rate,
                deadline_ms: cfg.deadline_ms,
                next_at: now_f64() + 1000.0,
                status: ChallengerStatus {
                    rate: cfg.rate,
                    ..Default::default()
                },
                index: BTreeMap::new(),
            })
        } else {
            None
        };

        let miner = if cfg.roles.contains(&Role::Miner) {
            let models = genesis_models(g)
                .into_iter()
                .map(|p| ProvingModel::load(p).with_context(|| format!("loading {}", p.display())))
                .collect::<Result<Vec<_>>>()?;
            let backend = provnet_kernels::gpu::select(cfg.backend)
                .map_err(|why| anyhow::anyhow!("miner: --backend {}: {why}", cfg.backend))?;
            let (tx, rx) = mpsc::channel(cfg.miner.queue_capacity.max(1) * 2);
            let mut miner_cfg = cfg.miner.clone();
            if miner_cfg.batch == 0 {
                miner_cfg.batch = if backend.name() == "cpu" { 1 } else { 16 };
            }
            let batch = miner_cfg.batch;
            let backend_name = backend.name();
            let miner = Miner::start(models, me, backend, miner_cfg, move |d| {
                let _ = tx.blocking_send(d);
            })?;
            info!(
                target: "miner",
                threads = cfg.miner.threads,
                max_concurrent = cfg.miner.max_concurrent,
                batch,
                backend = backend_name,
                adversary = ?cfg.adversary,
                "miner started"
            );
            Some(MinerRole {
                miner,
                done: rx,
                adversary: cfg.adversary,
                kept: None,
                copied: VecDeque::new(),
                held: Vec::new(),
                published: 0,
            })
        } else {
            None
        };

        let validator = if cfg.roles.contains(&Role::Validator) {
            if !stake.contains_key(&me) {
                warn!(target: "validator", "this node's key is not in the genesis validator set: other nodes will ignore its weights");
            }
            let models = genesis_models(g)
                .into_iter()
                .map(|p| {
                    Ok(Arc::new(
                        VerifyingModel::load(p)
                            .with_context(|| format!("loading {}", p.display()))?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let engine = Validator::open(
                store,
                models,
                EngineConfig::new(g.scoring.clone(), epochs),
                now_ms(),
            )?;
            let (tx, rx) = mpsc::channel(4096);
            let pool = VerifyPool::start(1024, move |v| {
                let _ = tx.blocking_send(v);
            })?;
            Some(ValidatorRole {
                engine,
                pool,
                verdicts: rx,
            })
        } else {
            None
        };

        Ok(Roles {
            cfg,
            me,
            net,
            ledger,
            challenger,
            miner,
            validator,
            published_challenges: 0,
            archive_gate,
            missed,
        })
    }

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut events = self.net.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut status_every = tokio::time::interval(Duration::from_secs(1));
        let mut sync_requests = match self.net.serve_sync(16).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(target: LOG_TARGET_SYNC, "cannot serve peers catching up: {e}");
                None
            }
        };
        let mut catch_up = self.missed.map(|(from, to)| {
            info!(target: LOG_TARGET_SYNC, from, to, "catching up: asking peers for the commits and reveals of epochs this node may have missed; their consensus waits");
            let (tx, rx) = oneshot::channel();
            let net = self.net.clone();
            tokio::spawn(async move {
                let fetched = tokio::time::timeout(CATCH_UP_LIMIT, crate::sync::fetch(net, from, to))
                    .await
                    .unwrap_or_else(|_| {
                        warn!(target: LOG_TARGET_SYNC, "catching up took over {CATCH_UP_LIMIT:?}: going on with what this node has");
                        Fetched::default()
                    });
                let _ = tx.send(fetched);
            });
            rx
        });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                ev = events.recv() => match ev {
                    Ok(NetEvent::Message(m)) => self.on_message(&m).await,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(target: "node", missed = n, "fell behind the network: messages dropped");
                    }
                    Err(_) => break,
                },
                Some(d) = recv_opt(self.miner.as_mut().map(|m| &mut m.done)) => self.on_done(d).await,
                Some(v) = recv_opt(self.validator.as_mut().map(|v| &mut v.verdicts)) => {
                    let vr = self.validator.as_mut().expect("has a verdict channel");
                    if let Err(e) = vr.engine.on_verdict(v, now_f64()) {
                        warn!(target: "validator", "recording a verdict: {e}");
                    }
                }
                Some(req) = recv_opt(sync_requests.as_mut()) => self.answer_sync(req),
                fetched = async { catch_up.as_mut().expect("guarded").await }, if catch_up.is_some() => {
                    catch_up = None;
                    self.apply_fetched(fetched.unwrap_or_default());
                }
                _ = tick.tick() => self.on_tick().await,
                _ = status_every.tick() => self.write_status().await,
            }
        }
        self.write_status().await;
        if let Some(m) = self.miner.take() {
            m.miner.stop();
        }
        if let Some(v) = self.validator.take() {
            drop(v.pool);
            v.engine.store().flush()?;
        }
        self.ledger.store().flush()?;
        Ok(())
    }

    async fn publish(&mut self, msg: Message) -> bool {
        let kind = msg.kind().as_str();
        match self.net.publish(msg).await {
            Ok(()) => true,
            Err(e) => {
                warn!(target: "node", kind, "publish failed: {e}");
                false
            }
        }
    }

    async fn on_message(&mut self, m: &Received) {
        let sender = m.verified.sender;
        let now = now_f64();
        match &m.verified.message {
            Message::Challenge(c) => {
                let id = c.id(&sender);
                if let Some(v) = self.validator.as_mut() {
                    if let Err(r) = v.engine.on_challenge(&sender, c, now) {
                        info!(target: "validator", challenge = %short(&id), reason = r.as_str(), "challenge refused: {r}");
                    }
                    // Proofs that arrived before this challenge.
                    for job in v.engine.take_ready() {
                        v.submit(job);
                    }
                }
                if let Some(mr) = self.miner.as_mut() {
                    match mr.adversary {
                        Some(Adversary::Copy) => {}
                        Some(Adversary::Replay) if mr.kept.is_some() => {
                            let mut old = mr.kept.clone().expect("checked");
                            old.challenge_id = id;
                            self.publish_proof(old).await;
                        }
                        _ => {
                            if let Err(r) = mr.miner.offer(id, c.clone()) {
                                info!(target: "miner", challenge = %short(&id), reason = r.as_str(), "challenge refused: {r}");
                            }
                        }
                    }
                }
            }
            Message::ProofSubmission(p) => {
                if let Some(c) = self.challenger.as_mut() {
                    c.saw_proof(p);
                }
                if let Some(v) = self.validator.as_mut() {
                    match v.engine.on_proof(&sender, p, now) {
                        Ok(Some(job)) => v.submit(job),
                        Ok(None) => {}
                        Err(r) => {
                            info!(target: "validator", miner = %short(&sender), reason = r.as_str(), "proof refused: {r}");
                        }
                    }
                }
                let copy = self.miner.as_mut().filter(|mr| {
                    mr.adversary == Some(Adversary::Copy) && !mr.copied.contains(&p.challenge_id)
                });
                if let Some(mr) = copy {
                    mr.copied.push_back(p.challenge_id);
                    if mr.copied.len() > 1024 {
                        mr.copied.pop_front();
                    }
                    self.publish_proof(p.clone()).await;
                }
            }
            Message::WeightsCommit(c) => {
                let r = self.ledger.on_signed_commit(&sender, c, now_ms(), &m.raw);
                log_weights("commit", &sender, c.epoch, r);
            }
            Message::WeightsReveal(r) => {
                let x = self.ledger.on_signed_reveal(&sender, r, now_ms(), &m.raw);
                log_weights("reveal", &sender, r.epoch, x);
            }
            Message::Announce(_) => {}
        }
    }

    async fn publish_proof(&mut self, p: ProofSubmission) {
        let id = p.challenge_id;
        if self.publish(Message::ProofSubmission(p)).await {
            if let Some(mr) = self.miner.as_mut() {
                mr.published += 1;
            }
            debug!(target: "miner", challenge = %short(&id), "proof published");
        }
    }

    async fn on_done(&mut self, d: Done) {
        let Some(mr) = self.miner.as_mut() else {
            return;
        };
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
                match mr.adversary {
                    Some(Adversary::Invalid) => {
                        let last = sub.proof.len() - 1;
                        sub.proof[last] ^= 0x01;
                    }
                    Some(Adversary::Replay) => {
                        mr.kept.get_or_insert(sub.clone());
                    }
                    Some(Adversary::Late) => {
                        mr.held.push((p.deadline_ms + 300, sub));
                        return;
                    }
                    _ => {}
                }
                self.publish_proof(sub).await;
            }
            Done::Failed {
                challenge_id,
                error,
            } => {
                warn!(target: "miner", challenge = %short(&challenge_id), "proving failed: {error}")
            }
            Done::Expired { challenge_id } => {
                info!(target: "miner", challenge = %short(&challenge_id), "dropped: the deadline came before a worker was free")
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = now_ms();
        // Late adversary: release what is due.
        if let Some(mr) = self.miner.as_mut() {
            let (due, keep): (Vec<_>, Vec<_>) = mr.held.drain(..).partition(|(t, _)| *t <= now);
            mr.held = keep;
            for (_, sub) in due {
                self.publish_proof(sub).await;
            }
        }
        if let Some(c) = self.challenger.as_mut() {
            c.close_expired();
            if c.rate > 0.0 && now_f64() >= c.next_at {
                c.next_at += 1000.0 / c.rate;
                if c.next_at < now_f64() {
                    c.next_at = now_f64() + 1000.0 / c.rate;
                }
                let ch = c.make(self.published_challenges);
                self.publish_challenge(ch).await;
            }
        }
        if let Some(v) = self.validator.as_mut() {
            match v.engine.tick(now) {
                Ok(msgs) => {
                    for m in msgs {
                        let what = match &m {
                            Message::WeightsCommit(c) => format!("commit for epoch {}", c.epoch),
                            Message::WeightsReveal(r) => format!("reveal for epoch {}", r.epoch),
                            _ => String::new(),
                        };
                        let sealed = match self.net.publish_sealed(m.clone()).await {
                            Ok(bytes) => {
                                info!(target: "validator", "published weights {what}");
                                Some(bytes)
                            }
                            Err(e) => {
                                warn!(target: "node", kind = m.kind().as_str(), "publish failed: {e}");
                                None
                            }
                        };
                        self.own_weights(&m, sealed.as_deref());
                    }
                }
                Err(e) => warn!(target: "validator", "store: {e}"),
            }
        }
        if let Err(e) = self.ledger.tick(now) {
            warn!(target: "ledger", "store: {e}");
        }
    }

    /// Our own commits and reveals go into our ledger directly (gossip does not echo them),
    /// with the envelope as sent when it went out, to serve to peers catching up.
    fn own_weights(&mut self, m: &Message, sealed: Option<&[u8]>) {
        let now = now_ms();
        let me = self.me;
        let r = match (m, sealed) {
            (Message::WeightsCommit(c), Some(b)) => self.ledger.on_signed_commit(&me, c, now, b),
            (Message::WeightsCommit(c), None) => self.ledger.on_commit(&me, c, now),
            (Message::WeightsReveal(r), Some(b)) => self.ledger.on_signed_reveal(&me, r, now, b),
            (Message::WeightsReveal(r), None) => self.ledger.on_reveal(&me, r, now),
            _ => return,
        };
        match r {
            Ok(Ok(())) => {}
            Ok(Err(x)) => debug!(target: "ledger", "own weights not recorded: {x}"),
            Err(e) => warn!(target: "ledger", "store: {e}"),
        }
    }

    /// Answers a peer catching up, from the ledger's archive.
    fn answer_sync(&mut self, req: InboundSync) {
        let answer = match self.ledger.sync_answer(&req.request) {
            Ok(a) => a,
            Err(e) => {
                warn!(target: LOG_TARGET_SYNC, "store: {e}");
                provnet_wire::SyncResponse::not_serving()
            }
        };
        debug!(target: LOG_TARGET_SYNC, peer = %req.peer, from = req.request.from_epoch, to = req.request.to_epoch, envelopes = answer.envelopes.len(), "answered a peer catching up");
        let _ = req.reply.send(answer);
    }

    /// Checks and applies what peers sent for the missed epochs, then lets consensus go on.
    fn apply_fetched(&mut self, fetched: Fetched) {
        let (from, to) = self.missed.unwrap_or((0, u64::MAX));
        let received = fetched.envelopes.len();
        let envelopes: Vec<Vec<u8>> = fetched
            .envelopes
            .into_iter()
            .map(|b| b.into_vec())
            .collect();
        let report =
            match self
                .ledger
                .apply_synced(&self.archive_gate, from..=to, envelopes, now_ms())
            {
                Ok(r) => r,
                Err(e) => {
                    warn!(target: LOG_TARGET_SYNC, "store: {e}");
                    Default::default()
                }
            };
        self.ledger.release();
        info!(
            target: LOG_TARGET_SYNC,
            peers_asked = fetched.peers_asked,
            peers_answered = fetched.peers_answered,
            received,
            distinct = report.distinct,
            commits = report.commits,
            reveals = report.reveals,
            refused_by_ledger = ?report.refused,
            bad_envelopes = ?report.bad,
            "caught up: consensus goes on"
        );
    }

    pub async fn publish_challenge(&mut self, ch: Challenge) -> Option<[u8; 32]> {
        let id = ch.id(&self.me);
        let seg = ch.segment;
        let ok = self.publish(Message::Challenge(ch.clone())).await;
        let c = self.challenger.as_mut()?;
        if ok {
            self.published_challenges += 1;
            c.status.published += 1;
            c.record(id, &ch);
            info!(target: "challenger", challenge = %short(&id), segment = seg, "challenge published");
            Some(id)
        } else {
            c.status.publish_failures += 1;
            None
        }
    }

    pub async fn snapshot(&self) -> NodeStatus {
        let g = &self.cfg.genesis;
        let epochs = Epochs::new(g.epoch_secs * 1000);
        let now = now_ms();
        let epoch = epochs.of(now);
        let gossip = self.net.status().await.unwrap_or_default();
        let peers = self.net.peers().await.unwrap_or_default();
        let mut roles: Vec<String> = self.cfg.roles.iter().map(|r| r.as_str().into()).collect();
        roles.sort();
        let log = |e: provnet_validator::StoreError| {
            warn!(target: "node", "status: {e}");
        };
        NodeStatus {
            at_ms: now,
            software_version: env!("CARGO_PKG_VERSION").into(),
            public_key: hex::encode(self.me),
            peer_id: self.net.peer_id().to_string(),
            roles,
            netuid: g.netuid,
            genesis: hex::encode(g.hash()),
            epoch,
            epoch_secs: g.epoch_secs,
            epoch_ends_ms: epochs.start(epoch + 1),
            gossip,
            peers,
            miner: self.miner.as_ref().map(|m| {
                let mut s = m.miner.stats();
                s.published = m.published;
                s
            }),
            validator: self.validator.as_ref().and_then(|v| {
                v.engine
                    .status(&self.ledger, v.pool.queued(), v.pool.batches())
                    .map_err(log)
                    .ok()
            }),
            challenger: self.challenger.as_ref().map(|c| c.status.clone()),
            ledger: self.ledger.status(16).map_err(log).ok(),
            log: crate::logring::LogRing::global().recent(LOG_LINES),
        }
    }

    async fn write_status(&self) {
        let s = self.snapshot().await;
        self.cfg.status_tx.send_replace(s.clone());
        let path = &self.cfg.status_file;
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            warn!(target: "node", path = %path.display(), "writing status: {e}");
        }
    }
}

/// Logs what the ledger made of a validator's commit or reveal from gossip.
fn log_weights(
    kind: &str,
    sender: &PublicKey,
    epoch: u64,
    r: provnet_validator::store::Result<std::result::Result<(), provnet_validator::LedgerRefusal>>,
) {
    match r {
        Ok(Ok(())) => debug!(target: "ledger", validator = %short(sender), epoch, "{kind}"),
        Ok(Err(x)) => {
            info!(target: "ledger", validator = %short(sender), reason = x.as_str(), "{kind} refused: {x}")
        }
        Err(e) => warn!(target: "ledger", "store: {e}"),
    }
}

/// Log lines a status snapshot carries.
pub const LOG_LINES: usize = 100;

async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Parses `--role` values, sorted and without duplicates.
pub fn parse_roles(names: &[String]) -> Result<Vec<Role>> {
    let mut roles = Vec::new();
    for n in names {
        for part in n.split(',').filter(|s| !s.is_empty()) {
            let r = match part {
                "challenger" => Role::Challenger,
                "miner" => Role::Miner,
                "validator" => Role::Validator,
                other => bail!("unknown role {other:?} (challenger, miner, validator)"),
            };
            roles.push(r);
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}
