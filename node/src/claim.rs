//! `provnet claim`: claim one inference as a process of its own, for an inference node
//! that does not run provnet. It joins the network under a genesis account's key, runs the
//! model natively, publishes the claim (with its trace commitment and a bond), and then
//! stands behind it like any inference node: it answers every bisection round and serves
//! the leaf state to the referees, until the claim is final. It prints the claim when it
//! is out and its outcome at the end; it exits 0 when the claim is upheld, 1 when a
//! dispute overturned it.
//!
//! It is an inference node with one claim: the same roles loop (`crate::roles`), told
//! what to claim over the channel the admin endpoint uses. Its court lives in
//! `--data-dir` (a temporary directory when none is given).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_p2p::Multiaddr;
use provnet_wire::{NodeStatus, Role};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::admin::AdminRequest;
use crate::genesis::Genesis;
use crate::run::NetArgs;

#[derive(Args, Debug)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// The model: its name in the genesis, or its id (hex).
    #[arg(long)]
    pub model: String,
    /// The model's input: ezkl-style JSON of floats ({"input_data": [[...]]}).
    #[arg(long)]
    pub input: PathBuf,
    /// The claimant's key: a genesis account (its balance backs the bond).
    #[arg(long)]
    pub key: PathBuf,
    /// Where the court's records go (default: a temporary directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds to wait for peers to take the claim.
    #[arg(long, default_value_t = 30)]
    pub wait_peers: u64,
    /// Seconds to wait for the claim to be final, at most.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Print the claim and its outcome as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Test only: the share of claims with one corrupted boundary tensor (`adversary`
    /// builds).
    #[cfg(feature = "adversary")]
    #[arg(long, default_value_t = 0.0, hide = true)]
    pub cheat_rate: f64,
}

pub fn run(args: ClaimArgs) -> Result<ExitCode> {
    let Some(genesis_path) = &args.net.genesis else {
        bail!("--genesis is required: it names the network's models and accounts");
    };
    let g = Genesis::load(genesis_path)?;
    let gm = g
        .models
        .iter()
        .find(|m| m.name == args.model || m.model_id == args.model.to_lowercase())
        .with_context(|| format!("no model {:?} in the genesis", args.model))?;
    let model = provnet_kernels::Model::load(&gm.path)?;
    let input = crate::inputs::segment_input(&model, &gm.path, 0, &args.input)?;
    model
        .segment(0)?
        .check_input(&input)
        .with_context(|| format!("{}", args.input.display()))?;
    let key = crate::identity::load(&args.key)?;
    let me = key.verifying_key().to_bytes();
    if !g.account_balances()?.contains_key(&me) {
        bail!(
            "{} ({}) is not a genesis account: nobody would take its claim, and it has no balance for the bond",
            args.key.display(),
            hex::encode(me)
        );
    }
    // Removed when it goes out of scope, whatever happens (unused with --data-dir).
    let scratch = tempfile::Builder::new()
        .prefix("provnet-claim-")
        .tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut cfg = args.net.config(&data_dir)?;
    if args.net.listen.is_empty() {
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().expect("valid")];
    }
    cfg.ready_file = None;
    cfg.roles = vec![Role::Inference];
    let registered = provnet_wire::SharedKeys::default();
    cfg.admission.miners = Some(registered.clone());
    let (status_tx, _status_rx) = tokio::sync::watch::channel(NodeStatus::default());
    let (admin_tx, admin_rx) = mpsc::channel(8);
    #[cfg(feature = "adversary")]
    let cheat_rate = args.cheat_rate;
    #[cfg(not(feature = "adversary"))]
    let cheat_rate = 0.0;
    let role_cfg = crate::roles::RoleConfig {
        roles: vec![Role::Inference],
        genesis: g.clone(),
        data_dir: data_dir.clone(),
        rate: 0.0,
        deadline_ms: 5_000,
        miner: Default::default(),
        backend: provnet_kernels::gpu::BackendChoice::Cpu,
        adversary: None,
        status_file: data_dir.join("status.json"),
        status_tx,
        registered: Some(registered),
        no_catch_up: false,
        disputes: crate::roles::DisputeConfig {
            cheat_rate,
            ..Default::default()
        },
        admin_rx: Some(admin_rx),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let name = gm.name.clone();
    let result = rt.block_on(async {
        let (net, task) = provnet_p2p::spawn(key, cfg).await?;
        net.wait_ready(Duration::from_secs(30)).await?;
        let roles = crate::roles::Roles::start(role_cfg, net.clone())?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let drive = async {
            let outcome = drive(&admin_tx, &name, input, &args).await;
            let _ = stop_tx.send(());
            outcome
        };
        let (ran, outcome) = tokio::join!(
            roles.run(async {
                let _ = stop_rx.await;
            }),
            drive
        );
        net.shutdown().await;
        let _ = task.await;
        ran?;
        outcome
    });
    drop(scratch);
    let view = result?;
    let state = view["state"].as_str().unwrap_or("?").to_string();
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!("claim {} {state}", view["claim"].as_str().unwrap_or("?"));
        for d in view["disputes"].as_array().into_iter().flatten() {
            println!(
                "  dispute {} by {}: {} at segment {}",
                d["id"].as_str().unwrap_or("?"),
                d["challenger"].as_str().unwrap_or("?"),
                d["final_verdict"].as_str().unwrap_or("no final verdict"),
                d["segment"]
            );
        }
    }
    Ok(match state.as_str() {
        "upheld" => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// One request to the roles loop, and its answer.
async fn call(
    admin: &mpsc::Sender<AdminRequest>,
    make: impl FnOnce(crate::admin::Reply) -> AdminRequest,
) -> Result<(u16, Value)> {
    let stopped = || anyhow::anyhow!("the node stopped");
    let (tx, rx) = oneshot::channel();
    admin.send(make(tx)).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())
}

/// Asks the roles loop for the claim (again while no peer takes it), then follows it until
/// it is final; returns its last view.
async fn drive(
    admin: &mpsc::Sender<AdminRequest>,
    model: &str,
    input: Vec<i64>,
    args: &ClaimArgs,
) -> Result<Value> {
    let started = Instant::now();
    let claim = loop {
        let (code, body) = call(admin, |reply| AdminRequest::Claim {
            model: model.to_string(),
            input: input.clone(),
            reply,
        })
        .await?;
        match code {
            201 => break body,
            503 if started.elapsed() < Duration::from_secs(args.wait_peers) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => bail!(
                "the claim was not made ({code}): {}",
                body["error"].as_str().unwrap_or("?")
            ),
        }
    };
    let id = crate::identity::hex32("claim", claim["claim"].as_str().unwrap_or(""))?;
    info!(target: "court", claim = %hex::encode(id), "claim published: standing behind it until it is final");
    if args.json {
        println!("{}", serde_json::to_string(&claim)?);
    } else {
        println!("claim {} published", hex::encode(id));
    }
    let until = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let (_, view) = call(admin, |reply| AdminRequest::GetClaim { id, reply }).await?;
        if matches!(view["state"].as_str(), Some("upheld" | "overturned")) {
            return Ok(view);
        }
        if Instant::now() > until {
            bail!("the claim was not final within {} s: {view}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
