//! `provnet challenge`: join a network as an admitted challenger, publish one proof request
//! for a segment of a genesis model on a given input, and follow the validators that adopt
//! it: each issues a challenge of its own naming the request, and miners answer those. Every
//! proof is verified here, against the genesis verifying key and the adopting challenge
//! (its id, its nonce, the miner), before its output is printed. Exits 0 only when at least
//! one proof verified.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::Model;
use provnet_p2p::{Multiaddr, NetEvent, NetworkHandle};
use provnet_wire::{Message, Topic};
use tracing::info;

use crate::roles::ChallengerRole;

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
    /// Key to sign with: a challenger the genesis admits (nobody else's requests are
    /// forwarded or adopted).
    #[arg(long)]
    pub key: PathBuf,
    /// Seconds to wait for a peer that takes challenges.
    #[arg(long, default_value_t = 30)]
    pub wait_peers: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The model directory with the keys to verify under. Needed when the genesis's
    /// ceremony makes the keys: a node's `<data-dir>/ceremony/<model id>` (default: the
    /// genesis's model path).
    #[arg(long)]
    pub keys: Option<PathBuf>,
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
    let model_id = model.id();
    let seg = model
        .segment(args.segment as usize)
        .with_context(|| format!("model {}", gm.name))?;
    let input = crate::inputs::segment_input(&model, &gm.path, args.segment as usize, &args.input)?;
    seg.check_input(&input)
        .with_context(|| format!("{}", args.input.display()))?;
    let key = crate::identity::load(&args.key)?;
    let me = key.verifying_key().to_bytes();
    if !g.challenger_quotas()?.contains_key(&me) {
        bail!(
            "{} ({}) is not an admitted challenger in the genesis: validators would never adopt its request, and peers drop it at the first hop",
            args.key.display(),
            hex::encode(me)
        );
    }
    let validators = g.validator_keys()?;
    let keys_dir = match (&args.keys, &gm.ceremony) {
        (Some(dir), _) => dir.clone(),
        (None, None) => gm.path.clone(),
        (None, Some(_)) => bail!(
            "model {}'s keys come from the network's setup ceremony: pass --keys with a node's \
             <data-dir>/ceremony/{}",
            gm.name,
            gm.model_id
        ),
    };
    let verifying = provnet_validator::VerifyingModel::load(&keys_dir)
        .with_context(|| format!("loading {}", keys_dir.display()))?;
    if verifying.model.id() != model_id {
        bail!(
            "{} holds model {}, not {}",
            keys_dir.display(),
            hex::encode(verifying.model.id()),
            gm.model_id
        );
    }
    // Removed when it goes out of scope, whatever happens.
    let tmp = tempfile::Builder::new()
        .prefix("provnet-challenge-")
        .tempdir()?;
    let mut cfg = args.net.config(tmp.path())?;
    if args.net.listen.is_empty() {
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().expect("valid")];
    }
    cfg.ready_file = None;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        // The challenger role follows the request: the validators' challenges adopting
        // it, and every proof to those, verified on its own thread.
        let mut follow = ChallengerRole::new(
            vec![Arc::new(model)],
            vec![Arc::new(verifying)],
            validators,
            0.0,
            args.deadline_ms,
        )?;
        let (net, task) = provnet_p2p::spawn(key, cfg).await?;
        net.wait_ready(Duration::from_secs(30)).await?;
        let joined = wait_for_mesh(&net, Duration::from_secs(args.wait_peers)).await;
        if let Err(e) = joined {
            net.shutdown().await;
            return Err(e);
        }
        let c = follow
            .requested(&model_id, args.segment, input, Some(args.deadline_ms))
            .map_err(anyhow::Error::msg)?;
        let id = c.id(&me);
        let mut events = net.subscribe();
        net.publish(Message::Challenge(c.clone())).await?;
        follow.record(id, &c);
        info!(target: "challenger", request = %hex::encode(id), "request published");
        let until = tokio::time::sleep(Duration::from_millis(args.deadline_ms));
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                Some(v) = follow.verdicts.recv() => follow.on_verdict(v),
                ev = events.recv() => match ev {
                    Ok(NetEvent::Message(m)) => match &m.verified.message {
                        Message::Challenge(c) => follow.saw_challenge(&m.verified.sender, c),
                        Message::ProofSubmission(p) => follow.saw_proof(&m.verified.sender, p),
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
        net.shutdown().await;
        let _ = task.await;
        // Proofs that came by the deadline and are still being checked.
        let checked = tokio::time::timeout(Duration::from_secs(10), async {
            while follow.checking(&id) > 0 {
                match follow.verdicts.recv().await {
                    Some(v) => follow.on_verdict(v),
                    None => break,
                }
            }
        });
        let _ = checked.await;
        Ok(follow.view(&id).1)
    });
    drop(tmp);
    let view = result?;
    let proofs = view["proofs"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let adopted = view["adopted_by"].as_array().map_or(0, Vec::len);
        println!(
            "request {} adopted by {adopted} validator(s)",
            view["request"]
        );
        for p in &proofs {
            let miner = p["miner"].as_str().unwrap_or("?");
            let at = p["ms_after_request"].as_f64().unwrap_or(0.0);
            println!(
                "  valid proof from {} after {at:.1} ms, output {}",
                &miner[..16.min(miner.len())],
                p["output"]
            );
        }
        println!(
            "{} valid proof(s) before the deadline, each verified here against the genesis verifying key; {} did not verify",
            proofs.len(),
            view["invalid"]
        );
    }
    Ok(if proofs.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits until some peer is in our gossip mesh for both challenges and proofs, so the
/// request goes out and the answers come back.
async fn wait_for_mesh(net: &NetworkHandle, limit: Duration) -> Result<()> {
    let (challenge, proof) = (Topic::Challenge.as_str(), Topic::Proof.as_str());
    let waited = Instant::now();
    loop {
        let peers = net.peers().await.unwrap_or_default();
        let meshed = |t: &str| peers.iter().any(|p| p.mesh.iter().any(|m| m == t));
        if meshed(challenge) && meshed(proof) {
            return Ok(());
        }
        if waited.elapsed() > limit {
            bail!(
                "no peer joined our mesh for challenges and proofs within {} s: check --bootstrap",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
