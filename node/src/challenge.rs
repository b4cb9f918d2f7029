//! `provnet challenge`: join a network, publish one proof request for a segment of a
//! genesis model on a given input (fresh nonce), and report the proofs that answer it
//! before the deadline. Exits 0 when at least one proof arrived.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::Model;
use provnet_p2p::{Multiaddr, NetEvent};
use provnet_wire::{unix_ms, Challenge, Message, Topic};
use rand::RngCore;
use serde_json::json;
use tracing::info;

use crate::genesis::Genesis;
use crate::run::NetArgs;

#[derive(Args, Debug)]
pub struct ChallengeArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// The model: its name in the genesis, or its id (hex).
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub segment: u32,
    /// The segment's input: ezkl-style JSON of floats ({"input_data": [[...]]}), or the
    /// previous segment's proof file.
    #[arg(long)]
    pub input: PathBuf,
    /// Milliseconds from now to the deadline.
    #[arg(long, default_value_t = 5_000)]
    pub deadline_ms: u64,
    /// Key to sign with (default: a fresh one for this challenge).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Seconds to wait for a peer that takes challenges.
    #[arg(long, default_value_t = 30)]
    pub wait_peers: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ChallengeArgs) -> Result<ExitCode> {
    let Some(genesis_path) = &args.net.genesis else {
        bail!("--genesis is required: it names the network's models");
    };
    let g = Genesis::load(genesis_path)?;
    let gm = g
        .models
        .iter()
        .find(|m| m.name == args.model || m.model_id == args.model.to_lowercase())
        .with_context(|| {
            format!(
                "no model {:?} in the genesis (it has: {})",
                args.model,
                g.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let model = Model::load(&gm.path)?;
    let seg = model
        .segment(args.segment as usize)
        .with_context(|| format!("model {}", gm.name))?;
    let input = crate::inputs::segment_input(&model, args.segment as usize, &args.input)?;
    seg.check_input(&input)
        .with_context(|| format!("{}", args.input.display()))?;
    let key = match &args.key {
        Some(p) => crate::identity::load(p)?,
        None => ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
    };
    let tmp = tempfile_dir()?;
    let mut cfg = args.net.config(&tmp)?;
    if args.net.listen.is_empty() {
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().expect("valid")];
    }
    cfg.ready_file = None;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let (net, task) = provnet_p2p::spawn(key, cfg).await?;
        net.wait_ready(Duration::from_secs(30)).await?;
        let topic = Topic::Challenge.as_str().to_string();
        let waited = Instant::now();
        loop {
            let peers = net.peers().await.unwrap_or_default();
            if peers.iter().any(|p| p.topics.contains(&topic)) {
                break;
            }
            if waited.elapsed() > Duration::from_secs(args.wait_peers) {
                net.shutdown().await;
                bail!(
                    "no peer took challenges within {} s: check --bootstrap",
                    args.wait_peers
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give the mesh a heartbeat to graft us in before publishing.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let c = Challenge {
            model_id: model.id(),
            segment: args.segment,
            input,
            nonce,
            deadline_ms: unix_ms(SystemTime::now()) + args.deadline_ms,
        };
        let id = c.id(&net.public_key());
        let mut events = net.subscribe();
        net.publish(Message::Challenge(c.clone())).await?;
        let sent = Instant::now();
        info!(target: "challenger", challenge = %hex::encode(id), "challenge published");
        let mut proofs = Vec::new();
        let until = tokio::time::sleep(Duration::from_millis(args.deadline_ms));
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                ev = events.recv() => match ev {
                    Ok(NetEvent::Message(m)) => {
                        if let Message::ProofSubmission(p) = &m.verified.message {
                            if p.challenge_id == id {
                                proofs.push(json!({
                                    "miner": hex::encode(m.verified.sender),
                                    "ms_after_publish": sent.elapsed().as_secs_f64() * 1e3,
                                    "output": p.output,
                                    "proof_bytes": p.proof.len(),
                                }));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
        net.shutdown().await;
        let _ = task.await;
        Ok((id, proofs))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    let (id, proofs) = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "challenge": hex::encode(id),
                "proofs": proofs,
            }))?
        );
    } else {
        println!("challenge {}", hex::encode(id));
        for p in &proofs {
            println!(
                "  proof from {} after {:.1} ms, output {}",
                &p["miner"].as_str().unwrap_or("?")[..16],
                p["ms_after_publish"].as_f64().unwrap_or(0.0),
                p["output"]
            );
        }
        println!(
            "{} proof(s) before the deadline (proofs are unverified here: validators judge them)",
            proofs.len()
        );
    }
    Ok(if proofs.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("provnet-challenge-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
