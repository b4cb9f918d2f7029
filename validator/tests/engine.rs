//! The validator engine, store and ledger driven directly, with the clock passed in: real
//! Groth16 proofs of a small model, every kind of answer classified, an epoch closed into
//! weights, committed, revealed, turned into consensus and rewards, and all of it still
//! there after the store is reopened.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc};

use ed25519_dalek::SigningKey;
use provnet_kernels::{
    import, keys, prove_segment, CpuBackend, ImportOptions, Model, ModelKeys, ProofContext,
};
use provnet_validator::{
    EngineConfig, Epochs, Ledger, LedgerConfig, LedgerRefusal, Outcome, Refusal, ScoreParams,
    Store, Validator, Verdict, VerifyPool, VerifyingModel,
};
use provnet_wire::{Challenge, Message, ProofSubmission, ProofSystem, PublicKey};

const EPOCH: u64 = 10_000;
const BASE: u64 = 100 * EPOCH + 1_000;

fn model_dir(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("dense_16");
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/dense_16.onnx");
    import(&onnx, &dir, &ImportOptions::default()).expect("imports");
    let model = Model::load(&dir).expect("loads");
    keys::setup(&dir, &model, &mut rand::rngs::OsRng).expect("setup");
    dir
}

fn key() -> PublicKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
        .verifying_key()
        .to_bytes()
}

struct Prover {
    model: Model,
    keys: ModelKeys,
}

impl Prover {
    fn prove(&self, challenge: &Challenge, id: [u8; 32], miner: &PublicKey) -> ProofSubmission {
        let seg = &self.model.segments[challenge.segment as usize];
        let pk = self.keys.proving_key(seg.index).expect("pk");
        let vk_id = self.keys.vk_id(seg.index).expect("vk id");
        let ctx = ProofContext {
            challenge: id,
            nonce: challenge.nonce,
            miner: *miner,
        };
        let p = prove_segment(
            &CpuBackend,
            &self.model,
            seg,
            &pk,
            &challenge.input,
            &ctx,
            &mut rand::rngs::OsRng,
        )
        .expect("proves");
        let file = p.to_file(&self.model, seg, &vk_id, &challenge.input, &ctx);
        ProofSubmission {
            challenge_id: id,
            model_id: self.model.id(),
            segment: challenge.segment,
            vk_id,
            system: ProofSystem::Groth16Bn254,
            output: file.output,
            proof: file.proof,
        }
    }
}

fn challenge(model: &Model, nonce: u8, deadline_ms: u64) -> Challenge {
    let seg = &model.segments[0];
    Challenge {
        model_id: model.id(),
        segment: 0,
        input: (0..seg.n_in())
            .map(|i| (i as i64 * 37 + nonce as i64) % (seg.input.hi() as i64))
            .collect(),
        nonce: [nonce; 32],
        deadline_ms,
    }
}

/// Submits every job to a real verification pool and feeds the verdicts back.
fn verify_all(v: &mut Validator, jobs: Vec<provnet_validator::VerifyJob>, at: f64) {
    let (tx, rx) = mpsc::channel::<Verdict>();
    let pool = VerifyPool::start(64, move |x| tx.send(x).expect("test receives")).expect("pool");
    let n = jobs.len();
    for j in jobs {
        assert!(pool.submit(j));
    }
    for _ in 0..n {
        let verdict = rx.recv().expect("a verdict per job");
        v.on_verdict(verdict, at).expect("store");
    }
}

#[test]
fn every_answer_is_classified_scored_weighted_committed_revealed_and_paid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = model_dir(tmp.path());
    let model = Model::load(&dir).expect("model");
    let prover = Prover {
        keys: ModelKeys::open(&dir, &model).expect("keys"),
        model: model.clone(),
    };
    let vm = Arc::new(VerifyingModel::load(&dir).expect("verifying keys"));
    let epochs = Epochs::new(EPOCH);
    let mut cfg = EngineConfig::new(ScoreParams::default(), epochs);
    cfg.settle_ms = 0;
    let db = tmp.path().join("db");
    let me = key();
    let challenger = key();
    let [fast, slow, copier, replayer, late, liar] = [key(), key(), key(), key(), key(), key()];

    {
        let store = Store::open(&db).expect("store");
        let mut v =
            Validator::open(store.clone(), vec![vm.clone()], cfg.clone(), BASE).expect("opens");

        // An earlier challenge the replayer answers honestly.
        let c0 = challenge(&model, 1, BASE + 1_000);
        let id0 = v
            .on_challenge(&challenger, &c0, BASE as f64)
            .expect("known model");
        let old = prover.prove(&c0, id0, &replayer);
        let job = v
            .on_proof(&replayer, &old, BASE as f64 + 10.0)
            .expect("open")
            .expect("job");
        verify_all(&mut v, vec![job], BASE as f64 + 12.0);

        // The challenge everyone answers.
        let t0 = BASE as f64 + 2_000.0;
        let c = challenge(&model, 2, BASE + 5_000);
        let id = v.on_challenge(&challenger, &c, t0).expect("known model");
        assert_eq!(
            v.on_challenge(&challenger, &c, t0),
            Err(Refusal::DuplicateChallenge)
        );
        let p_fast = prover.prove(&c, id, &fast);
        let p_slow = prover.prove(&c, id, &slow);
        let p_late = prover.prove(&c, id, &late);
        let mut p_liar = prover.prove(&c, id, &liar);
        p_liar.proof[127] ^= 1;
        let mut p_replay = old.clone();
        p_replay.challenge_id = id;
        let mut jobs = Vec::new();
        for (who, p, at) in [
            (&fast, &p_fast, 40.0),
            (&copier, &p_fast, 45.0),
            (&slow, &p_slow, 160.0),
            (&replayer, &p_replay, 50.0),
            (&liar, &p_liar, 60.0),
            (&late, &p_late, 3_100.0),
        ] {
            jobs.push(v.on_proof(who, p, t0 + at).expect("open").expect("job"));
        }
        assert_eq!(
            v.on_proof(&fast, &p_fast, t0 + 70.0).err(),
            Some(Refusal::DuplicateAnswer)
        );
        let mut unknown = p_fast.clone();
        unknown.challenge_id = [9; 32];
        // A proof for a challenge not (yet) heard of waits for it; the same miner's second
        // one for it is refused.
        assert!(matches!(v.on_proof(&fast, &unknown, t0), Ok(None)));
        assert!(matches!(
            v.on_proof(&fast, &unknown, t0),
            Err(Refusal::UnknownChallenge(_))
        ));
        let mut foreign = c.clone();
        foreign.model_id = [7; 32];
        assert!(matches!(
            v.on_challenge(&challenger, &foreign, t0),
            Err(Refusal::UnknownModel(_))
        ));
        let mut short_input = c.clone();
        short_input.input.pop();
        assert!(matches!(
            v.on_challenge(&challenger, &short_input, t0),
            Err(Refusal::BadInput(_))
        ));
        verify_all(&mut v, jobs, t0 + 3_200.0);
        assert!(v.tick(BASE + 6_000).expect("tick").is_empty());

        let log = store.challenge(&id).expect("store").expect("logged");
        let outcome = |m: &PublicKey| {
            log.answers
                .iter()
                .find(|a| a.miner == *m)
                .map(|a| a.outcome)
                .expect("answered")
        };
        assert!(matches!(outcome(&fast), Outcome::Valid { latency_ms, .. } if latency_ms == 40.0));
        assert!(matches!(outcome(&slow), Outcome::Valid { latency_ms, .. } if latency_ms == 160.0));
        assert_eq!(outcome(&copier), Outcome::Copied);
        assert_eq!(outcome(&replayer), Outcome::Replayed);
        assert_eq!(outcome(&liar), Outcome::Invalid);
        assert_eq!(outcome(&late), Outcome::Late);

        // The epoch closes into weights and a commitment; the reveal follows.
        let msgs = v.tick(101 * EPOCH).expect("tick");
        let Some(Message::WeightsCommit(commit)) = msgs.first() else {
            panic!("expected a commit, got {msgs:?}");
        };
        assert_eq!(commit.epoch, 100);
        let w = store.weights(100).expect("store").expect("weights stored");
        let weights: BTreeMap<PublicKey, u16> =
            w.weights.iter().map(|x| (x.miner, x.weight)).collect();
        assert_eq!(weights.get(&fast), Some(&u16::MAX));
        assert!(weights[&slow] > 0 && weights[&slow] < u16::MAX);
        for m in [&copier, &replayer, &liar, &late] {
            assert!(
                !weights.contains_key(m),
                "misconduct or lateness earned weight"
            );
        }
        let reveal_msgs = v.tick(101 * EPOCH + EPOCH / 2).expect("tick");
        let Some(Message::WeightsReveal(reveal)) = reveal_msgs.first() else {
            panic!("expected a reveal, got {reveal_msgs:?}");
        };
        assert_eq!(reveal.commitment(), commit.commitment);

        // The ledger takes the commit in its window, the reveal only if it opens it.
        let other = key();
        let stake = BTreeMap::from([(me, 3), (other, 1)]);
        let mut ledger = Ledger::open(
            store.clone(),
            LedgerConfig {
                stake,
                params: Default::default(),
                emission_per_epoch: 1_000,
                epochs,
            },
            BASE,
        )
        .expect("ledger");
        assert_eq!(
            ledger
                .on_commit(&key(), commit, 101 * EPOCH)
                .expect("store"),
            Err(LedgerRefusal::NotAValidator)
        );
        assert_eq!(
            ledger
                .on_commit(&me, commit, 101 * EPOCH + EPOCH / 2)
                .expect("store"),
            Err(LedgerRefusal::OutsideCommitWindow { epoch: 100 })
        );
        ledger
            .on_commit(&me, commit, 101 * EPOCH + 10)
            .expect("store")
            .expect("recorded");
        let mut forged = reveal.clone();
        forged.weights.retain(|x| x.miner != slow);
        let at = 101 * EPOCH + EPOCH / 2 + 10;
        assert_eq!(
            ledger.on_reveal(&me, &forged, at).expect("store"),
            Err(LedgerRefusal::Mismatch { epoch: 100 })
        );
        assert_eq!(
            ledger.on_reveal(&other, reveal, at).expect("store"),
            Err(LedgerRefusal::NoCommit { epoch: 100 })
        );
        ledger
            .on_reveal(&me, reveal, at)
            .expect("store")
            .expect("recorded");
        assert!(ledger
            .tick(epochs.consensus_at(100) - 1)
            .expect("store")
            .is_empty());
        assert_eq!(
            ledger.tick(epochs.consensus_at(100)).expect("store"),
            vec![100]
        );
    }

    // Reopened: everything is still there.
    let store = Store::open(&db).expect("reopens");
    let outcome = store
        .consensus(100)
        .expect("store")
        .expect("consensus kept");
    let r = &outcome.rewards;
    assert_eq!(r.total(), 1_000);
    assert_eq!(r.owner, 180);
    assert!(r.miners[&fast] > r.miners[&slow]);
    assert_eq!(r.miners.len(), 2, "only the honest, timely miners are paid");
    assert_eq!(r.validators.get(&me), Some(&410));
    assert_eq!(
        store.totals().expect("store").miners[&fast],
        r.miners[&fast]
    );
    assert_eq!(store.weights_history().expect("store").len(), 1);
    assert_eq!(store.challenge_count(), 2);
    let records = store.miners().expect("store");
    assert_eq!(records[&fast].valid, 1);
    assert_eq!(records[&replayer].replayed, 1);
    assert_eq!(records[&replayer].valid, 1);
    assert_eq!(records[&copier].copied, 1);
    assert_eq!(records[&late].late, 1);
    assert_eq!(records[&liar].invalid, 1);
}

#[test]
fn a_corrupt_record_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::open(tmp.path()).expect("store");
    store.set_open_epoch(5).expect("write");
    drop(store);
    {
        let db = retry_lock(|| sled::open(tmp.path()));
        db.open_tree("meta")
            .expect("tree")
            .insert(b"scores", &b"\xff\x00not cbor"[..])
            .expect("write");
        db.flush().expect("flush");
    }
    let store = retry_lock(|| Store::open(tmp.path()));
    let err = store.scores().expect_err("corrupt");
    assert!(err.to_string().contains("corrupt record in meta"), "{err}");
    assert_eq!(store.open_epoch().expect("intact"), Some(5));
}

/// Opens a sled directory that a just-dropped handle may still lock: sled's flusher thread
/// lets go of it shortly after the drop.
fn retry_lock<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let t = std::time::Instant::now();
    loop {
        match open() {
            Ok(x) => return x,
            Err(e) if t.elapsed() > std::time::Duration::from_secs(10) => panic!("open: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
