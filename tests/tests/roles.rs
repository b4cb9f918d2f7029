//! The roles end to end, as separate `provnet run` processes on loopback: validators
//! issuing challenges, an admitted challenger whose requests they adopt, and miners (honest
//! and adversarial, a self-challenger among them) on a devnet genesis; a validator killed
//! with SIGKILL and restarted; garbage and a flood of unadmitted challenges thrown at a
//! validator and a miner.

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
    // miner-1..3 honest; miner-4 invalid, miner-5 copies, miner-6 replays, miner-7 late;
    // miner-8 challenges itself (and is otherwise honest).
    let net = Subnet::setup(8, 2, EPOCH_SECS);
    let mut ch = net.start(
        "challenger",
        "challenger",
        None,
        &["--rate", "0.25", "--deadline-ms", "3000"],
    );
    let boot = first_addr(&ch.ready(T));
    let issue = ["--rate", "0.75", "--deadline-ms", "3000"];
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &issue);
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &issue);
    let adversaries = [
        ("miner-4", "invalid"),
        ("miner-5", "copy"),
        ("miner-6", "replay"),
        ("miner-7", "late"),
    ];
    let self_challenger = "miner-8";
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
    for (name, how) in adversaries
        .iter()
        .chain([&(self_challenger, "self-challenge")])
    {
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
    // The challenger's requests were adopted (each validator publishes its own challenge
    // for each), and the self-challenger's challenges were refused where they entered.
    let status = |n: &Node, path: &[&str]| -> u64 {
        let mut v: Value = n.status().unwrap_or_default();
        for p in path {
            v = v[*p].clone();
        }
        v.as_u64().unwrap_or(0)
    };
    let adopted = ch.status().unwrap_or_default()["challenger"]["recent"]
        .as_array()
        .map_or(0, |r| {
            r.iter().filter(|c| c["proofs"].as_u64() > Some(0)).count()
        });
    assert!(
        adopted > 0,
        "no request of the challenger's got proofs: {}",
        ch.log_text()
    );
    let unadmitted: u64 = [&v1, &v2]
        .into_iter()
        .chain(miners.iter())
        .map(|n| status(n, &["gossip", "received", "rejected", "unadmitted"]))
        .sum();
    assert!(
        unadmitted > 0,
        "nobody refused the self-challenger's challenges"
    );
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

    // The self-challenger earned no more than an equal honest miner, at both validators
    // and in consensus: its challenges died at the first hop, and its proofs to them were
    // refused as not the validators' own.
    let sc = key(&net.node(self_challenger).1);
    for epoch in [e0 + 1, e0 + 2] {
        let c = s1.consensus(epoch).expect("store").expect("consensus");
        let best_honest = honest
            .iter()
            .map(|m| c.rewards.miners.get(m).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let got = c.rewards.miners.get(&sc).copied().unwrap_or(0);
        assert!(
            got <= best_honest,
            "epoch {epoch}: the self-challenger was paid {got}, the best honest miner {best_honest}"
        );
    }

    // Every challenge a validator issued in the whole epochs got proofs from every honest
    // miner, and that validator verified every one of them. Each validator scores only its
    // own challenges.
    let start = (e0 + 1) * EPOCH_SECS * 1_000;
    let end = (e0 + 3) * EPOCH_SECS * 1_000;
    let keys = [
        key(&net.node("validator-1").1),
        key(&net.node("validator-2").1),
    ];
    for (s, me) in [(&s1, keys[0]), (&s2, keys[1])] {
        let log = s.challenges().expect("store");
        let in_window: Vec<_> = log
            .iter()
            .filter(|c| c.received_ms >= start && c.deadline_ms < end)
            .collect();
        // 0.75/s and the adopted requests over 16 s, less the last 3 s whose deadlines
        // fall after the window: about 12, fewer when the machine is loaded. A handful is
        // enough for what follows to mean much.
        assert!(
            in_window.len() >= 4,
            "only {} challenges in two {EPOCH_SECS} s epochs",
            in_window.len()
        );
        for c in &in_window {
            assert_eq!(
                c.challenger, me,
                "a validator scored a challenge it did not issue"
            );
            for m in &honest {
                assert!(
                    c.answers
                        .iter()
                        .any(|a| a.miner == *m && matches!(a.outcome, Outcome::Valid { .. })),
                    "challenge {} lacks a valid proof from an honest miner: {:?}",
                    hex::encode(c.id),
                    c.answers
                );
            }
        }
    }

    // Each adversary was caught for what it did.
    let records = s1.miners().expect("store");
    let rec = |how: &str| records.get(&bad[how]).cloned().unwrap_or_default();
    assert!(rec("invalid").invalid > 0, "{:?}", rec("invalid"));
    // Caught copying (not merely invalid): copies that beat their original here are
    // relabelled once the challenge is scored.
    assert!(
        rec("copy").copied > 0 && rec("copy").valid == 0,
        "{:?}",
        rec("copy")
    );
    // A replayer's kept proof was made for one validator's challenge: that validator
    // recognises the replay, the other sees a proof that does not verify.
    let records2 = s2.miners().expect("store");
    let replayer = |r: &BTreeMap<[u8; 32], provnet_validator::store::MinerRecord>| {
        r.get(&bad["replay"]).cloned().unwrap_or_default()
    };
    let (r1, r2) = (replayer(&records), replayer(&records2));
    assert!(r1.replayed + r2.replayed > 0, "{r1:?} {r2:?}");
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
    let mut ch = net.start("challenger", "challenger", None, &["--rate", "0.2"]);
    let boot = first_addr(&ch.ready(T));
    let issue = ["--rate", "1"];
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &issue);
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &issue);
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
    // The same state, to restart later without the fetch: that run must disagree, or the
    // catch-up below shows nothing.
    let frozen = tempfile::tempdir().expect("temp dir");
    provnet_tests::copy_dir(&dir2, frozen.path());
    for stale in ["ready.json", "status.json"] {
        let _ = std::fs::remove_file(frozen.path().join(stale));
    }

    // Stay down until validator-1 has run consensus for the epoch of the kill: validator-2
    // then missed that epoch's commits and reveals.
    assert!(
        wait_until(T, || consensus_epoch(&v1) >= Some(killed_in)),
        "validator-1 ran no consensus for epoch {killed_in}:\n{}",
        v1.log_text()
    );
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &issue);
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

    // The control: the killed state again, with the fetch switched off, alone. Missing the
    // kill epoch's commits and reveals, it reaches another consensus for that epoch.
    let mut cold = net.start_at(
        "validator-2-no-catch-up",
        frozen.path(),
        "validator",
        None,
        &["--rate", "1", "--no-catch-up"],
    );
    cold.ready(T);
    assert!(
        wait_until(T, || consensus_epoch(&cold) >= Some(killed_in)),
        "the control ran no consensus for epoch {killed_in}:\n{}",
        cold.log_text()
    );
    stop_all(&mut [&mut cold]);
    let log = cold.log_text();
    assert!(
        log.contains("--no-catch-up") && !log.contains("caught up: consensus goes on"),
        "{log}"
    );
    let s3 = open_store(frozen.path());
    assert_ne!(
        s1.consensus(killed_in).expect("store"),
        s3.consensus(killed_in).expect("store"),
        "without the fetch, validator-2 still agreed on epoch {killed_in}: the catch-up test shows nothing"
    );
}

/// Checks `pred` on every tick of a 50 ms clock until it holds; panics, naming `what`, once
/// `T` has passed.
async fn wait_for_async<F, Fut>(what: &str, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let waited = tokio::time::timeout(T, async {
        loop {
            tick.tick().await;
            if pred().await {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out after {T:?} waiting for {what}");
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
    // No benchmark challenges: all the miner proves here is the adopted request.
    let mut v1 = net.start("validator-1", "validator", None, &["--rate", "0"]);
    let ready = v1.ready(T);
    let boot = first_addr(&ready);
    let mut m1 = net.start("miner-1", "miner", Some(&boot), &["--threads", "1"]);
    m1.ready(T);
    // A miner the genesis does not name: it registers itself with proof of work.
    let genesis_path = net.genesis.to_str().expect("utf-8").to_string();
    let mut newcomer = Node::start(
        "newcomer",
        &[
            "run",
            "--genesis",
            &genesis_path,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--role",
            "miner",
            "--status-every",
            "0",
            "--threads",
            "1",
            "--bootstrap",
            &boot,
        ],
    );
    let newcomer_key = newcomer.ready(T)["public_key"]
        .as_str()
        .expect("public key")
        .to_string();

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

    // The admitted challenger's key: its requests are forwarded and adopted.
    let (ch_dir, ch_hex) = net.node("challenger");
    let ch_key_file = ch_dir.join("keys").join("node.key");
    let ch_key = ed25519_dalek::SigningKey::from_bytes(
        &hex::decode(std::fs::read_to_string(&ch_key_file).expect("key").trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    );
    assert_eq!(hex::encode(ch_key.verifying_key().to_bytes()), ch_hex);
    const FLOOD: usize = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let att_peer = rt.block_on(async {
        // Two in-process nodes: the admitted challenger sending requests nobody can adopt,
        // and an attacker with a fresh key (a different peer, so the gossip penalties it
        // earns are its own).
        // Both run the genesis's admission, as any node with the genesis does.
        let admission = provnet_wire::Admission {
            challengers: Some(
                ["validator-1", "challenger"]
                    .iter()
                    .map(|n| key(&net.node(n).1))
                    .collect(),
            ),
            ..Default::default()
        };
        let join = |key: ed25519_dalek::SigningKey| {
            let mut cfg = NetworkConfig::loopback(netuid);
            cfg.genesis = genesis;
            cfg.admission = admission.clone();
            cfg.bootstrap = vec![boot.parse().expect("multiaddr")];
            async move {
                let (h, task) = provnet_p2p::spawn(key, cfg).await.expect("node starts");
                // Wait until validator-1 has it in its mesh for challenges and proofs.
                wait_for_async("the mesh", || async {
                    let peers = h.peers().await.unwrap_or_default();
                    let has =
                        |t: Topic| peers.iter().any(|p| p.mesh.iter().any(|m| m == t.as_str()));
                    has(Topic::Challenge) && has(Topic::Proof)
                })
                .await;
                (h, task)
            }
        };
        let (req, req_task) = join(ch_key).await;
        let (att, task) = join(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)).await;

        let deadline = now_ms() + 5_000;
        let seg = &model.1[0];
        let good = Challenge {
            model_id: model.0,
            segment: 0,
            input: vec![seg.0; seg.1],
            nonce: [7; 32],
            deadline_ms: deadline,
            request: None,
        };
        // Requests the validator cannot adopt (refused by the validator), and a proof from
        // a key with no miner slot (dropped at the gate): the senders' gossip standing
        // untouched.
        req.publish(Message::Challenge(Challenge {
            model_id: [0xab; 32],
            ..good.clone()
        }))
        .await
        .expect("unknown model");
        req.publish(Message::Challenge(Challenge {
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
        .expect("proof from an unregistered key");
        let counted_v1 = |path: &[&str]| -> u64 {
            let mut v: Value = v1.status().unwrap_or_default();
            for p in path {
                v = v[*p].clone();
            }
            v.as_u64().unwrap_or(0)
        };
        // Those land before the garbage below costs us the validator's ear.
        wait_for_async("the proof to reach validator-1", || async {
            counted_v1(&["gossip", "received", "ignored", "unregistered"]) >= 1
        })
        .await;
        // Garbage, then challenges signed by FLOOD fresh keys nobody admitted.
        att.publish_raw(Topic::Challenge, b"\xa1garbage".to_vec())
            .await
            .expect("raw publish");
        let net_id = provnet_wire::Network { netuid, genesis };
        for i in 0..FLOOD {
            let fresh = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let c = Challenge {
                nonce: [(i % 251) as u8; 32],
                ..good.clone()
            };
            let env = provnet_wire::Envelope::seal(
                &fresh,
                net_id,
                provnet_wire::Kind::Challenge,
                now_ms(),
                1,
                Message::Challenge(c).encode().expect("encodes"),
            );
            // A full send queue drops some: the attacker's loss, not the test's.
            let _ = att
                .publish_raw(Topic::Challenge, env.encode().expect("encodes"))
                .await;
        }
        let att_peer = att.peer_id().to_string();
        att.shutdown().await;
        let _ = task.await;
        req.shutdown().await;
        let _ = req_task.await;
        att_peer
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
            && counted(&v1, &["gossip", "received", "ignored", "unregistered"]) >= 1
            && counted(&v1, &["gossip", "received", "rejected", "malformed"]) >= 1
            && counted(&v1, &["gossip", "received", "rejected", "unadmitted"]) >= 1
    });
    assert!(
        ok,
        "not every bad message was counted:\nvalidator: {}",
        v1.status().unwrap_or_default(),
    );
    // The flood stopped at the first hop: each node that refused some refused it from the
    // attacker itself (it dials everyone it learns of), never from a peer that forwarded
    // it; none reached a role; nobody proved anything for a request never adopted.
    for n in [&v1, &m1] {
        let status = n.status().unwrap_or_default();
        let rejections = status["gossip"]["recent_rejections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in rejections.iter().filter(|r| r["reason"] == "unadmitted") {
            assert_eq!(r["peer"], att_peer.as_str(), "{}: forwarded: {r}", n.name);
        }
    }
    // The challenger's two requests reach the miner (an admitted key's are forwarded) and
    // are refused there: miners prove validators' challenges only. None of the flood does.
    assert!(
        counted(&m1, &["miner", "refused", "not_an_issuer"]) <= 2,
        "{}",
        m1.status().unwrap_or_default()
    );
    for path in [
        &["miner", "refused", "unknown_model"][..],
        &["miner", "refused", "bad_input"],
        &["miner", "proved"],
    ] {
        assert_eq!(
            counted(&m1, path),
            0,
            "miner-1 {path:?}: {}",
            m1.status().unwrap_or_default()
        );
    }

    // The one-shot request from the admitted key: validator-1 adopts it, miner-1 proves,
    // and the command verifies the proof itself before printing it (only verified proofs
    // are listed; those that failed are counted).
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/digits_mlp_input.json");
    let challenge_args = |key: &Path| {
        let mut a: Vec<String> = [
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
            "--key",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(key.to_str().expect("utf-8").to_string());
        a
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        provnet_tests::provnet(&refs)
    };
    // First, the newcomer holds a slot in the validator's registry.
    assert!(
        wait_until(T, || v1.status().unwrap_or_default()["ledger"]
            ["registered_miners"]
            == 2),
        "the newcomer never registered:\n{}",
        newcomer.log_text()
    );
    let (ok, out, err) = run(challenge_args(&ch_key_file));
    assert!(ok, "provnet challenge failed:\n{out}\n{err}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["valid"], 2, "{answer}");
    let mut provers: Vec<&str> = answer["proofs"]
        .as_array()
        .expect("proofs")
        .iter()
        .map(|p| p["miner"].as_str().expect("miner"))
        .collect();
    provers.sort_unstable();
    let mut want = vec![net.node("miner-1").1, newcomer_key.clone()];
    want.sort_unstable();
    assert_eq!(provers, want, "{answer}");
    assert_eq!(
        answer["adopted_by"][0],
        net.node("validator-1").1.as_str(),
        "{answer}"
    );
    assert!(
        wait_until(T, || counted(&v1, &["validator", "verified"]) >= 1),
        "the validator did not verify the adopted request's proof"
    );
    // A key the genesis does not admit is refused up front, saying why.
    let (ok, _, err) = run(challenge_args(
        &net.node("miner-1").0.join("keys").join("node.key"),
    ));
    assert!(!ok && err.contains("not an admitted challenger"), "{err}");
    stop_all(&mut [&mut v1, &mut m1, &mut newcomer]);
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

#[test]
fn a_devnet_with_cheating_inference_and_false_challengers_settles_every_dispute_right() {
    // An 8-segment model, an honest inference node and a cheater (half its claims carry
    // one corrupted tensor at a random segment), the honest challenger auditing every
    // claim, and a false challenger disputing half of all claims with a corrupted trace.
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/deep_mlp.onnx");
    let (ok, out, err) = provnet_tests::provnet(&[
        "devnet",
        // The ceremony has a test of its own; this one is about disputes.
        "--dev-setup",
        "--model",
        model.to_str().expect("utf-8"),
        "--miners",
        "2",
        "--inference",
        "1",
        "--cheaters",
        "1",
        "--false-challengers",
        "1",
        "--claim-rate",
        "0.5",
        "--rate",
        "1",
        "--duration",
        "30",
        "--json",
        "--dir",
        dir.path().join("net").to_str().expect("utf-8"),
    ]);
    assert!(ok, "devnet failed:\n{out}\n{err}");
    let r: Value = serde_json::from_str(&out).expect("the report is JSON");
    let disputes = r["disputes"].as_array().expect("disputes");
    let finals: Vec<&Value> = disputes.iter().filter(|d| d["final"] == true).collect();
    assert!(finals.len() >= 4, "too few final disputes: {disputes:#?}");
    let (mut caught, mut beaten) = (0, 0);
    for d in &finals {
        let verdict = d["verdict"].as_str().expect("verdict");
        let segment = d["segment"].as_u64();
        let corrupted = d["corrupted_segment"].as_u64();
        let honest_challenger = d["challenger_name"] == "challenger";
        match corrupted {
            // An honest claimant never loses.
            None => {
                assert_eq!(verdict, "challenger_wrong", "{d:#}");
                beaten += 1;
            }
            // An honest challenger never loses, and finds the corrupted segment exactly.
            Some(c) if honest_challenger => {
                assert_eq!((verdict, segment), ("claimant_wrong", Some(c)), "{d:#}");
                caught += 1;
            }
            // Two liars: the first segment where their traces part decides.
            Some(c) => match verdict {
                "claimant_wrong" | "both_wrong" => assert_eq!(segment, Some(c), "{d:#}"),
                "challenger_wrong" => assert!(segment.is_some_and(|s| s < c), "{d:#}"),
                other => panic!("{other}: {d:#}"),
            },
        }
    }
    assert!(
        caught > 0 && beaten > 0,
        "caught {caught}, beaten {beaten}: {finals:#?}"
    );
    // Money: the honest keep theirs (bonds still held count). A liar pays for each lie
    // found out: it lost a bond (100) in at least one final dispute, and what it won (half
    // the loser's bond, 50, a dispute) never makes that up here. (Whether its wins against
    // the other liar outweigh its losses over a run is chance: it is not checked.)
    for (_, b) in r["bonds"].as_object().expect("bonds") {
        let (before, after, held) = (
            b["before"].as_u64().expect("before"),
            b["after"].as_u64().expect("after"),
            b["held"].as_u64().expect("held"),
        );
        let name = b["name"].as_str().expect("name");
        let (mut won, mut lost) = (0u64, 0u64);
        for d in &finals {
            let claimant_lost = matches!(
                d["verdict"].as_str(),
                Some("claimant_wrong" | "both_wrong" | "timeout_claimant")
            );
            let challenger_lost = !matches!(
                d["verdict"].as_str(),
                Some("claimant_wrong" | "timeout_claimant")
            );
            for (side, side_lost) in [
                ("claimant_name", claimant_lost),
                ("challenger_name", challenger_lost),
            ] {
                if d[side] == name {
                    match side_lost {
                        true => lost += 1,
                        false => won += 1,
                    }
                }
            }
        }
        if name.starts_with("cheater") || name.starts_with("false-") {
            assert!(lost > 0, "{name} never lost a dispute: {finals:#?}");
            assert!(
                after + held + 100 <= before + 50 * won,
                "{name} did not pay for its lies ({won} won, {lost} lost): {b}"
            );
        } else {
            assert!(after + held >= before, "{name} lost: {b}");
        }
    }
}

#[test]
fn a_devnet_whose_keys_come_from_the_network_ceremony_skips_a_garbage_validator() {
    // Three validators with stake 3000, 2000, 1000; the last contributes a step that is
    // well-formed but fails verification. Every node derives the initial parameters
    // itself, follows the slots and installs the same keys; then proofs verify as ever.
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let net = dir.path().join("net");
    let (ok, out, err) = provnet_tests::provnet(&[
        "devnet",
        "--validators",
        "2",
        "--garbage-validators",
        "1",
        "--miners",
        "2",
        "--ceremony-slot-ms",
        "5000",
        "--duration",
        "12",
        "--json",
        "--dir",
        net.to_str().expect("utf-8"),
    ]);
    assert!(ok, "devnet failed:\n{out}\n{err}");
    let r: Value = serde_json::from_str(&out).expect("the report is JSON");
    let c = &r["ceremony"];
    assert_eq!(c["nodes_agree"], true, "{c:#}");
    assert_eq!(
        (c["slots"].as_u64(), c["accepted"].as_u64()),
        (Some(3), Some(2)),
        "{c:#}"
    );
    let records = c["per_node"].as_object().expect("per node");
    assert_eq!(records.len(), 6, "every node installed the keys: {c:#}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(net.join("devnet.json")).expect("devnet.json"))
            .expect("manifest");
    let garbage = manifest["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "garbage-validator-1")
        .expect("the garbage validator")["public_key"]
        .clone();
    for (name, rec) in records {
        for slot in rec["slots"].as_array().expect("slots") {
            assert_eq!(
                slot[1] == true,
                slot[0] != garbage,
                "{name}: only the garbage step is skipped: {rec:#}"
            );
        }
    }
    // The keys are the ceremony's, and proofs under them verify as today.
    let model_id = records["validator-1"]["model_id"]
        .as_str()
        .expect("model id");
    let index: Value = serde_json::from_slice(
        &std::fs::read(
            net.join("nodes/validator-1/ceremony")
                .join(model_id)
                .join("keys/index.json"),
        )
        .expect("index.json"),
    )
    .expect("index");
    assert!(
        index["ceremony"]
            .as_str()
            .expect("ceremony")
            .contains("2 of 3 slots accepted"),
        "{index:#}"
    );
    let answers = &r["answers"];
    assert!(answers["valid"].as_u64().expect("valid") > 0, "{r:#}");
    assert_eq!(answers["other"], 0, "{r:#}");
    assert_eq!(r["validators_agree"], true, "{r:#}");

    // Restarted alone, a validator keeps the keys it installed: no second ceremony.
    let genesis = net.join("genesis.toml");
    let mut again = Node::start_in(
        "validator-1",
        &[
            "run",
            "--genesis",
            genesis.to_str().expect("utf-8"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--role",
            "validator",
        ],
        &net.join("nodes/validator-1"),
    );
    assert!(
        wait_until(T, || again.logged(
            "keys from this network's ceremony are installed already",
            &[]
        )),
        "{}",
        again.log_text()
    );
    again.terminate(T);
}

#[test]
fn a_validator_killed_mid_dispute_reaches_the_same_verdict_after_restart() {
    // No miner runs, so each leaf waits out its proof deadline (15 s) before the validators
    // execute it themselves: time to kill validator-1 with a dispute at its leaf.
    // validator-1 holds 2/3 of the stake, so its attestation alone makes a verdict final.
    let _serial = one_at_a_time();
    let net = Subnet::setup_with(1, 2, 10, &["--cheaters", "1"]);
    let mut ch = net.start(
        "challenger",
        "challenger",
        None,
        &["--rate", "0", "--audit-rate", "1"],
    );
    let boot = first_addr(&ch.ready(T));
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &["--rate", "0"]);
    let mut v2 = net.start("validator-2", "validator", Some(&boot), &["--rate", "0"]);
    let mut cheater = net.start(
        "cheater-1",
        "inference",
        Some(&boot),
        &["--claim-rate", "0.5", "--cheat-rate", "1"],
    );
    for n in [&mut v1, &mut v2, &mut cheater] {
        n.ready(T);
    }
    let disputes = |n: &Node| -> Vec<Value> {
        n.status()
            .and_then(|s| s["court"]["disputes"].as_array().cloned())
            .unwrap_or_default()
    };
    let mut at_leaf = None;
    assert!(
        wait_until(T, || {
            at_leaf = disputes(&v1)
                .into_iter()
                .find(|d| d["stage"] == "leaf")
                .and_then(|d| d["id"].as_str().map(String::from));
            at_leaf.is_some()
        }),
        "no dispute reached its leaf at validator-1:\n{}",
        v1.log_text()
    );
    let id = at_leaf.expect("found");
    v1.kill9();
    let mut v1 = net.start("validator-1", "validator", Some(&boot), &["--rate", "0"]);
    v1.ready(T);
    let final_at = |n: &Node| {
        disputes(n)
            .into_iter()
            .find(|d| d["id"] == id.as_str() && d["final_verdict"].is_string())
    };
    let mut got = None;
    assert!(
        wait_until(Duration::from_secs(90), || {
            got = final_at(&v1).zip(final_at(&v2));
            got.is_some()
        }),
        "dispute {id} never became final at both validators:\n{}",
        v1.log_text()
    );
    let (d1, d2) = got.expect("checked");
    let corrupted = cheater
        .status()
        .and_then(|s| s["court"]["corrupted"][d1["claim"].as_str().expect("claim")].as_u64());
    stop_all(&mut [&mut ch, &mut v1, &mut v2, &mut cheater]);
    assert_eq!(d1["final_verdict"], "claimant_wrong", "{d1:#}");
    assert_eq!(
        (&d1["final_verdict"], &d1["segment"]),
        (&d2["final_verdict"], &d2["segment"]),
        "the validators disagree: {d1:#} {d2:#}"
    );
    assert_eq!(d1["segment"].as_u64(), corrupted, "{d1:#}");
    assert!(
        v1.log_text().contains("leaf issued as a challenge"),
        "the restarted validator did not issue the leaf again"
    );
}
