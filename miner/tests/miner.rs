//! The miner's queue and workers on a real (small) model: refusals, a proof that verifies
//! and is bound to this miner, and a job dropped because its deadline came too close.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use provnet_kernels::{
    import, keys, CpuBackend, ImportOptions, Model, ModelKeys, ProofContext, ProofFile,
    SegmentVerifier,
};
use provnet_miner::{Done, Miner, MinerConfig, ProvingModel};
use provnet_wire::{unix_ms, Challenge};

fn setup(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("dense_16");
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/dense_16.onnx");
    import(&onnx, &dir, &ImportOptions::default()).expect("imports");
    let model = Model::load(&dir).expect("loads");
    keys::setup(&dir, &model, &mut rand::rngs::OsRng).expect("setup");
    dir
}

/// The validator whose challenges the miners here prove.
const VALIDATOR: [u8; 32] = [7; 32];

fn start(dir: &Path, cfg: MinerConfig) -> (Miner, mpsc::Receiver<Done>) {
    let (tx, rx) = mpsc::channel();
    let pm = ProvingModel::load(dir).expect("proving keys load");
    let miner = Miner::start(vec![pm], [5; 32], Arc::new(CpuBackend), cfg, move |d| {
        let _ = tx.send(d);
    })
    .expect("starts");
    (miner, rx)
}

fn challenge(model: &Model, deadline_in_ms: u64) -> Challenge {
    Challenge {
        model_id: model.id(),
        segment: 0,
        input: vec![1; model.segments[0].n_in()],
        nonce: [3; 32],
        deadline_ms: unix_ms(SystemTime::now()) + deadline_in_ms,
        request: None,
    }
}

#[test]
fn proves_what_it_can_and_refuses_the_rest_with_reasons() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = setup(tmp.path());
    let model = Model::load(&dir).expect("model");
    let (miner, done) = start(
        &dir,
        MinerConfig {
            threads: 1,
            issuers: Some([VALIDATOR].into()),
            ..Default::default()
        },
    );

    let good = challenge(&model, 60_000);
    // A good challenge from anyone but a validator: a request, a self-challenge, junk.
    assert_eq!(
        miner
            .offer(&[6; 32], [1; 32], good.clone())
            .expect_err("not a validator's")
            .as_str(),
        "not_an_issuer"
    );
    let refusals = [
        Challenge {
            model_id: [1; 32],
            ..good.clone()
        },
        Challenge {
            segment: 9,
            ..good.clone()
        },
        Challenge {
            input: vec![1; 3],
            ..good.clone()
        },
        Challenge {
            input: vec![i64::MAX; good.input.len()],
            ..good.clone()
        },
        Challenge {
            deadline_ms: 1,
            ..good.clone()
        },
    ];
    let reasons: Vec<&str> = refusals
        .iter()
        .map(|c| {
            miner
                .offer(&VALIDATOR, [0; 32], c.clone())
                .expect_err("refused")
                .as_str()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_model",
            "no_such_segment",
            "bad_input",
            "bad_input",
            "expired"
        ]
    );

    miner
        .offer(&VALIDATOR, [8; 32], good.clone())
        .expect("queued");
    let Done::Proved(p) = done.recv_timeout(Duration::from_secs(60)).expect("done") else {
        panic!("expected a proof");
    };
    assert_eq!(p.challenge_id, [8; 32]);
    let keys = ModelKeys::open(&dir, &model).expect("keys");
    let (vk, vk_id) = keys.verifying_key(0).expect("vk");
    let ctx = ProofContext {
        challenge: [8; 32],
        nonce: good.nonce,
        miner: [5; 32],
    };
    let s = &p.submission;
    let file = ProofFile::from_claim(&model, 0, &s.vk_id, &ctx, &good.input, &s.output, &s.proof)
        .expect("well-formed claim");
    let verifier = SegmentVerifier::new(0, vk, vk_id);
    verifier
        .verify(&model, &file, &ctx)
        .expect("the proof verifies");
    let other = ProofContext {
        miner: [6; 32],
        ..ctx
    };
    let stolen = ProofFile::from_claim(
        &model,
        0,
        &s.vk_id,
        &other,
        &good.input,
        &s.output,
        &s.proof,
    )
    .expect("well-formed claim");
    assert!(
        verifier.verify(&model, &stolen, &other).is_err(),
        "a proof must not verify for another miner"
    );

    let stats = miner.stats();
    assert_eq!(stats.proved, 1);
    assert_eq!(stats.refused.values().sum::<u64>(), 6);
    assert_eq!(stats.refused["not_an_issuer"], 1);
    assert_eq!(stats.refused["bad_input"], 2);
    assert!(stats.prove_ms_p50.is_some());
    miner.stop();
}

#[test]
fn a_job_whose_deadline_comes_too_close_is_dropped_not_proved() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = setup(tmp.path());
    let model = Model::load(&dir).expect("model");
    let cfg = MinerConfig {
        threads: 1,
        deadline_margin_ms: 3_600_000,
        ..Default::default()
    };
    let (miner, done) = start(&dir, cfg);
    miner
        .offer(&VALIDATOR, [2; 32], challenge(&model, 60_000))
        .expect("queued: the deadline is ahead");
    match done.recv_timeout(Duration::from_secs(60)).expect("done") {
        Done::Expired { challenge_id } => assert_eq!(challenge_id, [2; 32]),
        other => panic!("expected Expired, got {other:?}"),
    }
    assert_eq!(miner.stats().dropped_expired, 1);
    assert_eq!(miner.stats().proved, 0);
}

#[test]
fn queued_challenges_for_one_segment_are_proved_as_a_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = setup(tmp.path());
    let model = Model::load(&dir).expect("model");
    // The worker reports on its own thread, so a report that blocks holds the worker: the
    // first proof's report waits at a gate until all five jobs are queued, and what the
    // worker takes next does not depend on how fast this thread offers.
    let (tx, done) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (gate_tx, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(Some((entered_tx, gate)));
    let pm = ProvingModel::load(&dir).expect("proving keys load");
    let cfg = MinerConfig {
        threads: 1,
        batch: 4,
        ..Default::default()
    };
    let miner = Miner::start(vec![pm], [5; 32], Arc::new(CpuBackend), cfg, move |d| {
        if let Some((entered, gate)) = gate.lock().expect("gate").take() {
            let _ = entered.send(());
            let _ = gate.recv_timeout(Duration::from_secs(60));
        }
        let _ = tx.send(d);
    })
    .expect("starts");
    let keys = ModelKeys::open(&dir, &model).expect("keys");
    let (vk, vk_id) = keys.verifying_key(0).expect("vk");
    let verifier = SegmentVerifier::new(0, vk, vk_id);
    let mut offered = Vec::new();
    let mut offer = |k: u8| {
        let mut c = challenge(&model, 60_000);
        c.nonce = [k; 32];
        c.input[0] = k as i64;
        miner
            .offer(&VALIDATOR, [k + 1; 32], c.clone())
            .expect("queued");
        offered.push(([k + 1; 32], c));
    };
    offer(9);
    entered
        .recv_timeout(Duration::from_secs(60))
        .expect("the first job is proved");
    for k in 0..5u8 {
        offer(k);
    }
    gate_tx.send(()).expect("the worker waits at the gate");
    let mut times = Vec::new();
    for _ in 0..6 {
        let Done::Proved(p) = done.recv_timeout(Duration::from_secs(60)).expect("done") else {
            panic!("expected a proof");
        };
        let (_, c) = offered
            .iter()
            .find(|(id, _)| *id == p.challenge_id)
            .expect("ours");
        let ctx = ProofContext {
            challenge: p.challenge_id,
            nonce: c.nonce,
            miner: [5; 32],
        };
        let s = &p.submission;
        let file = ProofFile::from_claim(&model, 0, &s.vk_id, &ctx, &c.input, &s.output, &s.proof)
            .expect("well-formed claim");
        verifier
            .verify(&model, &file, &ctx)
            .expect("each proof of a batch verifies");
        times.push((p.challenge_id[0], p.prove_ms));
    }
    // One job alone, then five queued in batches of at most four: the first four (in queue
    // order) share one proving time, the fifth has its own.
    let ids: Vec<u8> = times.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [10, 1, 2, 3, 4, 5], "reported in order: {times:?}");
    let t = |i: usize| times[i].1;
    assert!((1..5).all(|i| t(i) == t(1)), "one batch of four: {times:?}");
    assert_ne!(t(5), t(1), "the fifth job is a batch of its own: {times:?}");
    assert_eq!(miner.stats().proved, 6);
    miner.stop();
}

#[test]
fn a_proving_key_that_embeds_another_verifying_key_is_refused_at_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = setup(tmp.path());
    let index = dir.join("keys").join("index.json");
    let text = std::fs::read_to_string(&index).expect("index");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let entry = v["segments"][0].as_object_mut().expect("segment 0");
    entry.insert("vk_id".into(), serde_json::Value::String("ab".repeat(32)));
    std::fs::write(&index, serde_json::to_vec(&v).expect("json")).expect("write");
    let err = match ProvingModel::load(&dir) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded keys whose index names another verifying key"),
    };
    assert!(err.contains("embeds another verifying key"), "{err}");
}
