//! `provnet run`: start a node on the gossip network and keep it up until told to stop.
//!
//! Without `--role` a node joins the network, validates and relays every message, announces
//! itself, and logs what it sees. With roles (which need `--genesis`) it also challenges,
//! mines or validates; see [`crate::roles`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_p2p::{Multiaddr, NetEvent, NetworkConfig, NetworkHandle};
use provnet_wire::{Message, Network, NodeStatus};
use tracing::{info, warn};

use crate::genesis::Genesis;
use crate::identity;

/// Network flags shared by every command that joins the network.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Network id: nodes only talk to nodes with the same netuid. Default: the genesis
    /// file's, or 1 without one.
    #[arg(long)]
    pub netuid: Option<u16>,
    /// The network's genesis file (TOML). Nodes only accept messages sealed for the same
    /// genesis; without one, a node is on a development network (genesis id all zeros).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Address to listen on (repeatable). Default: TCP and QUIC on port 30777, all interfaces.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Peer to join through, e.g. /ip4/127.0.0.1/tcp/30777/p2p/12D3... (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,
}

impl NetArgs {
    pub fn config(&self, data_dir: &Path) -> Result<NetworkConfig> {
        let mut netuid = self.netuid.unwrap_or(1);
        let mut genesis_id = [0u8; 8];
        let mut admission = provnet_wire::Admission::default();
        let mut reserved = Vec::new();
        if let Some(path) = &self.genesis {
            let g = Genesis::load(path)?;
            if let Some(n) = self.netuid.filter(|n| *n != g.netuid) {
                bail!(
                    "--netuid {n} disagrees with the genesis file's netuid {}",
                    g.netuid
                );
            }
            netuid = g.netuid;
            genesis_id = Network::with_genesis(netuid, &g.hash()).genesis;
            admission = g.admission()?;
            reserved = g
                .validator_keys()?
                .iter()
                .filter_map(provnet_p2p::identity::peer_id)
                .collect();
            info!(target: "node", genesis = %hex::encode(g.hash()), netuid, "genesis loaded");
        }
        let mut cfg = NetworkConfig {
            netuid,
            genesis: genesis_id,
            bootstrap: self.bootstrap.clone(),
            mdns: self.mdns,
            ready_file: Some(data_dir.join("ready.json")),
            admission,
            reserved_peers: reserved,
            ..NetworkConfig::default()
        };
        if !self.listen.is_empty() {
            cfg.listen = self.listen.clone();
        }
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The node's directory: keys/node.key (made on first start), ready.json once listening.
    #[arg(long, default_value = "provnet-data")]
    pub data_dir: PathBuf,
    /// Use this key file instead of <data-dir>/keys/node.key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
    /// Seconds between status lines in the log (0: none).
    #[arg(long, default_value_t = 30)]
    pub status_every: u64,
    /// Roles to run: challenger, miner, validator (repeatable or comma-separated). Needs
    /// --genesis.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Validator: benchmark challenges issued per second. Challenger: proof requests
    /// published per second.
    #[arg(long, default_value_t = 0.5)]
    pub rate: f64,
    /// Validator and challenger: milliseconds from publishing a challenge (or request) to
    /// its deadline.
    #[arg(long, default_value_t = 5_000)]
    pub deadline_ms: u64,
    /// Miner: threads for proving.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Miner: proofs made at the same time.
    #[arg(long, default_value_t = 1)]
    pub max_concurrent: usize,
    /// Miner: proving backend: auto (the GPU when usable, else the CPU, saying so in the
    /// log), cpu, or cuda (an error when there is no usable GPU).
    #[arg(long, default_value = "auto")]
    pub backend: provnet_kernels::gpu::BackendChoice,
    /// Miner: queued challenges for one segment proved together (one batch per MSM);
    /// 0 picks for the backend: 1 on the CPU, 16 on a GPU.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Miner: challenges waiting to be proved, at most.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The admin endpoint (status JSON for `provnet tui`, Prometheus /metrics). Port 0
    /// picks a free one; the address is written to <data-dir>/admin.json.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "IP:PORT")]
    pub admin_listen: std::net::SocketAddr,
    /// Allow a non-loopback --admin-listen (the endpoint shows keys, peers and queues to
    /// whoever reaches it: put a firewall or an authenticating proxy in front).
    #[arg(long)]
    pub admin_allow_remote: bool,
    /// A file holding the bearer token (16 characters or more) every POST to the admin
    /// endpoint must carry; writes off loopback are refused without one.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Test only: make the miner misbehave (builds with the `adversary` feature).
    #[cfg(feature = "adversary")]
    #[arg(long, value_enum, hide = true)]
    pub adversary: Option<crate::roles::Adversary>,
    /// Inference: claims per second (runs of a genesis model on random inputs, each with
    /// its trace commitment and a bond).
    #[arg(long, default_value_t = 0.2)]
    pub claim_rate: f64,
    /// Challenger: the share of claims heard that it re-executes; a claim whose trace is
    /// not what it gets is disputed.
    #[arg(long, default_value_t = 0.25)]
    pub audit_rate: f64,
    /// Test only: the share of this inference node's claims with one corrupted boundary
    /// tensor (`adversary` builds).
    #[cfg(feature = "adversary")]
    #[arg(long, default_value_t = 0.0, hide = true)]
    pub cheat_rate: f64,
    /// Test only: the share of claims heard that this challenger disputes with a corrupted
    /// trace of its own (`adversary` builds).
    #[cfg(feature = "adversary")]
    #[arg(long, default_value_t = 0.0, hide = true)]
    pub false_dispute_rate: f64,
    /// Test only: skip catching up from peers after downtime (`adversary` builds).
    #[cfg(feature = "adversary")]
    #[arg(long, hide = true)]
    pub no_catch_up: bool,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the node key, or makes one (mode 0600) on first start.
pub fn node_key(data_dir: &Path, key: Option<&Path>) -> Result<ed25519_dalek::SigningKey> {
    if let Some(path) = key {
        return identity::load(path);
    }
    let path = data_dir.join("keys").join("node.key");
    if path.exists() {
        return identity::load(&path);
    }
    let key = identity::generate(&path, false)?;
    info!(target: "node", path = %path.display(), "created a new node key");
    Ok(key)
}

async fn serve(args: RunArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key = node_key(&args.data_dir, args.key.as_deref())?;
    let mut cfg = args.net.config(&args.data_dir)?;
    let roles = crate::roles::parse_roles(&args.roles)?;
    let genesis = match (&args.net.genesis, roles.is_empty()) {
        (Some(path), false) => Some(Genesis::load(path)?),
        (None, false) => {
            bail!("--role needs --genesis: roles need the network's models, validators and epochs")
        }
        _ => None,
    };
    if args.threads == 0 || args.max_concurrent == 0 || args.queue == 0 {
        bail!("--threads, --max-concurrent and --queue must be at least 1");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    cfg.roles = roles.clone();
    // A node with roles keeps the miner registry: its gate drops proofs from keys without
    // a slot, reading the set the roles keep current.
    let registered = (!roles.is_empty()).then(provnet_wire::SharedKeys::default);
    cfg.admission.miners = registered.clone();
    let admin = crate::admin::bind(args.admin_listen, args.admin_allow_remote).await?;
    let admin_addr = admin.local_addr()?;
    let admin_file = args.data_dir.join("admin.json");
    std::fs::write(
        &admin_file,
        serde_json::to_vec(&serde_json::json!({ "admin": admin_addr.to_string() }))?,
    )
    .with_context(|| format!("writing {}", admin_file.display()))?;
    let (status_tx, status_rx) = tokio::sync::watch::channel(NodeStatus::default());
    let token = match &args.admin_token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading --admin-token-file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                bail!("the admin token in {} is under 16 characters", p.display());
            }
            Some(t)
        }
        None => None,
    };
    let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(64);
    let writes = (!roles.is_empty()).then(|| crate::admin::Writes {
        tx: admin_tx,
        token,
        remote: !admin_addr.ip().is_loopback(),
    });
    tokio::spawn(crate::admin::serve(admin, status_rx, writes));
    let _ = std::fs::remove_file(cfg.ready_file.as_ref().expect("set by config"));
    let (net, task) = provnet_p2p::spawn(key, cfg).await?;
    let ready = net.wait_ready(Duration::from_secs(30)).await?;
    info!(
        target: "node",
        peer_id = %ready.peer_id,
        public_key = %ready.public_key,
        netuid = ready.netuid,
        addrs = ?ready.listen_addrs,
        admin = %admin_addr,
        "node ready"
    );
    if let Some(genesis) = genesis {
        // One signal listener for the ceremony and the roles after it: a SIGTERM between
        // the two is not lost.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        #[cfg(feature = "adversary")]
        let misbehaviour = (args.adversary == Some(crate::roles::Adversary::CeremonyGarbage))
            .then_some(crate::ceremony_net::Misbehaviour::Garbage);
        #[cfg(not(feature = "adversary"))]
        let misbehaviour = None;
        // The setup ceremonies the genesis names come first: the roles need their keys.
        // Meanwhile the admin endpoint (and so `provnet tui`) shows the node's peers,
        // gossip and log, where the ceremony's progress lines are.
        let progress = crate::ceremony_net::Progress::default();
        let ceremony =
            crate::ceremony_net::run_all(&net, genesis, &args.data_dir, misbehaviour, &progress);
        tokio::pin!(ceremony);
        let mut snapshot_every = tokio::time::interval(Duration::from_secs(1));
        let genesis = loop {
            tokio::select! {
                g = &mut ceremony => break g,
                _ = stopped(stop_rx.clone()) => {
                    info!(target: "node", "shutting down during the setup ceremony");
                    net.shutdown().await;
                    let _ = task.await;
                    return Ok(());
                }
                _ = snapshot_every.tick() => {
                    let mut status = relay_status(&net).await;
                    status.ceremony = progress.lock().ok().map(|p| p.clone()).filter(|p| !p.is_empty());
                    status_tx.send_replace(status);
                }
            }
        };
        let genesis = match genesis {
            Ok(g) => g,
            Err(e) => {
                net.shutdown().await;
                let _ = task.await;
                return Err(e);
            }
        };
        let role_cfg = crate::roles::RoleConfig {
            roles,
            genesis,
            data_dir: args.data_dir.clone(),
            rate: args.rate,
            deadline_ms: args.deadline_ms,
            miner: provnet_miner::MinerConfig {
                threads: args.threads,
                max_concurrent: args.max_concurrent,
                queue_capacity: args.queue,
                batch: args.batch,
                ..Default::default()
            },
            backend: args.backend,
            #[cfg(feature = "adversary")]
            adversary: args.adversary,
            #[cfg(not(feature = "adversary"))]
            adversary: None,
            #[cfg(feature = "adversary")]
            no_catch_up: args.no_catch_up,
            #[cfg(not(feature = "adversary"))]
            no_catch_up: false,
            disputes: crate::roles::DisputeConfig {
                claim_rate: args.claim_rate,
                audit_rate: args.audit_rate,
                #[cfg(feature = "adversary")]
                cheat_rate: args.cheat_rate,
                #[cfg(not(feature = "adversary"))]
                cheat_rate: 0.0,
                #[cfg(feature = "adversary")]
                false_dispute_rate: args.false_dispute_rate,
                #[cfg(not(feature = "adversary"))]
                false_dispute_rate: 0.0,
            },
            status_file: args.data_dir.join("status.json"),
            status_tx,
            admin_rx: Some(admin_rx),
            registered,
        };
        let started = crate::roles::Roles::start(role_cfg, net.clone());
        let result = match started {
            Ok(r) => r.run(stopped(stop_rx)).await,
            Err(e) => Err(e),
        };
        info!(target: "node", "shutting down");
        net.shutdown().await;
        let _ = task.await;
        return result;
    }
    let mut events = net.subscribe();
    let mut status = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    status.tick().await;
    let mut snapshot_every = tokio::time::interval(Duration::from_secs(1));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = events.recv() => match ev {
                Ok(ev) => log_event(&ev),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(target: "node", missed = n, "event log fell behind");
                }
                Err(_) => break,
            },
            _ = status.tick(), if args.status_every > 0 => log_status(&net).await,
            _ = snapshot_every.tick() => {
                status_tx.send_replace(relay_status(&net).await);
            }
        }
    }
    info!(target: "node", "shutting down");
    net.shutdown().await;
    let _ = task.await;
    Ok(())
}

fn log_event(ev: &NetEvent) {
    match ev {
        NetEvent::Message(m) => {
            let detail = match &m.verified.message {
                Message::Announce(a) => format!(
                    "roles {:?}, version {}",
                    a.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    a.software_version
                ),
                Message::Challenge(c) => format!("model segment {}", c.segment),
                Message::ProofSubmission(p) => format!("segment {}", p.segment),
                Message::WeightsCommit(w) => format!("epoch {}", w.epoch),
                Message::WeightsReveal(w) => format!("epoch {}", w.epoch),
                Message::Register(r) => format!("epoch {}", r.epoch),
                Message::Claim(c) => format!("{} cuts", c.cuts),
                Message::DisputeOpen(d) => format!("claim {}", hex::encode(&d.claim_id[..8])),
                Message::DisputeReveal(r) => format!("round {}", r.round),
                Message::Attestation(a) => a.verdict.as_str().to_string(),
                Message::Ceremony(c) => format!("model {}", hex::encode(&c.model_id[..8])),
            };
            info!(
                target: "node::gossip",
                from = %m.from,
                via = %m.via,
                kind = m.verified.message.kind().as_str(),
                %detail,
                "received"
            );
        }
        NetEvent::PeerConnected(_) | NetEvent::PeerDisconnected(_) => {}
    }
}

/// The status of a node without roles: its gossip layer, peers and log.
async fn relay_status(net: &NetworkHandle) -> NodeStatus {
    let gossip = net.status().await.unwrap_or_default();
    NodeStatus {
        at_ms: provnet_wire::unix_ms(std::time::SystemTime::now()),
        software_version: env!("CARGO_PKG_VERSION").into(),
        peer_id: net.peer_id().to_string(),
        netuid: gossip.netuid,
        peers: net.peers().await.unwrap_or_default(),
        gossip,
        log: crate::logring::LogRing::global().recent(crate::roles::LOG_LINES),
        ..Default::default()
    }
}

async fn log_status(net: &NetworkHandle) {
    if let Ok(s) = net.status().await {
        info!(
            target: "node",
            peers = s.connected_peers,
            accepted = s.received.accepted,
            rejected = s.received.total_rejected(),
            published = s.published,
            "status"
        );
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
