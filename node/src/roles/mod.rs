//! The roles a node runs on the network, wired between gossip and the role engines, one
//! file each: the challenger publishes proof requests ([`challenger`]), the validator
//! issues challenges, verifies every proof to them and sets weights ([`validator`]), the
//! miner proves validators' challenges on a worker pool ([`miner`]), and every node with a
//! genesis keeps the ledger (commit-reveal and consensus). Everything here runs on one
//! task; proving and verification run on their own threads and report back over bounded
//! channels.

mod challenger;
mod disputes;
mod miner;
mod validator;

pub use challenger::ChallengerRole;
pub use disputes::DisputeConfig;
pub use miner::Adversary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use provnet_kernels::Model;
use provnet_miner::{Done, Miner, MinerConfig, ProvingModel};
use provnet_p2p::{InboundSync, NetEvent, NetworkHandle, Received};
use provnet_validator::{
    EngineConfig, Epochs, IssueConfig, Ledger, LedgerConfig, MinerRegistry, Registrar, Store,
    Validator, VerifyPool, VerifyingModel,
};
use provnet_wire::{
    unix_ms, Challenge, Gate, GateConfig, Message, Network, NodeStatus, PublicKey, Role,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::disputes::DisputeRole;
use self::miner::MinerRole;
use self::validator::ValidatorRole;
use crate::genesis::Genesis;
use crate::identity::hex32;
use crate::sync::Fetched;

/// Where catching up on missed weights logs.
pub const LOG_TARGET_SYNC: &str = "sync";

/// What the roles need beyond the network.
pub struct RoleConfig {
    pub roles: Vec<Role>,
    pub genesis: Genesis,
    pub data_dir: PathBuf,
    /// Requests per second (challenger); benchmark challenges per second (validator).
    pub rate: f64,
    pub deadline_ms: u64,
    pub miner: MinerConfig,
    pub backend: provnet_kernels::gpu::BackendChoice,
    pub adversary: Option<Adversary>,
    pub status_file: PathBuf,
    /// Where each snapshot goes for the admin endpoint.
    pub status_tx: tokio::sync::watch::Sender<NodeStatus>,
    /// The registered miners as the gate reads them (kept current here).
    pub registered: Option<provnet_wire::SharedKeys>,
    /// Test only: do not catch up from peers after downtime, so a test can show what the
    /// fetch is for (`--no-catch-up`, `adversary` builds).
    pub no_catch_up: bool,
    /// Claims, audits (and the test-only liars).
    pub disputes: DisputeConfig,
    /// Reads and writes from the admin endpoint (`POST /claims`, `GET /claims/ID`, ...).
    pub admin_rx: Option<mpsc::Receiver<crate::admin::AdminRequest>>,
}

pub(crate) fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

pub(crate) fn short(b: &[u8]) -> String {
    hex::encode(&b[..8.min(b.len())])
}

pub struct Roles {
    cfg: RoleConfig,
    me: PublicKey,
    net: NetworkHandle,
    ledger: Ledger,
    /// The miner registry (the metagraph), fed registrations from gossip.
    registrar: Registrar,
    /// Where this miner's registration for an epoch stands.
    registering: Option<Registering>,
    /// The genesis id envelopes carry (registration work covers it).
    genesis_id: [u8; 8],
    challenger: Option<ChallengerRole>,
    miner: Option<MinerRole>,
    validator: Option<ValidatorRole>,
    published_challenges: u64,
    /// Checks the signed envelopes peers send when this node catches up.
    archive_gate: Gate,
    /// Epochs to fetch from peers before running their consensus (set at start).
    missed: Option<(u64, u64)>,
    /// The status file's write in progress, on a blocking thread.
    status_write: Option<tokio::task::JoinHandle<()>>,
    /// The court every node keeps; claims and audits for the roles that make them.
    disputes: DisputeRole,
    /// Model runs for claims and audits come back here from their blocking threads.
    work_tx: mpsc::Sender<Option<disputes::Work>>,
    work_rx: mpsc::Receiver<Option<disputes::Work>>,
    /// Leaf states this referee fetched come back here.
    leaf_tx: mpsc::Sender<disputes::LeafFetched>,
    leaf_rx: mpsc::Receiver<disputes::LeafFetched>,
    /// The admin endpoint's court requests.
    admin_rx: Option<mpsc::Receiver<crate::admin::AdminRequest>>,
    ticks: u64,
}

/// A miner's registration for one epoch: the work running, done but not yet sent (no
/// peers), or sent.
enum Registering {
    Solving(u64, tokio::task::JoinHandle<provnet_wire::Register>),
    Solved(u64, provnet_wire::Register),
    Sent(u64),
}

/// Loads every genesis model's directory.
fn genesis_models(g: &Genesis) -> Vec<&Path> {
    g.models.iter().map(|m| m.path.as_path()).collect()
}

impl Roles {
    pub fn start(mut cfg: RoleConfig, net: NetworkHandle) -> Result<Roles> {
        let admin_rx = cfg.admin_rx.take();
        let me = net.public_key();
        let g = &cfg.genesis;
        let epochs = Epochs::new(g.epoch_secs * 1000);
        let stake: BTreeMap<PublicKey, u64> = g
            .validators
            .iter()
            .map(|v| Ok((hex32("validator hotkey", &v.hotkey)?, v.stake)))
            .collect::<Result<_>>()?;
        let store = Store::open(&cfg.data_dir.join("db"))?;
        // Every genesis model, loaded once: the court runs them, the challenger draws from
        // them.
        let all_models = genesis_models(g)
            .into_iter()
            .map(|p| Ok(Arc::new(Model::load(p)?)))
            .collect::<Result<Vec<_>>>()?;
        let court = {
            use provnet_validator::court::{bank::Bank, Court, CourtConfig};
            let bank = Bank::open(&store, &g.account_balances()?)?;
            let referee = cfg.roles.contains(&Role::Validator) && stake.contains_key(&me);
            let court_cfg = CourtConfig {
                params: g.disputes.clone(),
                stake: stake.clone(),
                me,
                referee,
                models: all_models
                    .iter()
                    .map(|m| (m.id(), m.segments.len() as u32 + 1))
                    .collect(),
            };
            Court::open(&store, court_cfg, Box::new(bank))?
        };
        let mut dispute_cfg = cfg.disputes.clone();
        if !cfg.roles.contains(&Role::Inference) {
            dispute_cfg.claim_rate = 0.0;
            dispute_cfg.cheat_rate = 0.0;
        }
        if !cfg.roles.contains(&Role::Challenger) {
            dispute_cfg.audit_rate = 0.0;
            dispute_cfg.false_dispute_rate = 0.0;
        }
        let named = g
            .models
            .iter()
            .map(|m| m.name.clone())
            .zip(all_models.iter().cloned())
            .collect();
        let disputes = DisputeRole::new(court, me, dispute_cfg, named);
        let (work_tx, work_rx) = mpsc::channel(16);
        let (leaf_tx, leaf_rx) = mpsc::channel(64);
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
        let missed = ledger.missed_epochs(now_ms())?.filter(|_| !cfg.no_catch_up);
        if cfg.no_catch_up {
            warn!(target: LOG_TARGET_SYNC, "--no-catch-up: epochs missed while down run their consensus on what this node has");
        }
        let mut ledger = ledger;
        if let Some((from, _)) = missed {
            ledger.hold(from);
        }
        let network = Network::with_genesis(g.netuid, &g.hash());
        let archive_gate = Gate::new(network, me, GateConfig::default());
        let registrar = Registrar::open(
            store.clone(),
            g.registration.clone(),
            &g.miner_keys()?,
            network.genesis,
            epochs,
            now_ms(),
        )?;

        let validators = g.validator_keys()?;
        // Every genesis model with its verifying keys, for the roles that verify proofs.
        let verifying =
            if cfg.roles.contains(&Role::Challenger) || cfg.roles.contains(&Role::Validator) {
                genesis_models(g)
                    .into_iter()
                    .map(|p| {
                        Ok(Arc::new(
                            VerifyingModel::load(p)
                                .with_context(|| format!("loading {}", p.display()))?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
        let challenger = if cfg.roles.contains(&Role::Challenger) {
            if !g.challenger_quotas()?.contains_key(&me) {
                warn!(target: "challenger", "this node's key is not an admitted challenger in the genesis: its requests are dropped at the first hop");
            }
            Some(ChallengerRole::new(
                all_models.clone(),
                verifying.clone(),
                validators.clone(),
                cfg.rate,
                cfg.deadline_ms,
            )?)
        } else {
            None
        };

        let miner = if cfg.roles.contains(&Role::Miner) {
            // `Genesis::load` checked each key index against the genesis's vk ids, and
            // `ProvingModel::load` checks each proving key's embedded vk against its index.
            let models = genesis_models(g)
                .into_iter()
                .map(|p| ProvingModel::load(p).with_context(|| format!("loading {}", p.display())))
                .collect::<Result<Vec<_>>>()?;
            let backend = provnet_kernels::gpu::select(cfg.backend)
                .map_err(|why| anyhow::anyhow!("miner: --backend {}: {why}", cfg.backend))?;
            let (tx, rx) = mpsc::channel(cfg.miner.queue_capacity.max(1) * 2);
            let mut miner_cfg = cfg.miner.clone();
            let mut issuers = validators.clone();
            if cfg.adversary == Some(Adversary::SelfChallenge) {
                issuers.insert(me); // it proves its own challenges: that is the attack
            }
            miner_cfg.issuers = Some(issuers);
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
            let own = (cfg.adversary == Some(Adversary::SelfChallenge))
                .then(|| {
                    let none = std::collections::BTreeSet::new();
                    ChallengerRole::new(all_models.clone(), Vec::new(), none, 1.0, 5_000)
                })
                .transpose()?;
            Some(MinerRole::new(miner, rx, cfg.adversary, own))
        } else {
            None
        };

        let validator = if cfg.roles.contains(&Role::Validator) {
            if !stake.contains_key(&me) {
                warn!(target: "validator", "this node's key is not in the genesis validator set: other nodes will ignore its weights");
            }
            let models = verifying;
            let mut engine_cfg = EngineConfig::new(g.scoring.clone(), epochs);
            engine_cfg.issue = IssueConfig {
                rate: cfg.rate,
                deadline_ms: cfg.deadline_ms,
                challengers: g.challenger_quotas()?,
            };
            engine_cfg.validators = validators.clone();
            engine_cfg.keep_epochs = g.keep_epochs;
            let engine = Validator::open(store, models, engine_cfg, me, now_ms())?;
            let (tx, rx) = mpsc::channel(4096);
            let pool = VerifyPool::start(1024, move |v| {
                let _ = tx.blocking_send(v);
            })?;
            Some(ValidatorRole::new(engine, pool, rx))
        } else {
            None
        };

        let mut roles = Roles {
            cfg,
            me,
            net,
            ledger,
            registrar,
            registering: None,
            genesis_id: network.genesis,
            challenger,
            miner,
            validator,
            published_challenges: 0,
            archive_gate,
            missed,
            status_write: None,
            disputes,
            work_tx,
            work_rx,
            leaf_tx,
            leaf_rx,
            admin_rx,
            ticks: 0,
        };
        roles.roster_changed()?;
        Ok(roles)
    }

    /// The registry changed (or the node started): the gate and the validator's scores
    /// follow it.
    fn roster_changed(&mut self) -> Result<()> {
        let keys: std::collections::HashSet<PublicKey> = self
            .registrar
            .graph()
            .slots()
            .iter()
            .map(|s| s.hotkey)
            .collect();
        if let Some(shared) = &self.cfg.registered {
            if let Ok(mut set) = shared.write() {
                set.clone_from(&keys);
            }
        }
        if let Some(v) = self.validator.as_mut() {
            v.engine.set_roster(Some(keys))?;
        }
        Ok(())
    }

    /// A registration, from gossip or our own: it waits for its epoch's batch.
    fn on_register(&mut self, hotkey: &PublicKey, r: &provnet_wire::Register) {
        match self.registrar.on_register(hotkey, r, now_ms()) {
            Ok(Ok(q)) => {
                debug!(target: "ledger", miner = %short(hotkey), epoch = q.epoch, "registration heard: it waits for its epoch's batch")
            }
            Ok(Err(x)) => {
                debug!(target: "ledger", miner = %short(hotkey), reason = x.as_str(), "registration refused: {x}")
            }
            Err(e) => warn!(target: "ledger", "store: {e}"),
        }
    }

    /// Applies the registration batches whose time has come.
    fn apply_registrations(&mut self) {
        let taken = match self.registrar.tick(now_ms()) {
            Ok(t) => t,
            Err(e) => return warn!(target: "ledger", "store: {e}"),
        };
        for done in &taken {
            info!(
                target: "ledger",
                miner = %short(&done.hotkey),
                uid = done.uid,
                replaced = ?done.replaced.map(|k| short(&k)),
                "miner registered"
            );
        }
        if !taken.is_empty() {
            if let Err(e) = self.roster_changed() {
                warn!(target: "ledger", "store: {e}");
            }
        }
    }

    /// A miner without a slot registers, once an epoch until it holds one. The work runs
    /// on a blocking thread; this only looks whether it is done.
    async fn register_if_needed(&mut self) {
        let g = self.registrar.graph();
        if self.miner.is_none() || g.is_registered(&self.me) || g.is_pending(&self.me) {
            return;
        }
        let epoch = self.ledger.epochs().of(now_ms());
        let r = match self.registering.take() {
            Some(Registering::Sent(e)) if e == epoch => {
                self.registering = Some(Registering::Sent(e));
                return;
            }
            Some(Registering::Solving(e, work)) if e == epoch => {
                if !work.is_finished() {
                    self.registering = Some(Registering::Solving(e, work));
                    return;
                }
                let Ok(r) = work.await else { return };
                info!(target: "miner", epoch, "registering: work done, asking for a slot");
                r
            }
            Some(Registering::Solved(e, r)) if e == epoch => r,
            _ => {
                let (genesis, me) = (self.genesis_id, self.me);
                let bits = self.registrar.graph().params.work_bits;
                let start = rand::random::<u64>();
                let work = tokio::task::spawn_blocking(move || {
                    provnet_wire::Register::solve(&genesis, &me, epoch, bits, start)
                });
                self.registering = Some(Registering::Solving(epoch, work));
                return;
            }
        };
        if self.publish(Message::Register(r)).await {
            self.registering = Some(Registering::Sent(epoch));
            let me = self.me;
            self.on_register(&me, &r);
        } else {
            // No peers yet: the same work goes out on a later tick of this epoch.
            self.registering = Some(Registering::Solved(epoch, r));
        }
    }

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut events = self.net.subscribe();
        // Weights and registrations on a channel of their own: no flood on the bus can
        // make this node miss a commit or a reveal.
        let mut ledger_rx = self.net.subscribe_ledger(4096).await?;
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
        let mut court_requests = match self.net.serve_court(16).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(target: LOG_TARGET_SYNC, "cannot serve peers catching up on the court: {e}");
                None
            }
        };
        // The claims, disputes and attestations this node may have missed while down.
        let validators = self.cfg.genesis.validator_keys().unwrap_or_default();
        let mut court_catch_up = {
            let since = self.disputes.catch_up_since(now_ms());
            let (net, validators) = (self.net.clone(), validators.clone());
            Some(crate::sync::in_background(async move {
                crate::sync::fetch_court(net, since, &validators).await
            }))
        };
        let mut leaf_requests = match self.net.serve_leaf(64).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(target: "court", "cannot serve leaf states to referees: {e}");
                None
            }
        };
        let mut catch_up = self.missed.map(|(from, to)| {
            info!(target: LOG_TARGET_SYNC, from, to, "catching up: asking peers for the commits and reveals of epochs this node may have missed; their consensus waits");
            let (net, validators) = (self.net.clone(), validators.clone());
            crate::sync::in_background(async move {
                crate::sync::fetch(net, from, to, &validators).await
            })
        });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                // In this order: a flood on the gossip bus (last) never starves the
                // ledger, verdicts, proofs done or the clock.
                biased;
                _ = &mut stop => break,
                Some(m) = ledger_rx.recv() => self.on_message(&m).await,
                Some(v) = recv_opt(self.validator.as_mut().map(|v| &mut v.verdicts)) => {
                    let vr = self.validator.as_mut().expect("has a verdict channel");
                    vr.on_verdict(v, now_f64());
                    self.leaf_proofs().await;
                }
                Some(d) = recv_opt(self.miner.as_mut().map(|m| &mut m.done)) => self.on_done(d).await,
                Some(v) = recv_opt(self.challenger.as_mut().map(|c| &mut c.verdicts)) => {
                    self.challenger.as_mut().expect("has a verdict channel").on_verdict(v);
                }
                Some(w) = self.work_rx.recv() => self.on_work(w).await,
                Some(req) = recv_opt(self.admin_rx.as_mut()) => self.on_admin(req).await,
                _ = tick.tick() => self.on_tick().await,
                _ = status_every.tick() => self.write_status(false).await,
                Some(req) = recv_opt(sync_requests.as_mut()) => self.answer_sync(req),
                Some(req) = recv_opt(court_requests.as_mut()) => {
                    let answer = self.disputes.sync_answer(&req.request);
                    debug!(target: LOG_TARGET_SYNC, peer = %req.peer, since = req.request.since_ms, envelopes = answer.envelopes.len(), "answered a peer catching up on the court");
                    let _ = req.reply.send(answer);
                }
                fetched = async { court_catch_up.as_mut().expect("guarded").await }, if court_catch_up.is_some() => {
                    court_catch_up = None;
                    self.apply_court_fetched(fetched.unwrap_or_default());
                }
                Some(f) = self.leaf_rx.recv() => self.on_leaf_fetched(f).await,
                Some(req) = recv_opt(leaf_requests.as_mut()) => {
                    let answer = self.disputes.leaf_answer(&req.request);
                    let _ = req.reply.send(answer);
                }
                fetched = async { catch_up.as_mut().expect("guarded").await }, if catch_up.is_some() => {
                    catch_up = None;
                    self.apply_fetched(fetched.unwrap_or_default());
                }
                ev = events.recv() => match ev {
                    Ok(NetEvent::Message(m)) => self.on_message(&m).await,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(target: "node", missed = n, "fell behind the network: messages dropped");
                    }
                    Err(_) => break,
                },
            }
        }
        self.write_status(true).await;
        if let Some(m) = self.miner.take() {
            m.miner.stop();
        }
        if let Some(v) = self.validator.take() {
            drop(v.queue);
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
        // Timed from arrival: a busy roles task (an epoch's close, a consensus) never
        // lengthens a miner's measured latency.
        let now = m.received_at_ms;
        match &m.verified.message {
            Message::Challenge(c) => {
                if let Some(ch) = self.challenger.as_mut() {
                    ch.saw_challenge(&sender, c);
                }
                let adopted = self
                    .validator
                    .as_mut()
                    .and_then(|v| v.on_challenge(&sender, c, now));
                if let Some(a) = adopted {
                    self.publish_issued(a).await;
                }
                if let Some(out) = self
                    .miner
                    .as_mut()
                    .and_then(|mr| mr.on_challenge(&sender, c))
                {
                    self.publish_mined(out).await;
                }
            }
            Message::ProofSubmission(p) => {
                if let Some(c) = self.challenger.as_mut() {
                    c.saw_proof(&sender, p);
                }
                if let Some(v) = self.validator.as_mut() {
                    v.on_proof(&sender, p, now);
                }
                if let Some(out) = self.miner.as_mut().and_then(|mr| mr.on_proof(p)) {
                    self.publish_mined(out).await;
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
            // Ceremony messages are the ceremony task's (`crate::ceremony_net`), which keeps
            // running beside the roles.
            Message::Announce(_) | Message::Ceremony(_) => {}
            Message::Register(r) => self.on_register(&sender, r),
            Message::Claim(_)
            | Message::DisputeOpen(_)
            | Message::DisputeReveal(_)
            | Message::Attestation(_) => {
                let envelope = (m.raw.as_slice(), m.verified.timestamp_ms);
                self.on_dispute_message(&sender, &m.verified.message, Some(envelope))
                    .await
            }
        }
    }

    /// A dispute-game message, from gossip or this node's own (which gossip does not
    /// echo): the court takes it, and says what to do.
    /// `envelope`: the signed bytes it came in and their timestamp, archived for peers
    /// catching up once the court takes the message.
    async fn on_dispute_message(
        &mut self,
        sender: &PublicKey,
        msg: &Message,
        envelope: Option<(&[u8], u64)>,
    ) {
        let now = now_ms();
        let court = &mut self.disputes.court;
        let (what, result) = match msg {
            Message::Claim(c) => {
                let taken = court.on_claim(sender, c, now);
                if let Ok(Ok(id)) = &taken {
                    if let Some(job) = self.disputes.audit(sender, *id, c) {
                        self.run_job(job);
                    }
                }
                ("claim", taken.map(|r| r.map(|_| Vec::new())))
            }
            Message::DisputeOpen(d) => (
                "dispute",
                court
                    .on_dispute(sender, d, now)
                    .map(|r| r.map(|_| Vec::new())),
            ),
            Message::DisputeReveal(r) => ("reveal", court.on_reveal(sender, r, now)),
            Message::Attestation(a) => (
                "attestation",
                court
                    .on_attestation(sender, a, now)
                    .map(|r| r.map(|()| Vec::new())),
            ),
            _ => return,
        };
        match result {
            Ok(Ok(actions)) => {
                if let Some((bytes, signed_ms)) = envelope {
                    self.archive(bytes, signed_ms);
                }
                self.court_actions(actions).await
            }
            Ok(Err(x)) => {
                debug!(target: "court", from = %short(sender), reason = x.as_str(), "{what} refused: {x}")
            }
            Err(e) => warn!(target: "court", "store: {e}"),
        }
        // Messages held because they came early may have applied now.
        let held = self.disputes.court.take_actions();
        if !held.is_empty() {
            Box::pin(self.court_actions(held)).await;
        }
        if !matches!(msg, Message::Attestation(_)) {
            // A round may have opened that this node is a side of.
            Box::pin(self.answer_owed()).await;
        }
    }

    /// Publishes a dispute-game message of ours and, once it is out, gives it to our court
    /// with the envelope it went out in.
    async fn publish_dispute(&mut self, m: Message) -> bool {
        match self.publish_sealed(&m).await {
            Some(sealed) => {
                self.take_own(&m, &sealed).await;
                true
            }
            None => false,
        }
    }

    /// Publishes; the envelope it went out in, or none (logged).
    async fn publish_sealed(&mut self, m: &Message) -> Option<Vec<u8>> {
        let kind = m.kind().as_str();
        match self.net.publish_sealed(m.clone()).await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(target: "node", kind, "publish failed: {e}");
                None
            }
        }
    }

    /// A dispute-game message of ours is out (gossip does not echo it): our court takes it.
    async fn take_own(&mut self, m: &Message, sealed: &[u8]) {
        let now = now_ms();
        if matches!(m, Message::Attestation(_)) {
            // An attestation of ours is counted when the court makes it.
            self.archive(sealed, now);
        } else {
            let me = self.me;
            Box::pin(self.on_dispute_message(&me, m, Some((sealed, now)))).await;
        }
    }

    /// Keeps a signed claim, dispute or attestation the court took, for peers catching up.
    fn archive(&mut self, envelope: &[u8], signed_ms: u64) {
        if let Err(e) = self.disputes.court.archive(signed_ms, envelope) {
            warn!(target: "court", "store: {e}");
        }
    }

    /// Carries out what the court asks: leaf challenges (a referee's), attestations.
    async fn court_actions(&mut self, actions: Vec<provnet_validator::court::Action>) {
        use provnet_validator::court::Action;
        for a in actions {
            match a {
                Action::Publish(m) => {
                    self.publish_dispute(m).await;
                }
                Action::FetchLeaf {
                    dispute,
                    cut,
                    hash,
                    from,
                } => {
                    let (net, tx) = (self.net.clone(), self.leaf_tx.clone());
                    tokio::spawn(async move {
                        let got = disputes::fetch_leaf(&net, dispute, cut, hash, &from).await;
                        let _ = tx.send((dispute, got)).await;
                    });
                }
                Action::IssueLeaf {
                    dispute,
                    model_id,
                    segment,
                    input,
                } => {
                    let Some(v) = self.validator.as_mut() else {
                        continue;
                    };
                    let deadline_ms = now_ms() + self.disputes.court.params().leaf_ms;
                    let c = Challenge {
                        model_id,
                        segment,
                        input,
                        nonce: rand::random(),
                        deadline_ms,
                        request: Some(dispute),
                    };
                    match v.engine.issue_watched(&c, now_f64()) {
                        Ok(id) => {
                            info!(target: "court", dispute = %short(&dispute), segment, challenge = %short(&id), "leaf issued as a challenge");
                            self.disputes.court.leaf_issued(&dispute, deadline_ms);
                            self.publish_issued(c).await;
                        }
                        Err(provnet_validator::Refusal::BadInput(why)) => {
                            warn!(target: "court", dispute = %short(&dispute), "the agreed leaf state is not a valid input: {why}");
                            match self.disputes.court.leaf_impossible(&dispute, now_ms()) {
                                Ok(actions) => Box::pin(self.court_actions(actions)).await,
                                Err(e) => warn!(target: "court", "store: {e}"),
                            }
                        }
                        Err(r) => {
                            // Not issued (too many open, say): the segment is run here
                            // at the next tick instead.
                            warn!(target: "court", dispute = %short(&dispute), "the leaf could not be issued ({r}): running it here");
                            self.disputes.court.leaf_issued(&dispute, now_ms());
                        }
                    }
                }
            }
        }
    }

    /// A referee's fetch of a leaf state came back.
    async fn on_leaf_fetched(&mut self, (dispute, got): disputes::LeafFetched) {
        self.disputes.leaf_fetched(got.is_some());
        let Some((from, state)) = got else {
            self.disputes.court.leaf_unavailable(&dispute);
            return;
        };
        match self.disputes.court.on_leaf_state(&from, &state) {
            Ok(Ok(actions)) => self.court_actions(actions).await,
            Ok(Err(x)) => {
                debug!(target: "court", dispute = %short(&dispute), reason = x.as_str(), "fetched leaf state not taken: {x}");
                self.disputes.court.leaf_unavailable(&dispute);
            }
            Err(e) => warn!(target: "court", "store: {e}"),
        }
    }

    /// Runs a model run for a claim or an audit on a blocking thread; its result comes
    /// back on the work channel ([`Roles::on_work`]).
    fn run_job(&self, job: disputes::Job) {
        let tx = self.work_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(job());
        });
    }

    /// A finished run: publish the claim or the dispute it made.
    async fn on_work(&mut self, work: Option<disputes::Work>) {
        self.disputes.job_done();
        let me = self.me;
        match work {
            Some(disputes::Work::Claim {
                claim,
                run,
                corrupt,
                reply,
            }) => {
                let id = claim.id(&me);
                let balance = self.disputes.court.bank().balance(&me).unwrap_or(0);
                if balance < claim.bond {
                    warn!(target: "court", balance, bond = claim.bond, "no claim: the balance cannot cover its bond");
                    if let Some(reply) = reply {
                        let why = format!(
                            "this node's balance ({balance}) cannot cover the bond ({})",
                            claim.bond
                        );
                        let _ = reply.send(crate::admin::error(409, &why));
                    }
                    return;
                }
                let m = Message::Claim(claim.clone());
                let sealed = self.publish_sealed(&m).await;
                let published = sealed.is_some();
                if let Some(sealed) = sealed {
                    self.disputes.claimed(id, run, corrupt);
                    self.take_own(&m, &sealed).await;
                    info!(target: "court", claim = %short(&id), corrupted = ?corrupt, "claim published");
                }
                if let Some(reply) = reply {
                    let answer = match (published, self.disputes.court.claims().get(&id)) {
                        (true, Some(_)) => (
                            201,
                            serde_json::json!({
                                "claim": hex::encode(id),
                                "model": hex::encode(claim.model_id),
                                "output": claim.output,
                                "cuts": claim.cuts,
                                "trace_root": hex::encode(claim.trace_root),
                                "bond": claim.bond,
                            }),
                        ),
                        (true, None) => crate::admin::error(409, "published, but this node's court refused it (its balance, or its bounds): see /status"),
                        (false, _) => crate::admin::error(503, "no peer took the claim: try again"),
                    };
                    let _ = reply.send(answer);
                }
            }
            Some(disputes::Work::Refused { reply, why }) => {
                let _ = reply.send(crate::admin::error(400, &why));
            }
            Some(disputes::Work::Dispute { open, run, reply }) => {
                self.open_dispute(open, run, reply).await
            }
            None => {}
        }
    }

    /// A request from the admin endpoint.
    async fn on_admin(&mut self, req: crate::admin::AdminRequest) {
        use crate::admin::AdminRequest;
        match req {
            AdminRequest::Request {
                model,
                segment,
                input,
                deadline_ms,
                reply,
            } => {
                let answer = self.requested(&model, segment, input, deadline_ms).await;
                let _ = reply.send(answer);
            }
            AdminRequest::GetRequest { id, reply } => {
                let answer = match self.challenger.as_ref() {
                    Some(c) => c.view(&id),
                    None => crate::admin::error(404, "this node runs no challenger role"),
                };
                let _ = reply.send(answer);
            }
            AdminRequest::Claim {
                model,
                input,
                reply,
            } => {
                if !self.cfg.roles.contains(&Role::Inference) {
                    let why = "this node does not run the inference role (--role inference)";
                    let _ = reply.send(crate::admin::error(409, why));
                    return;
                }
                if let Some(job) = self.disputes.requested_claim(&model, input, reply) {
                    self.run_job(job);
                }
            }
            AdminRequest::Dispute { claim, reply } => {
                if !self.cfg.roles.contains(&Role::Challenger) {
                    let why = "this node does not run the challenger role (--role challenger)";
                    let _ = reply.send(crate::admin::error(409, why));
                    return;
                }
                if let Some(job) = self.disputes.requested_dispute(claim, reply) {
                    self.run_job(job);
                }
            }
            AdminRequest::GetClaim { id, reply } => {
                let _ = reply.send(self.disputes.claim_view(&id));
            }
            AdminRequest::GetDispute { id, reply } => {
                let _ = reply.send(self.disputes.dispute_view(&id));
            }
        }
    }

    /// Publishes our dispute of a claim and stands behind our run of it.
    async fn open_dispute(
        &mut self,
        open: provnet_wire::DisputeOpen,
        run: disputes::Run,
        reply: Option<crate::admin::Reply>,
    ) {
        use serde_json::json;
        let me = self.me;
        let balance = self.disputes.court.bank().balance(&me).unwrap_or(0);
        let answer = if balance < open.bond {
            warn!(target: "court", balance, bond = open.bond, "no dispute: the balance cannot cover its bond");
            let why = format!(
                "this node's balance ({balance}) cannot cover the bond ({})",
                open.bond
            );
            crate::admin::error(409, &why)
        } else if let Some(sealed) = self
            .publish_sealed(&Message::DisputeOpen(open.clone()))
            .await
        {
            let id = open.id(&me);
            // The run first: the court may ask for a reveal at once.
            self.disputes.disputed(open.claim_id, run);
            self.take_own(&Message::DisputeOpen(open), &sealed).await;
            match self.disputes.court.disputes().get(&id) {
                Some(d) => (
                    201,
                    json!({"dispute": hex::encode(id), "claim": hex::encode(d.claim_id)}),
                ),
                None => crate::admin::error(
                    409,
                    "published, but this node's court refused it: see /status",
                ),
            }
        } else {
            crate::admin::error(503, "no peer took the dispute: try again")
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }

    /// What our disputes ask of us, sent now (a side answers as soon as a round opens).
    async fn answer_owed(&mut self) {
        for m in self.disputes.owed(now_ms()) {
            self.publish_dispute(m).await;
        }
    }

    /// Valid proofs of our leaf challenges, from the engine's verdicts: each decides its
    /// dispute here.
    async fn leaf_proofs(&mut self) {
        let proved = self
            .validator
            .as_mut()
            .map(|v| v.engine.take_proved())
            .unwrap_or_default();
        for p in proved {
            let Some(dispute) = p.request else { continue };
            match self
                .disputes
                .court
                .on_proved(&dispute, &p.miner, &p.output, now_ms())
            {
                Ok(actions) => Box::pin(self.court_actions(actions)).await,
                Err(e) => warn!(target: "court", "store: {e}"),
            }
        }
    }

    /// The dispute game's share of a tick: a claim due, what our disputes owe, leaf proofs
    /// verified, and the court's clocks.
    async fn dispute_tick(&mut self) {
        let now = now_ms();
        if let Some(job) = self.disputes.due_claim() {
            self.run_job(job);
        }
        self.answer_owed().await;
        self.leaf_proofs().await;
        match self.disputes.tick(now) {
            Ok(actions) => self.court_actions(actions).await,
            Err(e) => warn!(target: "court", "store: {e}"),
        }
    }

    /// Publishes what the miner role made: a proof (counted), or the self-challenge
    /// adversary's own challenge.
    async fn publish_mined(&mut self, m: Message) {
        let proof = match &m {
            Message::ProofSubmission(p) => Some(p.challenge_id),
            _ => None,
        };
        if self.publish(m).await {
            if let (Some(id), Some(mr)) = (proof, self.miner.as_mut()) {
                mr.published += 1;
                debug!(target: "miner", challenge = %short(&id), "proof published");
            }
        }
    }

    async fn on_done(&mut self, d: Done) {
        let Some(mr) = self.miner.as_mut() else {
            return;
        };
        for m in mr.on_done(d) {
            self.publish_mined(m).await;
        }
    }

    /// Publishes a challenge this validator opened; one that does not go out is withdrawn.
    async fn publish_issued(&mut self, c: Challenge) {
        let id = c.id(&self.me);
        let (seg, request) = (c.segment, c.request);
        let ok = self.publish(Message::Challenge(c)).await;
        let Some(v) = self.validator.as_mut() else {
            return;
        };
        if ok {
            self.published_challenges += 1;
            match request {
                Some(r) => {
                    info!(target: "validator", challenge = %short(&id), request = %short(&r), segment = seg, "request adopted: challenge published")
                }
                None => {
                    debug!(target: "validator", challenge = %short(&id), segment = seg, "challenge published")
                }
            }
        } else {
            v.engine.withdraw(&id);
        }
    }

    async fn on_tick(&mut self) {
        self.apply_registrations();
        self.register_if_needed().await;
        self.ticks += 1;
        if self.ticks % 4 == 0 {
            self.dispute_tick().await;
        }
        let now = now_ms();
        let me = self.me;
        if let Some(mr) = self.miner.as_mut() {
            for m in mr.tick(&me) {
                self.publish_mined(m).await;
            }
        }
        if let Some(c) = self.challenger.as_mut() {
            if let Some(request) = c.due(self.published_challenges) {
                self.publish_challenge(request).await;
            }
        }
        let issued = self
            .validator
            .as_mut()
            .map(|v| v.engine.issue_due(now_f64()))
            .unwrap_or_default();
        for c in issued {
            self.publish_issued(c).await;
        }
        if let Some(v) = self.validator.as_mut() {
            v.drain();
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

    /// Checks what peers sent of the court's missed messages (each signed by its author)
    /// and has the court apply them.
    fn apply_court_fetched(&mut self, fetched: Fetched) {
        let now = now_ms();
        let mut bad = 0usize;
        let mut msgs = Vec::new();
        for bytes in fetched.envelopes {
            match self.archive_gate.check_archived(&bytes, now) {
                Ok(v) => msgs.push((v.sender, v.message, v.timestamp_ms, bytes.into_vec())),
                Err((reason, why)) => {
                    bad += 1;
                    debug!(target: LOG_TARGET_SYNC, reason = reason.as_str(), "a synced court envelope was refused: {why}");
                }
            }
        }
        match self.disputes.apply_synced(msgs) {
            Ok(r) => info!(
                target: LOG_TARGET_SYNC,
                peers_asked = fetched.peers_asked,
                peers_answered = fetched.peers_answered,
                applied = r.applied,
                duplicate = r.duplicate,
                refused = ?r.refused,
                bad_envelopes = bad,
                "caught up on the court"
            ),
            Err(e) => warn!(target: "court", "store: {e}"),
        }
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

    /// A proof request from the admin endpoint: checked, published, followed.
    async fn requested(
        &mut self,
        model: &str,
        segment: u32,
        input: Vec<i64>,
        deadline_ms: Option<u64>,
    ) -> (u16, serde_json::Value) {
        use crate::admin::error;
        let Some(c) = self.challenger.as_ref() else {
            return error(
                409,
                "this node does not run the challenger role (--role challenger)",
            );
        };
        let found = self
            .cfg
            .genesis
            .models
            .iter()
            .find(|m| m.name == model || m.model_id == model.to_lowercase());
        let Some(model_id) = found.and_then(|m| hex32("model id", &m.model_id).ok()) else {
            return error(404, &format!("no model {model:?} in the genesis"));
        };
        let ch = match c.requested(&model_id, segment, input, deadline_ms) {
            Ok(ch) => ch,
            Err(why) => return error(400, &why),
        };
        let deadline = ch.deadline_ms;
        match self.publish_challenge(ch).await {
            Some(id) => (
                201,
                serde_json::json!({"request": hex::encode(id), "deadline_ms": deadline}),
            ),
            None => error(503, "no peer took the request: try again"),
        }
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
            info!(target: "challenger", request = %short(&id), segment = seg, "request published");
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
                let mut st = v
                    .engine
                    .status(&self.ledger, v.queue.waiting(), v.queue.pool().batches())
                    .map_err(log)
                    .ok()?;
                let g = self.registrar.graph();
                for r in &mut st.rankings {
                    r.uid = crate::identity::hex32("miner", &r.miner)
                        .ok()
                        .and_then(|k| g.uid(&k));
                }
                Some(st)
            }),
            challenger: self.challenger.as_ref().map(|c| c.status()),
            ledger: self.ledger.status(16).map_err(log).ok().map(|mut l| {
                let g = self.registrar.graph();
                l.registered_miners = g.len() as u32;
                l.max_miners = g.params.max_miners;
                l.registrations_refused = self.registrar.refused().clone();
                l.registrations_pending = g.pending() as u32;
                l
            }),
            court: self.disputes.status(),
            log: crate::logring::LogRing::global().recent(LOG_LINES),
            ceremony: None,
        }
    }

    /// Publishes a status snapshot to the admin endpoint and writes it to `status.json`.
    /// The file is written on a blocking thread, never on this task; a write still going
    /// when the next is due makes that one skip (`wait` waits for it: at shutdown).
    async fn write_status(&mut self, wait: bool) {
        let s = self.snapshot().await;
        self.cfg.status_tx.send_replace(s.clone());
        if self.status_write.as_ref().is_some_and(|w| !w.is_finished()) && !wait {
            return;
        }
        if let Some(previous) = self.status_write.take() {
            let _ = previous.await;
        }
        let path = self.cfg.status_file.clone();
        let write = tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("json.tmp");
            let written = serde_json::to_vec_pretty(&s)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                warn!(target: "node", path = %path.display(), "writing status: {e}");
            }
        });
        if wait {
            let _ = write.await;
        } else {
            self.status_write = Some(write);
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
                "inference" => Role::Inference,
                other => bail!("unknown role {other:?} (challenger, miner, validator, inference)"),
            };
            roles.push(r);
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}
