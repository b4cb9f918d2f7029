//! `provnet challenge`: join a network as an admitted challenger, publish one proof request
//! for a segment of a genesis model on a given input, and follow the validators that adopt
//! it: each issues a challenge of its own naming the request, and miners answer those. Every
//! proof is verified here, against the genesis verifying key and the adopting challenge
//! (its id, its nonce, the miner), before its output is printed. Exits 0 only when at least
//! one proof verified.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::{Model, ModelKeys, ProofContext, ProofFile, SegmentVerifier};
use provnet_p2p::{Multiaddr, NetEvent, NetworkHandle};
use provnet_wire::{unix_ms, Challenge, Message, ProofSubmission, PublicKey, Topic};
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
    let verifier = segment_verifier(&gm.path, &model, args.segment as usize)?;
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
        let joined = wait_for_mesh(&net, Duration::from_secs(args.wait_peers)).await;
        if let Err(e) = joined {
            net.shutdown().await;
            return Err(e);
        }
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let c = Challenge {
            model_id: model.id(),
            segment: args.segment,
            input,
            nonce,
            deadline_ms: unix_ms(SystemTime::now()) + args.deadline_ms,
            request: None,
        };
        let id = c.id(&me);
        let mut events = net.subscribe();
        net.publish(Message::Challenge(c.clone())).await?;
        let sent = Instant::now();
        info!(target: "challenger", request = %hex::encode(id), "request published");
        let mut follow = Follow::new(id, c.input.clone(), &validators);
        let until = tokio::time::sleep(Duration::from_millis(args.deadline_ms));
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                ev = events.recv() => match ev {
                    Ok(NetEvent::Message(m)) => {
                        let at = sent.elapsed().as_secs_f64() * 1e3;
                        follow.on_message(&m.verified.sender, &m.verified.message, at);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
        net.shutdown().await;
        let _ = task.await;
        Ok((id, follow))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    let (id, follow) = result?;
    let proofs = follow.verify(&model, &verifier);
    let valid = proofs.iter().filter(|p| p["valid"] == true).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "request": hex::encode(id),
                "adopted_by": follow.adopted.values().map(|a| hex::encode(a.validator)).collect::<Vec<_>>(),
                "proofs": proofs,
                "valid": valid,
            }))?
        );
    } else {
        println!(
            "request {} adopted by {} validator(s)",
            hex::encode(id),
            follow.adopted.len()
        );
        for p in &proofs {
            let miner = p["miner"].as_str().unwrap_or("?");
            let at = p["ms_after_publish"].as_f64().unwrap_or(0.0);
            match p["valid"].as_bool() {
                Some(true) => println!(
                    "  valid proof from {} after {at:.1} ms, output {}",
                    &miner[..16.min(miner.len())],
                    p["output"]
                ),
                _ => println!(
                    "  INVALID proof from {} after {at:.1} ms: {}",
                    &miner[..16.min(miner.len())],
                    p["error"].as_str().unwrap_or("?")
                ),
            }
        }
        println!(
            "{valid} valid proof(s) of {} before the deadline, each verified here against the genesis verifying key",
            proofs.len()
        );
    }
    Ok(if valid == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The verifier for `segment`. Its key is the genesis's: `Genesis::load` checked the key
/// index against the genesis, and `verifying_key` checks the key file against the index.
fn segment_verifier(
    dir: &std::path::Path,
    model: &Model,
    segment: usize,
) -> Result<SegmentVerifier> {
    let (vk, vk_id) = ModelKeys::open(dir, model)?.verifying_key(segment)?;
    Ok(SegmentVerifier::new(segment, vk, vk_id))
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

/// A validator's challenge adopting our request.
struct Adopted {
    validator: PublicKey,
    nonce: [u8; 32],
}

/// Most adopting challenges followed, and proofs held per request (a Sybil can send
/// any number; honest validators are few).
const MAX_FOLLOWED: usize = 256;
const MAX_PROOFS: usize = 4096;

/// What came back for one request: the validators' challenges that adopt it, and the
/// proofs to those (kept until the challenge they name is known, as gossip may bring a
/// proof first).
struct Follow {
    request: [u8; 32],
    validators: std::collections::BTreeSet<PublicKey>,
    input: Vec<i64>,
    adopted: HashMap<[u8; 32], Adopted>,
    proofs: Vec<(PublicKey, ProofSubmission, f64)>,
}

impl Follow {
    fn new(
        request: [u8; 32],
        input: Vec<i64>,
        validators: &std::collections::BTreeSet<PublicKey>,
    ) -> Follow {
        Follow {
            request,
            validators: validators.clone(),
            input,
            adopted: HashMap::new(),
            proofs: Vec::new(),
        }
    }

    fn on_message(&mut self, sender: &PublicKey, m: &Message, at_ms: f64) {
        match m {
            Message::Challenge(c)
                if c.request == Some(self.request)
                    && c.input == self.input
                    && self.validators.contains(sender)
                    && self.adopted.len() < MAX_FOLLOWED =>
            {
                self.adopted.insert(
                    c.id(sender),
                    Adopted {
                        validator: *sender,
                        nonce: c.nonce,
                    },
                );
            }
            Message::ProofSubmission(p) if self.proofs.len() < MAX_PROOFS => {
                self.proofs.push((*sender, p.clone(), at_ms));
            }
            _ => {}
        }
    }

    /// Every proof to an adopting challenge, verified; one JSON object each.
    fn verify(&self, model: &Model, verifier: &SegmentVerifier) -> Vec<serde_json::Value> {
        self.proofs
            .iter()
            .filter_map(|(miner, p, at)| {
                let a = self.adopted.get(&p.challenge_id)?;
                let ctx = ProofContext {
                    challenge: p.challenge_id,
                    nonce: a.nonce,
                    miner: *miner,
                };
                let checked = ProofFile::from_claim(
                    model,
                    verifier.segment,
                    &p.vk_id,
                    &ctx,
                    &self.input,
                    &p.output,
                    &p.proof,
                )
                .and_then(|f| verifier.verify(model, &f, &ctx));
                Some(json!({
                    "miner": hex::encode(miner),
                    "validator": hex::encode(a.validator),
                    "challenge": hex::encode(p.challenge_id),
                    "ms_after_publish": at,
                    "valid": checked.is_ok(),
                    "error": checked.err().map(|e| e.to_string()),
                    "output": p.output,
                    "proof_bytes": p.proof.len(),
                }))
            })
            .collect()
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("provnet-challenge-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
