//! Envelope throughput per message kind: seal (encode + sign), open (decode + verify +
//! payload decode and checks), and the full path a gossip message takes (seal, then the
//! gate's every check). Criterion prints each as messages per second (elem/s).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use provnet_wire::*;

const NOW: u64 = 1_800_000_000_000;
const NETUID: u16 = 1;

fn samples() -> Vec<(&'static str, Message)> {
    let challenge = |n: usize| {
        Message::Challenge(Challenge {
            model_id: [1; 32],
            segment: 0,
            input: (0..n as i64)
                .map(|v| (v * 7919) % 65_536 - 32_768)
                .collect(),
            nonce: [2; 32],
            deadline_ms: NOW + 30_000,
            request: None,
        })
    };
    vec![
        ("challenge_64", challenge(64)),
        ("challenge_784", challenge(784)),
        (
            "proof_submission",
            Message::ProofSubmission(ProofSubmission {
                challenge_id: [3; 32],
                model_id: [1; 32],
                segment: 0,
                vk_id: [4; 32],
                system: ProofSystem::Groth16Bn254,
                output: (0..10).map(|v| v * 1000 - 5000).collect(),
                proof: vec![0xab; message::GROTH16_BN254_PROOF_LEN],
            }),
        ),
        (
            "weights_commit",
            Message::WeightsCommit(WeightsCommit {
                epoch: 12,
                commitment: [5; 32],
            }),
        ),
        (
            "weights_reveal_256",
            Message::WeightsReveal(WeightsReveal {
                epoch: 12,
                salt: [6; 32],
                seen_commits: (0..16u8)
                    .map(|i| provnet_wire::SeenCommit {
                        validator: [i; 32],
                        commitment: [7; 32],
                    })
                    .collect(),
                weights: (0..256u32)
                    .map(|i| {
                        let mut miner = [0u8; 32];
                        miner[..4].copy_from_slice(&i.to_be_bytes());
                        MinerWeight {
                            miner,
                            weight: (i * 97 % 65_536) as u16,
                        }
                    })
                    .collect(),
            }),
        ),
        (
            "announce",
            Message::Announce(Announce {
                roles: vec![Role::Miner],
                listen_addrs: vec![
                    "/ip4/10.0.0.7/tcp/30777/p2p/12D3KooWSrVaBT8RMUvaby8cKsEhpaU1ujretjdBQikJajh6yHur".into(),
                ],
                software_version: "0.1.0".into(),
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let fast = GateConfig {
        rate_per_sec: 1e12,
        rate_burst: 1e12,
        ..GateConfig::default()
    };
    for (name, msg) in samples() {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        let mut signer = Signer::new(key.clone(), Network::dev(NETUID), NOW);
        let bytes = signer.seal(&msg, NOW).expect("seals");
        eprintln!("{name}: {} bytes on the wire", bytes.len());

        group.bench_function("seal", |b| {
            b.iter(|| signer.seal(&msg, NOW).expect("seals"))
        });
        group.bench_function("open", |b| {
            b.iter(|| {
                let env = Envelope::decode(&bytes).expect("decodes");
                env.verify().expect("verifies");
                env.message().expect("valid payload")
            })
        });
        let topic = Topic::of(msg.kind());
        let mut gate = Gate::new(Network::dev(NETUID), [0; 32], fast.clone());
        group.bench_function("seal_and_gate", |b| {
            b.iter_batched(
                || (),
                |()| {
                    let bytes = signer.seal(&msg, NOW).expect("seals");
                    match gate.check(topic, &bytes, NOW) {
                        Verdict::Accept(v) => v,
                        other => panic!("not accepted: {other:?}"),
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
