//! Writes one sealed envelope of each kind into a directory, as seeds for the fuzzer:
//! `cargo run -p provnet-wire --example fuzz_seeds -- p2p/wire/fuzz/seeds/gate`.

use ed25519_dalek::SigningKey;
use provnet_wire::ceremony::Accepted;
use provnet_wire::*;

const NOW: u64 = 1_800_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?;
    std::fs::create_dir_all(&dir)?;
    let key = SigningKey::from_bytes(&[3; 32]);
    let messages = [
        Message::Challenge(Challenge {
            model_id: [1; 32],
            segment: 2,
            input: vec![-5, 0, 9000, i64::MAX],
            nonce: [4; 32],
            deadline_ms: NOW + 30_000,
            request: None,
        }),
        Message::ProofSubmission(ProofSubmission {
            challenge_id: [5; 32],
            model_id: [1; 32],
            segment: 2,
            vk_id: [6; 32],
            system: ProofSystem::Groth16Bn254,
            output: vec![1, -2, 3],
            proof: vec![7; message::GROTH16_BN254_PROOF_LEN],
        }),
        Message::WeightsCommit(WeightsCommit {
            epoch: 3,
            commitment: [8; 32],
        }),
        Message::WeightsReveal(WeightsReveal {
            epoch: 3,
            salt: [9; 32],
            seen_commits: vec![provnet_wire::SeenCommit {
                validator: [11; 32],
                commitment: [12; 32],
            }],
            weights: vec![MinerWeight {
                miner: [10; 32],
                weight: 65535,
            }],
        }),
        Message::Announce(Announce {
            roles: vec![Role::Miner, Role::Validator],
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/30777".into()],
            software_version: "0.1.0".into(),
        }),
        Message::Register(Register {
            epoch: 3,
            nonce: 77,
        }),
        Message::Claim(Claim {
            model_id: [1; 32],
            input: vec![0, 5, -1],
            output: vec![2, 2],
            cuts: 9,
            trace_root: [13; 32],
            bond: 100,
            nonce: [14; 16],
        }),
        Message::DisputeOpen(DisputeOpen {
            claim_id: [15; 32],
            trace_root: [16; 32],
            bond: 100,
        }),
        Message::DisputeReveal(DisputeReveal {
            dispute_id: [17; 32],
            round: 1,
            hashes: vec![Digest([18; 32]), Digest([19; 32])],
            proofs: vec![vec![Digest([20; 32])], vec![Digest([21; 32])]],
        }),
        Message::Attestation(Attestation {
            dispute_id: [17; 32],
            verdict: DisputeVerdict::ClaimantWrong,
            segment: Some(4),
            prover: Some(Digest([22; 32])),
        }),
        Message::Ceremony(CeremonyMessage {
            model_id: [23; 32],
            body: CeremonyBody::Vote {
                slot: 1,
                round: 0,
                prev: [24; 32],
                accept: Some(Accepted {
                    step: [25; 32],
                    next: [26; 32],
                }),
            },
        }),
    ];
    for (i, msg) in messages.iter().enumerate() {
        // The fuzz target reads a payload's kind as this index into `Kind::ALL`.
        let k = Kind::ALL.iter().position(|k| *k == msg.kind()).unwrap_or(0) as u8;
        let env = Envelope::seal(
            &key,
            Network::dev(7),
            msg.kind(),
            NOW,
            100 + i as u64,
            msg.encode()?,
        );
        // First byte picks the topic in the fuzz target: topic index << 4 | kind index.
        let topic = Topic::ALL
            .iter()
            .position(|t| *t == Topic::of(msg.kind()))
            .unwrap_or(0);
        let mut seed = vec![(topic as u8) << 4 | k];
        seed.extend(env.encode()?);
        std::fs::write(format!("{dir}/seed-{}", msg.kind().as_str()), &seed)?;
        std::fs::write(
            format!("{dir}/envelope-{}", msg.kind().as_str()),
            env.encode()?,
        )?;
        std::fs::write(format!("{dir}/payload-{}", msg.kind().as_str()), {
            let mut p = vec![k];
            p.extend(msg.encode()?);
            p
        })?;
    }
    Ok(())
}
