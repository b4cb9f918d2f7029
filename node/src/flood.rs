//! `provnet flood` (hidden; for load tests on a loopback devnet): joins a network and, every
//! second, publishes `--rate` challenges and `--rate` proofs, each signed by a key of its own
//! that nothing admits or registered, so every one should die at the first hop. The swarm
//! itself takes a fresh key every few seconds, as an attacker whose peer gets graylisted
//! would. Prints what it sent when it stops.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use clap::Args;
use provnet_p2p::Multiaddr;
use provnet_wire::{
    unix_ms, Challenge, Envelope, Message, Network, ProofSubmission, ProofSystem, Topic,
};
use rand::RngCore;

use crate::genesis::Genesis;
use crate::run::NetArgs;

#[derive(Args, Debug)]
pub struct FloodArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Junk challenges per second, and as many junk proofs.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to flood for.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds before the swarm takes a fresh key (a new peer).
    #[arg(long, default_value_t = 5)]
    pub rotate_secs: u64,
}

pub fn run(args: FloodArgs) -> Result<ExitCode> {
    let Some(path) = &args.net.genesis else {
        bail!("--genesis is required: junk must look like this network's to reach its gate");
    };
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    let g = Genesis::load(path)?;
    let net_id = Network::with_genesis(g.netuid, &g.hash());
    let model = crate::identity::hex32("model id", &g.models[0].model_id)?;
    let tmp = std::env::temp_dir().join(format!("provnet-flood-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sent = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(args.duration);
        let every = Duration::from_secs_f64(1.0 / args.rate);
        let mut sent = (0u64, 0u64);
        while Instant::now() < end {
            let mut cfg = args.net.config(&tmp)?;
            cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().expect("valid")];
            cfg.ready_file = None;
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let (net, task) = provnet_p2p::spawn(key, cfg).await?;
            let rotate = Instant::now() + Duration::from_secs(args.rotate_secs.max(1));
            let mut tick = tokio::time::interval(every);
            while Instant::now() < rotate.min(end) {
                tick.tick().await;
                let now = unix_ms(SystemTime::now());
                let (c, p) = junk(net_id, model, now);
                if net.publish_raw(Topic::Challenge, c).await.is_ok() {
                    sent.0 += 1;
                }
                if net.publish_raw(Topic::Proof, p).await.is_ok() {
                    sent.1 += 1;
                }
            }
            net.shutdown().await;
            let _ = task.await;
        }
        anyhow::Ok(sent)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    let (challenges, proofs) = sent?;
    println!(
        "{}",
        serde_json::json!({ "challenges": challenges, "proofs": proofs })
    );
    Ok(ExitCode::SUCCESS)
}

/// A challenge and a proof, each sealed by a fresh key.
fn junk(net: Network, model: [u8; 32], now: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = rand::rngs::OsRng;
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let seal = |m: Message| {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let payload = m.encode().expect("plain data encodes");
        Envelope::seal(&key, net, m.kind(), now, 1, payload)
            .encode()
            .expect("plain data encodes")
    };
    let challenge = seal(Message::Challenge(Challenge {
        model_id: model,
        segment: 0,
        input: vec![0; 64],
        nonce,
        deadline_ms: now + 3_000,
        request: None,
    }));
    let proof = seal(Message::ProofSubmission(ProofSubmission {
        challenge_id: nonce,
        model_id: model,
        segment: 0,
        vk_id: [0; 32],
        system: ProofSystem::Groth16Bn254,
        output: vec![0; 32],
        proof: vec![0; 128],
    }));
    (challenge, proof)
}
