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
    EngineConfig, Epochs, IssueConfig, Ledger, LedgerConfig, LedgerRefusal, Outcome, Refusal,
    ScoreParams, Store, Validator, Verdict, VerifyPool, VerifyingModel,
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
            .map(|i| (i as i64 * 37 + nonce as i64) % (seg.input().hi() as i64))
            .collect(),
        nonce: [nonce; 32],
        deadline_ms,
        request: None,
    }
}

/// Submits every job to a real verification pool and feeds the verdicts back.
fn verify_all(v: &mut Validator, jobs: Vec<provnet_validator::VerifyJob>, at: f64) {
    let (tx, rx) = mpsc::channel::<Verdict>();
    let pool = VerifyPool::start(64, move |x| tx.send(x).expect("test receives")).expect("pool");
    let n = jobs.len();
    for j in jobs {
        assert!(pool.submit(j).is_ok());
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
    // Copies the slow miner's proof and gets it here before the original.
    let early_copier = key();

    {
        let store = Store::open(&db).expect("store");
        let mut v =
            Validator::open(store.clone(), vec![vm.clone()], cfg.clone(), me, BASE).expect("opens");

        // An earlier challenge the replayer answers honestly.
        let c0 = challenge(&model, 1, BASE + 1_000);
        let id0 = v.issue(&c0, BASE as f64).expect("known model");
        let old = prover.prove(&c0, id0, &replayer);
        let job = v
            .on_proof(&replayer, &old, BASE as f64 + 10.0)
            .expect("open")
            .expect("job");
        verify_all(&mut v, vec![job], BASE as f64 + 12.0);

        // The challenge everyone answers.
        let t0 = BASE as f64 + 2_000.0;
        let c = challenge(&model, 2, BASE + 5_000);
        let id = v.issue(&c, t0).expect("known model");
        assert_eq!(v.issue(&c, t0), Err(Refusal::DuplicateChallenge));
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
            (&early_copier, &p_slow, 150.0),
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
        // A proof for a challenge this validator did not issue is refused outright: it
        // opens its own before publishing them, so none can be on its way.
        let mut unknown = p_fast.clone();
        unknown.challenge_id = c.id(&challenger);
        assert!(matches!(
            v.on_proof(&fast, &unknown, t0),
            Err(Refusal::NotOurs(_))
        ));
        let mut foreign = c.clone();
        foreign.model_id = [7; 32];
        assert!(matches!(
            v.issue(&foreign, t0),
            Err(Refusal::UnknownModel(_))
        ));
        let mut short_input = c.clone();
        short_input.input.pop();
        assert!(matches!(
            v.issue(&short_input, t0),
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
        assert_eq!(
            outcome(&early_copier),
            Outcome::Copied,
            "relabelled once scored"
        );
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

    // Reopened (sled's flusher may hold the lock a moment after the drop): everything is
    // still there.
    let store = retry_lock(|| Store::open(&db));
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
    assert_eq!(
        (
            records[&early_copier].copied,
            records[&early_copier].invalid
        ),
        (1, 0)
    );
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

/// A validator with the dense_16 model, its prover, and the engine opened at `BASE`.
fn engine(tmp: &Path, cfg: EngineConfig, me: PublicKey) -> (Validator, Prover, Model) {
    let dir = model_dir(tmp);
    let model = Model::load(&dir).expect("model");
    let prover = Prover {
        keys: ModelKeys::open(&dir, &model).expect("keys"),
        model: model.clone(),
    };
    let vm = Arc::new(VerifyingModel::load(&dir).expect("verifying keys"));
    let store = Store::open(&tmp.join("db")).expect("store");
    let v = Validator::open(store, vec![vm], cfg, me, BASE).expect("opens");
    (v, prover, model)
}

#[test]
fn requests_are_adopted_only_from_admitted_challengers_within_their_quota() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (me, other_validator, admitted, stranger) = (key(), key(), key(), key());
    let mut cfg = EngineConfig::new(ScoreParams::default(), Epochs::new(EPOCH));
    cfg.issue = IssueConfig {
        rate: 0.0,
        deadline_ms: 3_000,
        challengers: BTreeMap::from([(admitted, 2)]),
    };
    cfg.validators = [me, other_validator].into();
    let (mut v, _, model) = engine(tmp.path(), cfg, me);
    let t = BASE as f64;
    let request = |n: u8| challenge(&model, n, BASE + 10_000);

    // Another validator's challenge is its own to score: nothing to adopt, nothing refused.
    assert_eq!(v.on_request(&other_validator, &request(1), t), Ok(None));
    let refused = |r: Result<Option<Challenge>, Refusal>| r.expect_err("refused").as_str();
    assert_eq!(
        refused(v.on_request(&stranger, &request(1), t)),
        "request_not_admitted"
    );

    let req = request(1);
    let adopted = v
        .on_request(&admitted, &req, t)
        .expect("adopted")
        .expect("a challenge of its own");
    assert_eq!(adopted.request, Some(req.id(&admitted)));
    assert_eq!(
        (adopted.model_id, adopted.segment, &adopted.input),
        (req.model_id, req.segment, &req.input)
    );
    assert_ne!(
        adopted.nonce, req.nonce,
        "the validator's own nonce binds the proofs"
    );
    assert!(
        adopted.deadline_ms <= BASE + 3_000,
        "the validator's own deadline"
    );
    assert_eq!(
        refused(v.on_request(&admitted, &req, t)),
        "request_duplicate"
    );
    let mut bad = request(2);
    bad.input.pop();
    assert_eq!(refused(v.on_request(&admitted, &bad, t)), "bad_input");
    v.on_request(&admitted, &request(3), t)
        .expect("second of the quota");
    assert_eq!(
        refused(v.on_request(&admitted, &request(4), t)),
        "request_over_quota"
    );
    // The quota is per epoch.
    let next = (BASE + EPOCH) as f64;
    let late = challenge(&model, 5, BASE + EPOCH + 10_000);
    assert!(v
        .on_request(&admitted, &late, next)
        .expect("adopted")
        .is_some());
    let status = v.refusals();
    assert_eq!(status.get("request_over_quota"), Some(&1));
}

#[test]
fn every_issued_challenge_scores_every_tracked_miner_and_silence_decays_to_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let me = key();
    let mut cfg = EngineConfig::new(ScoreParams::default(), Epochs::new(EPOCH));
    cfg.settle_ms = 0;
    cfg.issue = IssueConfig {
        rate: 10.0,
        deadline_ms: 500,
        challengers: BTreeMap::new(),
    };
    cfg.max_open = 8;
    let (mut v, prover, _) = engine(tmp.path(), cfg, me);
    let honest = key();
    let sybils: Vec<PublicKey> = (0..5).map(|_| key()).collect();

    // Nothing before the first second (the mesh forms), then the rate, never a burst.
    assert!(v.issue_due(BASE as f64 + 500.0).is_empty());
    let first = v.issue_due(BASE as f64 + 1_000.0);
    assert_eq!(first.len(), 1);
    // The first challenge: everyone answers. Then only the honest miner does, for 7 s.
    let answered = |v: &mut Validator, c: &Challenge, who: &[PublicKey], at: f64| {
        let id = c.id(&me);
        let jobs = who
            .iter()
            .map(|m| {
                let p = prover.prove(c, id, m);
                v.on_proof(m, &p, at + 20.0).expect("ours").expect("job")
            })
            .collect();
        verify_all(v, jobs, at + 30.0);
    };
    let mut all = sybils.clone();
    all.push(honest);
    answered(&mut v, &first[0], &all, BASE as f64 + 1_000.0);
    let mut issued = 1;
    let mut t = BASE + 1_000;
    while t < BASE + 8_000 {
        t += 100;
        for c in v.issue_due(t as f64) {
            issued += 1;
            answered(&mut v, &c, &[honest], t as f64);
        }
        v.tick(t).expect("tick");
    }
    assert!((60..=75).contains(&issued), "{issued} challenges at 10/s");
    // Closed challenges: the silent keys sampled 0 on each one.
    let msgs = v.tick(101 * EPOCH).expect("tick");
    assert!(matches!(msgs.first(), Some(Message::WeightsCommit(_))));
    let w = v.store().weights(100).expect("store").expect("weights");
    let weighted: Vec<PublicKey> = w.weights.iter().map(|x| x.miner).collect();
    assert_eq!(weighted, vec![honest], "one proof does not buy weight");
    assert!(
        sybils.iter().all(|s| !v.scores().ema.contains_key(s)),
        "silent keys are forgotten"
    );

    // Open challenges are capped.
    let mut opened = 0;
    for k in 0..20u64 {
        opened += v.issue_due((101 * EPOCH + 1_000 + 100 * k) as f64).len();
    }
    assert_eq!(opened, 8, "max_open caps what is in flight");
    assert_eq!(v.refusals().get("too_many_open"), Some(&12));
}

#[test]
fn fifty_keys_that_register_prove_once_and_go_silent_lose_their_weight_and_their_slots() {
    use provnet_validator::{MinerRegistry, Registrar, RegistryParams};
    use provnet_wire::Register;
    let tmp = tempfile::tempdir().expect("tmp");
    let me = key();
    let mut cfg = EngineConfig::new(ScoreParams::default(), Epochs::new(EPOCH));
    cfg.settle_ms = 0;
    cfg.issue.rate = 0.0;
    cfg.keep_epochs = 2;
    let (mut v, prover, model) = engine(tmp.path(), cfg, me);
    let genesis = [3u8; 8];
    let params = RegistryParams {
        max_miners: 32,
        immunity_epochs: 2,
        work_bits: 6,
    };
    let honest = key();
    let mut reg = Registrar::open(
        v.store().clone(),
        params,
        &[honest],
        genesis,
        Epochs::new(EPOCH),
        BASE,
    )
    .expect("registry");
    let e0 = BASE / EPOCH;
    let sybils: Vec<PublicKey> = (0..50).map(|_| key()).collect();
    let mut batch_full = 0;
    for (i, s) in sybils.iter().enumerate() {
        let r = Register::solve(&genesis, s, e0, 6, i as u64 * 1_000_000);
        match reg.on_register(s, &r, BASE).expect("store") {
            Ok(q) => assert_eq!(q.epoch, e0),
            Err(e) => {
                assert_eq!(e.as_str(), "batch_full");
                batch_full += 1;
            }
        }
    }
    // A batch holds at most `max_miners`, those with the most work (the rest refused, or
    // pushed out later by more work: 18 counted either way); nothing takes a slot before
    // the batch's time.
    assert_eq!(reg.graph().pending(), 32);
    assert!(batch_full <= 18);
    assert_eq!(reg.refused().get("batch_full"), Some(&18));
    assert!(reg.tick(BASE).expect("store").is_empty());
    let applies = Epochs::new(EPOCH).registrations_at(e0);
    let taken: Vec<PublicKey> = reg
        .tick(applies)
        .expect("store")
        .iter()
        .map(|r| r.hotkey)
        .collect();
    assert_eq!(taken.len(), 31, "31 slots left beside the genesis miner's");
    assert_eq!(reg.graph().len(), 32, "slots stay capped");
    assert_eq!(reg.refused().get("all_immune"), Some(&1));
    // The batch is gone: late work for its epoch is stale.
    let late = key();
    let r = Register::solve(&genesis, &late, e0, 6, 0);
    assert_eq!(
        reg.on_register(&late, &r, applies)
            .expect("store")
            .expect_err("applied")
            .as_str(),
        "stale_registration"
    );
    // Too little work, or work for an old epoch, takes nothing.
    let lazy = key();
    let weak = (0..)
        .map(|nonce| Register {
            epoch: e0 + 1,
            nonce,
        })
        .find(|r| r.work_bits(&genesis, &lazy) < 6)
        .expect("most nonces are too little work");
    assert_eq!(
        reg.on_register(&lazy, &weak, applies)
            .expect("store")
            .expect_err("no work")
            .as_str(),
        "not_enough_work"
    );
    let old = Register::solve(&genesis, &lazy, e0 - 2, 6, 0);
    assert_eq!(
        reg.on_register(&lazy, &old, BASE)
            .expect("store")
            .expect_err("stale")
            .as_str(),
        "stale_registration"
    );
    let roster = |reg: &Registrar| Some(reg.graph().slots().iter().map(|s| s.hotkey).collect());
    v.set_roster(roster(&reg)).expect("store");

    // Every registered key proves the first challenge; an unregistered one is refused
    // before any verification.
    let mut t = BASE + 100;
    let c = challenge(&model, 1, t + 1_000);
    let id = v.issue(&c, t as f64).expect("issued");
    let mut everyone = taken.clone();
    everyone.push(honest);
    let first: Vec<ProofSubmission> = everyone.iter().map(|m| prover.prove(&c, id, m)).collect();
    let jobs = everyone
        .iter()
        .zip(&first)
        .map(|(m, p)| {
            v.on_proof(m, p, t as f64 + 20.0)
                .expect("ours")
                .expect("job")
        })
        .collect();
    verify_all(&mut v, jobs, t as f64 + 30.0);
    let first_hash = provnet_validator::engine::hash_proof(&first[0].proof);
    assert!(v.store().proof_seen(&first_hash).expect("store").is_some());
    let outsider = sybils
        .iter()
        .find(|s| !taken.contains(s))
        .expect("refused key");
    let p = prover.prove(&c, id, outsider);
    assert_eq!(
        v.on_proof(outsider, &p, t as f64 + 40.0).err(),
        Some(Refusal::Unregistered)
    );
    // Then only the honest miner works, 20 challenges an epoch.
    let mut n = 1u8;
    let mut epochs = 0;
    loop {
        let epoch = t / EPOCH;
        for _ in 0..20 {
            n = n.wrapping_add(1);
            t += 200;
            let c = challenge(&model, n, t + 100);
            let id = v.issue(&c, t as f64).expect("issued");
            let p = prover.prove(&c, id, &honest);
            let job = v
                .on_proof(&honest, &p, t as f64 + 10.0)
                .expect("ours")
                .expect("job");
            verify_all(&mut v, vec![job], t as f64 + 20.0);
            v.tick(t + 150).expect("tick");
        }
        t = (epoch + 1) * EPOCH + 100;
        v.tick(t).expect("tick");
        epochs += 1;
        let w = v.store().weights(epoch).expect("store").expect("weights");
        if w.weights.iter().all(|x| x.miner == honest) {
            break;
        }
        assert!(
            epochs < 8,
            "silent keys still weighted after {epochs} epochs"
        );
    }
    assert!(epochs <= 5, "{epochs} epochs of 20 challenges to decay");
    // Two epochs are kept: the first epoch's weights, challenge log and proof hashes are
    // gone, the last epoch's are there.
    let s = v.store();
    assert!(s.weights(e0).expect("store").is_none());
    assert!(s.weights(t / EPOCH - 1).expect("store").is_some());
    assert!(s.challenge(&id).expect("store").is_none());
    assert!(s.proof_seen(&first_hash).expect("store").is_none());
    assert!(
        s.challenge_count() <= 40,
        "{} challenges kept",
        s.challenge_count()
    );

    // Consensus ran on those weights (this validator alone holds the stake).
    let last = t / EPOCH - 1;
    let w = v.store().weights(last).expect("store").expect("weights");
    let outcome = provnet_validator::yuma(
        &Default::default(),
        &BTreeMap::from([(me, 1)]),
        &BTreeMap::from([(me, w.weights)]),
        &Default::default(),
        1_000,
    );
    v.store().put_epoch_outcome(last, &outcome).expect("store");
    // Immunity is over: an honest newcomer takes a silent key's slot, which leaves the
    // scores with it. The honest miner, with incentive, is not the one replaced. Its batch
    // (epoch `last + 2`) replaces by the consensus of `last`.
    let newcomer = key();
    let at = Epochs::new(EPOCH).start(last + 2) + 100;
    let r = Register::solve(&genesis, &newcomer, last + 2, 6, 7);
    reg.on_register(&newcomer, &r, at)
        .expect("store")
        .expect("a newcomer is heard when slots are full");
    let applied = reg
        .tick(Epochs::new(EPOCH).registrations_at(last + 2))
        .expect("store");
    assert_eq!(applied.len(), 1, "the newcomer registers: {applied:?}");
    let gone = applied[0].replaced.expect("replaced someone");
    assert!(taken.contains(&gone), "replaced {}", hex::encode(gone));
    assert_eq!(reg.graph().len(), 32);
    assert!(reg.graph().is_registered(&newcomer) && reg.graph().is_registered(&honest));
    v.set_roster(roster(&reg)).expect("store");
    assert!(!v.scores().ema.contains_key(&gone));
}

#[test]
fn a_flood_of_junk_proofs_is_shed_before_any_honest_proof() {
    use provnet_validator::VerifyQueue;
    let tmp = tempfile::tempdir().expect("tmp");
    let me = key();
    let mut cfg = EngineConfig::new(ScoreParams::default(), Epochs::new(EPOCH));
    cfg.settle_ms = 0;
    cfg.issue.rate = 0.0;
    let (mut v, prover, model) = engine(tmp.path(), cfg, me);
    let honest: Vec<PublicKey> = (0..4).map(|_| key()).collect();
    let junk: Vec<PublicKey> = (0..100).map(|_| key()).collect();
    let (tx, rx) = mpsc::channel::<Verdict>();
    let pool = VerifyPool::start(16, move |x| tx.send(x).expect("test receives")).expect("pool");
    let mut queue = VerifyQueue::new(pool, 64);
    let mut t = BASE as f64 + 100.0;
    // Runs the validator's loop: verdicts in, waiting proofs on, until each of the
    // `expected` proofs not shed has its verdict.
    let settle = |v: &mut Validator, q: &mut VerifyQueue, t: f64, expected: usize| {
        for _ in 0..expected {
            let verdict = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a verdict");
            v.on_verdict(verdict, t).expect("store");
            q.drain();
        }
        assert_eq!(q.waiting(), 0);
    };

    // The honest miners have a record: one challenge answered and scored.
    let c0 = challenge(&model, 1, BASE + 500);
    let id0 = v.issue(&c0, t).expect("issued");
    for m in &honest {
        let job = v
            .on_proof(m, &prover.prove(&c0, id0, m), t + 10.0)
            .expect("ours");
        assert!(queue.submit(job.expect("job"), &mut v).is_none());
    }
    settle(&mut v, &mut queue, t + 20.0, honest.len());
    v.tick(BASE + 600).expect("tick");
    t = BASE as f64 + 700.0;
    assert!(honest.iter().all(|m| v.scores().ema[m] > 0.0));

    // Ten challenges; on each, 100 junk keys re-send an honest proof (it decodes, so each
    // costs a pairing) around the honest answers: 1,000 junk proofs against 40.
    let mut shed = Vec::new();
    let mut ids = Vec::new();
    for k in 0..10u8 {
        t += 100.0;
        let c = challenge(&model, 10 + k, BASE + 60_000);
        let id = v.issue(&c, t).expect("issued");
        ids.push(id);
        let proofs: Vec<ProofSubmission> = honest.iter().map(|m| prover.prove(&c, id, m)).collect();
        for (i, j) in junk.iter().enumerate() {
            if i % 25 == 0 {
                let h = i / 25;
                let job = v.on_proof(&honest[h], &proofs[h], t + 1.0).expect("ours");
                shed.extend(queue.submit(job.expect("job"), &mut v));
            }
            let job = v.on_proof(j, &proofs[i % 4], t + 2.0).expect("ours");
            shed.extend(queue.submit(job.expect("job"), &mut v));
        }
    }
    settle(&mut v, &mut queue, t + 50.0, 1_040 - shed.len());
    assert!(!shed.is_empty(), "the flood overflowed the backlog");
    assert!(
        shed.iter().all(|m| junk.contains(m)),
        "an honest proof was shed"
    );
    assert_eq!(queue.shed() as usize, shed.len());
    // Every honest proof got its verdict: valid.
    v.tick(BASE + 61_000).expect("tick");
    for id in ids {
        let log = v.store().challenge(&id).expect("store").expect("scored");
        for m in &honest {
            assert!(
                log.answers
                    .iter()
                    .any(|a| a.miner == *m && matches!(a.outcome, Outcome::Valid { .. })),
                "an honest proof lost its verdict"
            );
        }
    }
}

#[test]
fn overflowing_epochs_and_fields_are_refused_not_a_panic() {
    use provnet_wire::{Register, WeightsCommit, WeightsReveal};
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::open(&tmp.path().join("db")).expect("store");
    let me = key();
    let epochs = Epochs::new(EPOCH);
    let mut ledger = Ledger::open(
        store.clone(),
        LedgerConfig {
            stake: BTreeMap::from([(me, 1)]),
            params: Default::default(),
            emission_per_epoch: 1_000,
            epochs,
        },
        BASE,
    )
    .expect("ledger");
    for epoch in [u64::MAX, u64::MAX - 1, u64::MAX / EPOCH + 1] {
        let commit = WeightsCommit {
            epoch,
            commitment: [1; 32],
        };
        assert_eq!(
            ledger.on_commit(&me, &commit, BASE).expect("store"),
            Err(LedgerRefusal::OutsideCommitWindow { epoch })
        );
        let reveal = WeightsReveal {
            epoch,
            salt: [0; 32],
            weights: Vec::new(),
            seen_commits: Vec::new(),
        };
        assert_eq!(
            ledger.on_reveal(&me, &reveal, BASE).expect("store"),
            Err(LedgerRefusal::OutsideRevealWindow { epoch })
        );
        // At the end of time too.
        assert!(ledger
            .on_commit(&me, &commit, u64::MAX)
            .expect("store")
            .is_err());
    }
    let mut reg =
        provnet_validator::Registrar::open(store, Default::default(), &[], [0; 8], epochs, BASE)
            .expect("registry");
    let far = Register {
        epoch: u64::MAX,
        nonce: u64::MAX,
    };
    assert_eq!(
        reg.on_register(&key(), &far, BASE)
            .expect("store")
            .expect_err("stale")
            .as_str(),
        "stale_registration"
    );
    assert!(reg
        .on_register(&key(), &far, u64::MAX)
        .expect("store")
        .is_err());
}

#[test]
fn random_challenges_fit_each_segment_s_own_input_ranges() {
    // attention's cuts hold tensors of different ranges (softmax weights, reciprocals, the
    // residual): a benchmark challenge must draw each value from its own, or miners refuse it.
    // gelu_ffn's segments after its LayerNorm take only states the model reaches (a random
    // point of their input box is almost never one): a challenge must be such a state.
    let tmp = tempfile::tempdir().expect("tmp");
    for name in ["attention", "gelu_ffn"] {
        let onnx =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../kernels/fixtures/{name}.onnx"));
        let dir = tmp.path().join(name);
        import(&onnx, &dir, &ImportOptions::default()).expect("imports");
        let model = Model::load(&dir).expect("loads");
        assert!(model.segments.iter().any(|s| s.in_ranges().len() > 1));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let c =
                provnet_validator::issue::random_challenge(&model, u64::MAX).expect("a challenge");
            let seg = &model.segments[c.segment as usize];
            seg.check_input(&c.input)
                .expect("a random challenge is a state the model reaches");
            seen.insert(c.segment);
        }
        assert_eq!(
            seen.len(),
            model.segments.len(),
            "{name}: every segment drawn"
        );
    }
}
