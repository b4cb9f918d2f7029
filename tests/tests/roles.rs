//! The roles end to end, as separate `provnet run` processes on loopback: a challenger,
//! validators and miners (honest and adversarial) on a devnet genesis; a validator killed
//! with SIGKILL and restarted; garbage thrown at a validator and a miner.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use provnet_tests::{first_addr, wait_until, Node, Subnet};
use provnet_validator::{Outcome, Store};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// The adversary test's epochs: long enough that a loaded 2-core machine still finalizes
/// several challenges inside each one.
const EPOCH_SECS: u64 = 8;

/// The subnets in this file run one at a time: each is a dozen processes proving on what
/// may be two cores, and three of them at once starve each other's epochs.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key(hex_key: &str) -> [u8; 32] {
    hex::decode(hex_key)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn consensus_epoch(n: &Node) -> Option<u64> {
    n.status()?["ledger"]["last_consensus_epoch"].as_u64()
}

fn epoch_now(n: &Node) -> u64 {
    let mut e = None;
    assert!(wait_until(T, || {
        e = n.status().and_then(|s| s["epoch"].as_u64());
        e.is_some()
    }));
    e.expect("checked")
}

fn open_store(data_dir: &Path) -> Store {
    Store::open(&data_dir.join("db")).expect("the store opens after the node exits")
}

fn stop_all(nodes: &mut [&mut Node]) {
    for n in nodes.iter_mut() {
        let status = n.terminate(T);
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            n.name,
            n.log_text()
        );
    }
}

#[test]
fn honest_miners_earn_and_every_adversary_ends_with_weight_zero() {
    let _serial = one_at_a_time();
    // miner-1..3 honest; miner-4 invalid, miner-5 copies, miner-6 replays, miner-7 late.
    let net = Subnet::setup(7, 2, EPOCH_SECS);
    let mut ch = net.start(
        "challenger",
        "challenger",
        None,
        &["--rate", "1", "--deadline-ms", "3000"],
    );
    let boot = first_addr(&ch.ready(T));
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &[]);
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &[]);
    let adversaries = [
        ("miner-4", "invalid"),
        ("miner-5", "copy"),
        ("miner-6", "replay"),
        ("miner-7", "late"),
    ];
    let mut miners: Vec<Node> = (1..=3)
        .map(|i| {
            net.start(
                &format!("miner-{i}"),
                "miner",
                Some(&boot),
                &["--threads", "1"],
            )
        })
        .collect();
    for (name, how) in adversaries {
        miners.push(net.start(
            name,
            "miner",
            Some(&boot),
            &["--threads", "1", "--adversary", how],
        ));
    }
    for n in [&mut v1, &mut v2].into_iter().chain(miners.iter_mut()) {
        n.ready(T);
    }
    // Everything is up during epoch `e0`; epochs e0 + 1 and e0 + 2 run whole.
    let e0 = epoch_now(&v1);
    let target = e0 + 2;
    let done = wait_until(Duration::from_secs(120), || {
        consensus_epoch(&v1) >= Some(target) && consensus_epoch(&v2) >= Some(target)
    });
    assert!(
        done,
        "no consensus for epoch {target}:\nv1:\n{}\nv2:\n{}",
        v1.log_text(),
        v2.log_text()
    );
    let mut all: Vec<&mut Node> = vec![&mut ch, &mut v1, &mut v2];
    all.extend(miners.iter_mut());
    stop_all(&mut all);

    let s1 = open_store(&net.node("validator-1").0);
    let s2 = open_store(&net.node("validator-2").0);
    let honest: Vec<[u8; 32]> = (1..=3)
        .map(|i| key(&net.node(&format!("miner-{i}")).1))
        .collect();
    let bad: BTreeMap<&str, [u8; 32]> = adversaries
        .iter()
        .map(|(name, how)| (*how, key(&net.node(name).1)))
        .collect();

    // Weights landed in sled, for every epoch, at both validators: honest miners weighted,
    // every adversary absent (weight 0).
    for (name, s) in [("validator-1", &s1), ("validator-2", &s2)] {
        for epoch in [e0 + 1, e0 + 2] {
            let w = s
                .weights(epoch)
                .expect("store")
                .unwrap_or_else(|| panic!("{name} has no weights for epoch {epoch}"));
            let weighted: BTreeMap<[u8; 32], u16> =
                w.weights.iter().map(|x| (x.miner, x.weight)).collect();
            for m in &honest {
                assert!(
                    weighted.get(m).copied().unwrap_or(0) > 0,
                    "{name}, epoch {epoch}: an honest miner has weight 0: {weighted:?}"
                );
            }
            for (how, m) in &bad {
                assert!(
                    !weighted.contains_key(m),
                    "{name}, epoch {epoch}: the {how} adversary has weight {:?}",
                    weighted.get(m)
                );
            }
        }
    }

    // Both validators reached the same consensus, which pays honest miners only.
    for epoch in [e0 + 1, e0 + 2] {
        let c1 = s1.consensus(epoch).expect("store").expect("consensus");
        let c2 = s2.consensus(epoch).expect("store").expect("consensus");
        assert_eq!(c1, c2, "validators disagree on epoch {epoch}");
        for m in &honest {
            assert!(c1.rewards.miners.get(m).copied().unwrap_or(0) > 0);
            assert!(c1.consensus.get(m).copied().unwrap_or(0.0) > 0.0);
        }
        for (how, m) in &bad {
            assert_eq!(
                c1.rewards.miners.get(m).copied().unwrap_or(0),
                0,
                "the {how} adversary was paid in epoch {epoch}"
            );
        }
        assert_eq!(c1.rewards.total(), 1_000_000_000);
    }

    // Every challenge of the whole epochs got proofs from every honest miner, and both
    // validators verified every one of them.
    let start = (e0 + 1) * EPOCH_SECS * 1_000;
    let end = (e0 + 3) * EPOCH_SECS * 1_000;
    let log1 = s1.challenges().expect("store");
    let in_window: Vec<_> = log1
        .iter()
        .filter(|c| c.received_ms >= start && c.deadline_ms < end)
        .collect();
    // 1/s over 16 s, less the last 3 s whose deadlines fall after the window: about 13,
    // fewer when the machine is loaded. A handful is enough for what follows to mean much.
    assert!(
        in_window.len() >= 4,
        "only {} challenges in two {EPOCH_SECS} s epochs at 1/s",
        in_window.len()
    );
    for c in &in_window {
        let c2 = s2
            .challenge(&c.id)
            .expect("store")
            .expect("validator-2 logged every challenge validator-1 did");
        for log in [*c, &c2] {
            for m in &honest {
                assert!(
                    log.answers
                        .iter()
                        .any(|a| a.miner == *m && matches!(a.outcome, Outcome::Valid { .. })),
                    "challenge {} lacks a valid proof from an honest miner: {:?}",
                    hex::encode(c.id),
                    log.answers
                );
            }
        }
    }

    // Each adversary was caught for what it did.
    let records = s1.miners().expect("store");
    let rec = |how: &str| records.get(&bad[how]).cloned().unwrap_or_default();
    assert!(rec("invalid").invalid > 0, "{:?}", rec("invalid"));
    assert!(
        rec("copy").copied + rec("copy").invalid > 0 && rec("copy").valid == 0,
        "{:?}",
        rec("copy")
    );
    assert!(rec("replay").replayed > 0, "{:?}", rec("replay"));
    assert!(
        rec("late").late > 0 && rec("late").valid == 0,
        "{:?}",
        rec("late")
    );
}

#[test]
fn a_validator_killed_mid_epoch_keeps_its_state_and_catches_up() {
    // Down long enough to miss a whole epoch's commit and reveal windows: it must fetch
    // them from peers on restart to reach the same consensus as the validator that stayed.
    let _serial = one_at_a_time();
    let net = Subnet::setup(2, 2, 4);
    let mut ch = net.start("challenger", "challenger", None, &["--rate", "2"]);
    let boot = first_addr(&ch.ready(T));
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &[]);
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &[]);
    let mut m1 = net.start("miner-1", "miner", Some(&boot), &["--threads", "1"]);
    let mut m2 = net.start("miner-2", "miner", Some(&boot), &["--threads", "1"]);
    for n in [&mut v1, &mut v2, &mut m1, &mut m2] {
        n.ready(T);
    }
    // Wait until validator-2 has paid miners at least once, so there is state to lose.
    let miners_paid = |n: &Node| -> u64 {
        n.status().map_or(0, |s| {
            s["ledger"]["miner_totals"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || miners_paid(&v2) > 0),
        "validator-2 never paid a miner:\n{}",
        v2.log_text()
    );
    // Mid-epoch: a quarter to half-way through.
    assert!(wait_until(T, || {
        let t = now_ms() % 4_000;
        (1_000..1_800).contains(&t)
    }));
    let killed_in = now_ms() / 4_000;
    v2.kill9();

    let (dir2, _) = net.node("validator-2");
    let (history, consensus, totals, scores, challenges, miners) = {
        let s = open_store(&dir2);
        let epochs = s.consensus_epochs().expect("store");
        let consensus: Vec<_> = epochs
            .iter()
            .map(|e| (*e, s.consensus(*e).expect("store")))
            .collect();
        (
            s.weights_history().expect("store"),
            consensus,
            s.totals().expect("store"),
            s.scores().expect("store"),
            s.challenge_count(),
            s.miners().expect("store"),
        )
    };
    assert!(!history.is_empty() && !consensus.is_empty() && challenges > 0);
    assert!(totals.miners.values().sum::<u64>() > 0, "{totals:?}");

    // Stay down until validator-1 has run consensus for the epoch of the kill: validator-2
    // then missed that epoch's commits and reveals.
    assert!(
        wait_until(T, || consensus_epoch(&v1) >= Some(killed_in)),
        "validator-1 ran no consensus for epoch {killed_in}:\n{}",
        v1.log_text()
    );
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &[]);
    v2.ready(T);
    let restarted_in = epoch_now(&v2);
    let target = restarted_in + 2;
    assert!(
        wait_until(Duration::from_secs(90), || {
            consensus_epoch(&v1) >= Some(target) && consensus_epoch(&v2) >= Some(target)
        }),
        "validator-2 did not catch up:\n{}",
        v2.log_text()
    );
    stop_all(&mut [&mut ch, &mut v1, &mut v2, &mut m1, &mut m2]);

    let s2 = open_store(&dir2);
    let s1 = open_store(&net.node("validator-1").0);
    // Nothing recorded before the kill was lost.
    let after = s2.weights_history().expect("store");
    assert_eq!(
        &after[..history.len()],
        &history[..],
        "weights history changed"
    );
    for (e, c) in &consensus {
        assert_eq!(
            &s2.consensus(*e).expect("store"),
            c,
            "consensus {e} changed"
        );
    }
    let totals_after = s2.totals().expect("store");
    assert!(totals_after.owner > totals.owner);
    for (m, v) in &totals.miners {
        assert!(totals_after.miners.get(m).copied().unwrap_or(0) >= *v);
    }
    assert!(s2.challenge_count() > challenges);
    let scores_after = s2.scores().expect("store");
    for m in scores.ema.keys() {
        assert!(scores_after.ema.contains_key(m), "a miner's score was lost");
    }
    for (m, r) in &miners {
        let now = s2.miner(m).expect("store");
        assert!(now.valid >= r.valid, "proof counters went back");
    }
    // It caught up: weights for the epochs after the restart, and the same consensus as
    // the validator that never stopped, for the epochs it was down through too.
    assert!(s2.weights(restarted_in).expect("store").is_some());
    let log = v2.log_text();
    assert!(
        log.contains("caught up: consensus goes on"),
        "validator-2 did not catch up from peers:\n{log}"
    );
    let unallocated = s1
        .consensus(killed_in)
        .expect("store")
        .expect("ran")
        .rewards
        .unallocated;
    assert!(
        unallocated < 1_000_000_000,
        "validator-1 paid nothing for epoch {killed_in}, so agreeing on it shows nothing"
    );
    for e in killed_in - 1..=restarted_in + 2 {
        assert_eq!(
            s1.consensus(e).expect("store"),
            s2.consensus(e).expect("store"),
            "validators disagree on epoch {e} after the restart"
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[test]
fn garbage_unknown_models_and_unknown_challenges_are_refused_and_counted() {
    let _serial = one_at_a_time();
    use provnet_p2p::NetworkConfig;
    use provnet_wire::{Challenge, Message, ProofSubmission, ProofSystem, Topic};

    let net = Subnet::setup(1, 1, 4);
    let mut v1 = net.start("validator-1", "validator", None, &[]);
    let ready = v1.ready(T);
    let boot = first_addr(&ready);
    let mut m1 = net.start("miner-1", "miner", Some(&boot), &["--threads", "1"]);
    m1.ready(T);

    // `--backend auto` (the default) says in the log where it proves; `--backend cuda`
    // without a usable GPU refuses to start, saying why.
    let gpu = provnet_kernels::gpu::select(provnet_kernels::gpu::BackendChoice::Cuda).is_ok();
    let said = if gpu {
        "proving on the GPU"
    } else {
        "proving on the CPU"
    };
    assert!(
        wait_until(T, || m1.log_text().contains(said)),
        "miner-1 never said '{said}':\n{}",
        m1.log_text()
    );
    if !gpu {
        let genesis = net.genesis.to_str().expect("utf-8");
        let mut m2 = Node::start(
            "miner-cuda",
            &[
                "run",
                "--genesis",
                genesis,
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--role",
                "miner",
                "--bootstrap",
                &boot,
                "--backend",
                "cuda",
            ],
        );
        let exit = m2.wait_exit(T).expect("miner-2 exits");
        assert!(!exit.success(), "a cuda miner without a GPU must not run");
        assert!(
            m2.log_text().contains("--backend cuda"),
            "{}",
            m2.log_text()
        );
        assert!(
            m2.log_text().contains("no CUDA driver"),
            "{}",
            m2.log_text()
        );
    }

    let model_dir = net.dir.path().join("models").join("digits_mlp");
    let model = provnet_kernels_model(&model_dir);
    let netuid = ready["netuid"].as_u64().expect("netuid") as u16;
    let genesis: [u8; 8] = hex::decode(ready["genesis"].as_str().expect("genesis"))
        .expect("hex")
        .try_into()
        .expect("8 bytes");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let mut cfg = NetworkConfig::loopback(netuid);
        cfg.genesis = genesis;
        cfg.bootstrap = vec![boot.parse().expect("multiaddr")];
        let (att, task) = provnet_p2p::spawn(key, cfg).await.expect("attacker starts");
        let topic = Topic::Challenge.as_str().to_string();
        let meshed = async {
            loop {
                let peers = att.peers().await.unwrap_or_default();
                if peers.iter().filter(|p| p.topics.contains(&topic)).count() >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(T, meshed)
            .await
            .expect("attacker meshed");
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let deadline = now_ms() + 5_000;
        let seg = &model.1[0];
        let good = Challenge {
            model_id: model.0,
            segment: 0,
            input: vec![seg.0; seg.1],
            nonce: [7; 32],
            deadline_ms: deadline,
        };
        att.publish_raw(Topic::Challenge, b"\xa1garbage".to_vec())
            .await
            .expect("raw publish");
        att.publish(Message::Challenge(Challenge {
            model_id: [0xab; 32],
            ..good.clone()
        }))
        .await
        .expect("unknown model");
        att.publish(Message::Challenge(Challenge {
            input: vec![0; 3],
            nonce: [8; 32],
            ..good.clone()
        }))
        .await
        .expect("wrong input length");
        att.publish(Message::ProofSubmission(ProofSubmission {
            challenge_id: [0xcd; 32],
            model_id: model.0,
            segment: 0,
            vk_id: [0; 32],
            system: ProofSystem::Groth16Bn254,
            output: vec![0; 10],
            proof: vec![0; 128],
        }))
        .await
        .expect("proof for an unknown challenge");
        // And after all that, a good challenge still gets proved and verified.
        att.publish(Message::Challenge(good))
            .await
            .expect("good challenge");
        tokio::time::sleep(Duration::from_millis(200)).await;
        att.shutdown().await;
        let _ = task.await;
    });

    let counted = |n: &Node, path: &[&str]| -> u64 {
        let mut v: Value = n.status().unwrap_or_default();
        for p in path {
            v = v[*p].clone();
        }
        v.as_u64().unwrap_or(0)
    };
    let ok = wait_until(T, || {
        counted(&v1, &["validator", "refused", "unknown_model"]) >= 1
            && counted(&v1, &["validator", "refused", "bad_input"]) >= 1
            && counted(&v1, &["validator", "refused", "unknown_challenge"]) >= 1
            && counted(&v1, &["gossip", "received", "rejected", "malformed"]) >= 1
            && counted(&m1, &["miner", "refused", "unknown_model"]) >= 1
            && counted(&m1, &["miner", "refused", "bad_input"]) >= 1
            && counted(&m1, &["miner", "proved"]) >= 1
            && counted(&v1, &["validator", "verified"]) >= 1
    });
    assert!(
        ok,
        "not every bad message was counted, or the good one was not served:\nvalidator: {}\nminer: {}",
        v1.status().unwrap_or_default(),
        m1.status().unwrap_or_default()
    );
    let rankings = v1.status().expect("status")["validator"]["rankings"].clone();
    assert_eq!(rankings[0]["valid"], 1, "{rankings}");

    // The one-shot challenge command: publishes, and sees the miner's proof come back.
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/digits_mlp_input.json");
    let (ok, out, err) = provnet_tests::provnet(&[
        "challenge",
        "--genesis",
        net.genesis.to_str().expect("utf-8"),
        "--bootstrap",
        &boot,
        "--model",
        "digits_mlp",
        "--segment",
        "0",
        "--input",
        input.to_str().expect("utf-8"),
        "--deadline-ms",
        "4000",
        "--json",
    ]);
    assert!(ok, "provnet challenge failed:\n{out}\n{err}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        answer["proofs"][0]["miner"],
        net.node("miner-1").1.as_str(),
        "{answer}"
    );
    assert!(
        wait_until(T, || v1.status().unwrap_or_default()["validator"]
            ["rankings"][0]["valid"]
            == 2),
        "the validator did not verify the one-shot challenge's proof"
    );
    stop_all(&mut [&mut v1, &mut m1]);
}

/// The model id and, per segment, (lowest input value, input length).
fn provnet_kernels_model(dir: &Path) -> ([u8; 32], Vec<(i64, usize)>) {
    let (ok, out, err) = provnet_tests::provnet(&["model", "show", dir.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("model show prints JSON");
    let id = key(v["model_id"].as_str().expect("model_id"));
    let segs = v["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            let n: usize = s["input_shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .product();
            (0, n)
        })
        .collect();
    (id, segs)
}
