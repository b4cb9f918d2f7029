//! The court driven directly, with the clock passed in: claims, disputes, bisection to one
//! segment, the leaf's verdict, attestations to finality and the bonds settled, against
//! honest and lying sides of every kind. Traces are synthetic (segment k maps x to
//! 3x + k + 1), so any number of cuts can be played; the leaf's proof is handed in as the
//! validator's engine would.

use std::collections::BTreeMap;
use std::path::Path;

use provnet_kernels::trace::{self, MerkleTree};
use provnet_validator::court::bank::Bank;
use provnet_validator::court::{
    self, Action, Court, CourtConfig, CourtParams, Owed, SegmentRunner, Stage,
};
use provnet_validator::Store;
use provnet_wire::{
    Attestation, Claim, Digest, DisputeOpen, DisputeReveal, DisputeVerdict, LeafState, Message,
    PublicKey,
};

const MODEL: [u8; 32] = [7; 32];
const T0: u64 = 1_000_000;
const BALANCE: u64 = 10_000;

fn key(i: u8) -> PublicKey {
    [i; 32]
}

const CLAIMANT: u8 = 1;
const CHALLENGER: u8 = 2;
const OUTSIDER: u8 = 3;
const MINER: u8 = 4;
const V1: u8 = 11;
const V2: u8 = 12;
const V3: u8 = 13;

/// Segment `k` of the synthetic model.
fn step(k: u32, x: &[i64]) -> Vec<i64> {
    x.iter()
        .map(|v| v.wrapping_mul(3).wrapping_add(i64::from(k) + 1))
        .collect()
}

struct Runner;

impl SegmentRunner for Runner {
    fn run(&self, model_id: &[u8; 32], segment: u32, input: &[i64]) -> Option<Vec<i64>> {
        (*model_id == MODEL).then(|| step(segment, input))
    }
}

/// One side's run of the model: every cut's tensor, and the tree over their state hashes.
/// `corrupt`: the output of that segment (and so everything after) is off by `delta`.
struct Run {
    tensors: Vec<Vec<i64>>,
    tree: MerkleTree,
}

impl Run {
    fn new(input: &[i64], cuts: u32, corrupt: Option<(u32, i64)>) -> Run {
        let mut tensors = vec![input.to_vec()];
        for k in 0..cuts - 1 {
            let mut y = step(k, tensors.last().expect("non-empty"));
            if let Some((seg, delta)) = corrupt.filter(|(s, _)| *s == k) {
                let _ = seg;
                y[0] = y[0].wrapping_add(delta);
            }
            tensors.push(y);
        }
        let states: Vec<[u8; 32]> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| trace::leaf(i, t))
            .collect();
        Run {
            tree: MerkleTree::new(&states),
            tensors,
        }
    }

    fn root(&self) -> [u8; 32] {
        self.tree.root()
    }

    /// The claim of this run (bond 1,000), as the claimant signs it.
    fn claim(&self, nonce: u8) -> Claim {
        Claim {
            model_id: MODEL,
            input: self.tensors[0].clone(),
            output: self.tensors.last().expect("output").clone(),
            cuts: self.tensors.len() as u32,
            trace_root: self.root(),
            bond: 1_000,
            nonce: [nonce; 16],
        }
    }
}

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    court: Court,
    cuts: u32,
    now: u64,
}

fn params() -> CourtParams {
    CourtParams {
        claim_bond: 1_000,
        dispute_bond: 500,
        ..CourtParams::default()
    }
}

fn open_court(path: &Path, cuts: u32) -> Court {
    open_court_with(path, cuts, params(), Some(V1))
}

/// A court as validator `referee` keeps it, or (`None`) as the challenger's node does.
fn open_court_with(path: &Path, cuts: u32, params: CourtParams, referee: Option<u8>) -> Court {
    // A store just dropped may hold its lock a moment longer (sled's flusher).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match Store::open(path) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => panic!("store: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    };
    let accounts: BTreeMap<PublicKey, u64> = [CLAIMANT, CHALLENGER, OUTSIDER]
        .into_iter()
        .map(|k| (key(k), BALANCE))
        .collect();
    let bank = Bank::open(&store, &accounts).expect("bank");
    let cfg = CourtConfig {
        params,
        stake: [(key(V1), 1), (key(V2), 1), (key(V3), 1)].into(),
        me: key(referee.unwrap_or(CHALLENGER)),
        referee: referee.is_some(),
        models: [(MODEL, cuts)].into(),
    };
    Court::open(&store, cfg, Box::new(bank)).expect("court")
}

impl World {
    fn new(cuts: u32) -> World {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db");
        World {
            court: open_court(&path, cuts),
            path,
            _dir: dir,
            cuts,
            now: T0,
        }
    }

    /// Drops the court and opens it again from its store, as after a kill.
    fn restart(&mut self) {
        let cuts = self.cuts;
        // Let go of the store first: a court on a scratch path stands in meanwhile.
        self.court = open_court(&self._dir.path().join("scratch"), cuts);
        self.court = open_court(&self.path, cuts);
    }

    fn claim(&mut self, run: &Run, nonce: u8) -> [u8; 32] {
        let c = run.claim(nonce);
        self.court
            .on_claim(&key(CLAIMANT), &c, self.now)
            .expect("store")
            .expect("claim taken")
    }

    fn dispute(&mut self, claim: [u8; 32], run: &Run) -> [u8; 32] {
        self.dispute_by(CHALLENGER, claim, run)
    }

    fn dispute_by(&mut self, who: u8, claim: [u8; 32], run: &Run) -> [u8; 32] {
        let d = DisputeOpen {
            claim_id: claim,
            trace_root: run.root(),
            bond: 500,
        };
        self.court
            .on_dispute(&key(who), &d, self.now)
            .expect("store")
            .expect("dispute taken")
    }

    fn balance(&self, k: u8) -> u64 {
        self.court.bank().balance(&key(k)).expect("store")
    }

    fn stage(&self, d: &[u8; 32]) -> Stage {
        self.court.disputes()[d].stage.clone()
    }
}

/// How a side behaves.
#[derive(Clone, Copy, PartialEq)]
enum Plays {
    Answers,
    Silent,
}

/// Plays a dispute to this validator's verdict: both sides answer what they owe from their
/// runs (unless silent), the leaf is proved by `MINER` with the true output when `proved`,
/// and every action is carried out. Returns the actions the court asked for.
fn play(
    w: &mut World,
    d: [u8; 32],
    claimant: (&Run, Plays),
    challenger: (&Run, Plays),
    proved: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for _ in 0..64 {
        if matches!(w.stage(&d), Stage::Decided) {
            return actions;
        }
        w.now += 10;
        let mut progressed = false;
        for (who, (run, plays)) in [(CLAIMANT, claimant), (CHALLENGER, challenger)] {
            if plays == Plays::Silent {
                continue;
            }
            for owed in w.court.owed(&key(who)) {
                if owed.dispute == d {
                    let r = court::reveal(d, owed.round, &owed.points, owed.full, &run.tree)
                        .expect("in range");
                    let got = w.court.on_reveal(&key(who), &r, w.now).expect("store");
                    actions.extend(got.expect("a true reveal holds"));
                    progressed = true;
                }
            }
        }
        // The referee fetches the leaf state: the first side asked that answers gives it.
        let fetches: Vec<(u32, Vec<PublicKey>)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::FetchLeaf {
                    dispute, cut, from, ..
                } if *dispute == d => Some((*cut, from.clone())),
                _ => None,
            })
            .collect();
        actions.retain(|a| !matches!(a, Action::FetchLeaf { .. }));
        for (cut, from) in fetches {
            assert_eq!(&from[..2], &[key(CLAIMANT), key(CHALLENGER)], "sides first");
            let held = [(CLAIMANT, claimant), (CHALLENGER, challenger)]
                .into_iter()
                .find(|(_, (_, plays))| *plays == Plays::Answers);
            match held {
                Some((who, (run, _))) => {
                    let l = LeafState {
                        dispute_id: d,
                        cut,
                        tensors: vec![run.tensors[cut as usize].clone()],
                    };
                    let got = w.court.on_leaf_state(&key(who), &l).expect("store");
                    actions.extend(got.expect("the agreed state"));
                    // Held now, for other referees that ask this one.
                    assert_eq!(w.court.leaf_held(&d, cut), Some(&l.tensors[..]));
                }
                None => w.court.leaf_unavailable(&d),
            }
            progressed = true;
        }
        let pending: Vec<Action> = actions
            .iter()
            .filter(|a| matches!(a, Action::IssueLeaf { dispute, .. } if *dispute == d))
            .cloned()
            .collect();
        for a in pending {
            if let Action::IssueLeaf { segment, input, .. } = a {
                let due = w.now + w.court.params().leaf_ms;
                w.court.leaf_issued(&d, due);
                actions.retain(|x| !matches!(x, Action::IssueLeaf { .. }));
                if proved {
                    let out = step(segment, &input);
                    actions.extend(
                        w.court
                            .on_proved(&d, &key(MINER), &out, w.now)
                            .expect("store"),
                    );
                }
                progressed = true;
            }
        }
        if !progressed {
            // Nobody owes anything this node can supply: let the clocks run.
            w.now += w.court.params().round_ms.max(w.court.params().leaf_ms) + 1;
            actions.extend(w.court.tick(w.now, &Runner).expect("store"));
        }
    }
    panic!("the dispute never reached a verdict: {:?}", w.stage(&d));
}

/// Why the court refuses `who`'s dispute of `claim` with `run`'s trace and `bond`.
fn refused_dispute(w: &mut World, who: u8, claim: [u8; 32], run: &Run, bond: u64) -> &'static str {
    let d = DisputeOpen {
        claim_id: claim,
        trace_root: run.root(),
        bond,
    };
    let r = w.court.on_dispute(&key(who), &d, w.now).expect("store");
    r.expect_err("refused").as_str()
}

/// Both sides answer the round they owe, truthfully; returns what each sent.
fn answer_round(w: &mut World, d: [u8; 32], sides: [(u8, &Run); 2]) -> Vec<(u8, DisputeReveal)> {
    let mut sent = Vec::new();
    for (who, run) in sides {
        let Some(Owed {
            round,
            points,
            full,
            ..
        }) = w.court.owed(&key(who)).pop()
        else {
            panic!("a reveal is owed");
        };
        let r = court::reveal(d, round, &points, full, &run.tree).expect("in range");
        w.court
            .on_reveal(&key(who), &r, w.now)
            .expect("store")
            .expect("holds");
        sent.push((who, r));
    }
    sent
}

/// [`play`] with both sides answering and the leaf proved.
fn play_honestly(w: &mut World, d: [u8; 32], claimant: &Run, challenger: &Run) -> Vec<Action> {
    play(
        w,
        d,
        (claimant, Plays::Answers),
        (challenger, Plays::Answers),
        true,
    )
}

/// The other validators attest what this one did, one at a time, until the verdict is final.
fn finalize(w: &mut World, d: [u8; 32], actions: &[Action]) -> (DisputeVerdict, Option<u32>) {
    let ours = actions
        .iter()
        .find_map(|a| match a {
            Action::Publish(Message::Attestation(a)) if a.dispute_id == d => Some(a.clone()),
            _ => None,
        })
        .expect("this referee attested");
    assert!(
        w.court.disputes()[&d].final_verdict.is_none(),
        "one validator of three is not 2/3 of the stake"
    );
    w.court
        .on_attestation(&key(V2), &ours, w.now)
        .expect("store")
        .expect("a validator's attestation");
    let f = w.court.disputes()[&d]
        .final_verdict
        .clone()
        .expect("two of three validators make it final");
    (f.verdict, f.segment)
}

#[test]
fn every_corrupted_claim_is_found_at_its_segment_and_its_claimant_slashed() {
    for (cuts, bad) in [(11, 0), (11, 4), (11, 9), (3, 1)] {
        let mut w = World::new(cuts);
        let input = vec![5, -3, 2];
        let liar = Run::new(&input, cuts, Some((bad, 1)));
        let honest = Run::new(&input, cuts, None);
        let claim = w.claim(&liar, 1);
        let d = w.dispute(claim, &honest);
        let acts = play_honestly(&mut w, d, &liar, &honest);
        let (verdict, segment) = finalize(&mut w, d, &acts);
        assert_eq!(
            (verdict, segment),
            (DisputeVerdict::ClaimantWrong, Some(bad)),
            "{cuts} cuts, segment {bad} corrupted"
        );
        assert_eq!(w.court.disputes()[&d].rounds, 1, "a small trace: one round");
        // The claimant's 1,000 is slashed: half to the challenger (with its own bond
        // back), a tenth to the miner whose proof decided, the rest burned.
        assert_eq!(w.balance(CLAIMANT), BALANCE - 1_000);
        assert_eq!(w.balance(CHALLENGER), BALANCE + 500);
        assert_eq!(w.court.bank().balance(&key(MINER)).expect("store"), 100);
        assert_eq!(w.court.bank().burned().expect("store"), 400);
        assert!(w.court.claims()[&claim].overturned);
        // An overturned claim takes no more disputes.
        assert_eq!(
            refused_dispute(&mut w, OUTSIDER, claim, &honest, 600),
            "overturned"
        );
    }
}

#[test]
fn an_honest_claimant_never_loses_and_keeps_its_bond() {
    let cuts = 11;
    let input = vec![1, 2, 3];
    for bad in [0, 5, 9] {
        let mut w = World::new(cuts);
        let honest = Run::new(&input, cuts, None);
        let false_challenger = Run::new(&input, cuts, Some((bad, -7)));
        let claim = w.claim(&honest, 1);
        let d = w.dispute(claim, &false_challenger);
        let acts = play_honestly(&mut w, d, &honest, &false_challenger);
        assert_eq!(
            finalize(&mut w, d, &acts),
            (DisputeVerdict::ChallengerWrong, Some(bad))
        );
        assert_eq!(w.balance(CHALLENGER), BALANCE - 500);
        // The claimant's bond is held until the window ends, then comes back, with half
        // the challenger's.
        assert_eq!(w.balance(CLAIMANT), BALANCE - 1_000 + 250);
        w.now += w.court.params().window_ms + 1;
        w.court.tick(w.now, &Runner).expect("store");
        assert_eq!(w.balance(CLAIMANT), BALANCE + 250);
        assert!(!w.court.claims()[&claim].overturned);
    }

    // A challenger whose trace starts elsewhere, or ends where the claim does, loses in
    // the first round, before any leaf.
    let mut w = World::new(cuts);
    let honest = Run::new(&input, cuts, None);
    let claim = w.claim(&honest, 2);
    let other_input = Run::new(&[9, 9, 9], cuts, None);
    let d = w.dispute(claim, &other_input);
    let acts = play_honestly(&mut w, d, &honest, &other_input);
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::ChallengerWrong, None)
    );
    // The same trace as the claim is not a dispute at all.
    assert_eq!(
        refused_dispute(&mut w, OUTSIDER, claim, &honest, 500),
        "same_trace"
    );
}

#[test]
fn a_proof_of_a_third_output_makes_both_sides_wrong() {
    let cuts = 11;
    let input = vec![4, 4];
    let mut w = World::new(cuts);
    let a = Run::new(&input, cuts, Some((6, 1)));
    let b = Run::new(&input, cuts, Some((6, 2)));
    let claim = w.claim(&a, 1);
    let d = w.dispute(claim, &b);
    let acts = play_honestly(&mut w, d, &a, &b);
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::BothWrong, Some(6))
    );
    assert_eq!(w.balance(CLAIMANT), BALANCE - 1_000);
    assert_eq!(w.balance(CHALLENGER), BALANCE - 500);
    assert_eq!(w.court.bank().balance(&key(MINER)).expect("store"), 150);
    assert_eq!(w.court.bank().burned().expect("store"), 1_350);
}

#[test]
fn a_side_that_stops_answering_loses_on_its_clock() {
    let cuts = 11;
    let input = vec![1];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((3, 1)));
    // A claimant that does not reveal, and a challenger that does not.
    for (silent_claimant, want) in [
        (true, DisputeVerdict::TimeoutClaimant),
        (false, DisputeVerdict::TimeoutChallenger),
    ] {
        let mut w = World::new(cuts);
        let claim = w.claim(&liar, 1);
        let d = w.dispute(claim, &honest);
        let (c, h) = if silent_claimant {
            (Plays::Silent, Plays::Answers)
        } else {
            (Plays::Answers, Plays::Silent)
        };
        let acts = play(&mut w, d, (&liar, c), (&honest, h), true);
        assert_eq!(finalize(&mut w, d, &acts), (want, None));
    }
}

#[test]
fn a_claimant_that_withholds_the_leaf_state_loses_and_without_a_proof_the_referee_runs_the_leaf() {
    let cuts = 11;
    let input = vec![2, 7];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((5, 3)));
    // Both sides answer the round, then nobody gives up the state at cut 5.
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 1);
    let d = w.dispute(claim, &honest);
    answer_round(&mut w, d, [(CLAIMANT, &liar), (CHALLENGER, &honest)]);
    assert!(matches!(
        w.stage(&d),
        Stage::Leaf {
            segment: 5,
            state: None,
            ..
        }
    ));
    // The referee is fetching it (the last reveal asked for that): a tick asks nothing
    // more; once the fetch comes back empty, the next tick asks again, sides first and
    // then the other validators.
    assert!(w.court.tick(w.now, &Runner).expect("store").is_empty());
    w.court.leaf_unavailable(&d);
    let again = w.court.tick(w.now, &Runner).expect("store");
    let want = vec![Action::FetchLeaf {
        dispute: d,
        cut: 5,
        hash: honest.tree.leaves()[5],
        from: vec![key(CLAIMANT), key(CHALLENGER), key(V2), key(V3)],
    }];
    assert_eq!(again, want);
    // A state that is not the agreed one is refused, whoever gives it.
    let wrong = LeafState {
        dispute_id: d,
        cut: 5,
        tensors: vec![liar.tensors[6].clone()],
    };
    for from in [CLAIMANT, OUTSIDER] {
        let r = w.court.on_leaf_state(&key(from), &wrong).expect("store");
        assert_eq!(r.expect_err("not agreed").as_str(), "bad_leaf");
    }
    assert_eq!(w.court.leaf_held(&d, 5), None);
    w.now += w.court.params().round_ms + 1;
    let acts = w.court.tick(w.now, &Runner).expect("store");
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::TimeoutClaimant, Some(5))
    );

    // The state given, but no miner proves the leaf: the referee runs it itself.
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 2);
    let d = w.dispute(claim, &honest);
    let acts = play(
        &mut w,
        d,
        (&liar, Plays::Answers),
        (&honest, Plays::Answers),
        false,
    );
    let got = w.court.disputes()[&d].local.clone().expect("decided");
    assert_eq!(got.prover, None, "no miner proved it");
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::ClaimantWrong, Some(5))
    );
    assert_eq!(
        w.court.bank().burned().expect("store"),
        500,
        "no miner share"
    );
}

#[test]
fn a_hundred_thousand_cuts_take_three_rounds_and_forged_reveals_are_refused() {
    let cuts = 100_000;
    let input = vec![1, 1];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((77_777, 1)));
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 1);
    let d = w.dispute(claim, &honest);

    // Forgeries in round 0, before the honest answers: each refused and counted.
    let Some(Owed { points, full, .. }) = w.court.owed(&key(CHALLENGER)).pop() else {
        panic!("a reveal is owed");
    };
    assert!(!full && points.len() == 129, "{} points", points.len());
    let good = court::reveal(d, 0, &points, false, &honest.tree).expect("in range");
    let mut bad_sibling = good.clone();
    bad_sibling.proofs[3][0].0[0] ^= 1;
    let mut bad_hash = good.clone();
    bad_hash.hashes[5] = Digest([0xaa; 32]);
    let mut short = good.clone();
    short.hashes.pop();
    short.proofs.pop();
    let liars_proofs = DisputeReveal {
        hashes: good.hashes.clone(),
        ..court::reveal(d, 0, &points, false, &liar.tree).expect("in range")
    };
    for forged in [&bad_sibling, &bad_hash, &short, &liars_proofs] {
        let r = w
            .court
            .on_reveal(&key(CHALLENGER), forged, w.now)
            .expect("store");
        assert_eq!(r.expect_err("forged").as_str(), "bad_reveal");
    }
    let r = w
        .court
        .on_reveal(&key(OUTSIDER), &good, w.now)
        .expect("store");
    assert_eq!(r.expect_err("outsider").as_str(), "not_a_side");
    let mut later = good.clone();
    later.round = 1;
    let r = w
        .court
        .on_reveal(&key(CHALLENGER), &later, w.now)
        .expect("store");
    assert_eq!(r.expect_err("wrong round").as_str(), "wrong_round");
    let refused = &w.court.counters().refused;
    assert_eq!(refused.get("bad_reveal"), Some(&4));
    assert_eq!(refused.get("not_a_side"), Some(&1));

    let acts = play_honestly(&mut w, d, &liar, &honest);
    assert_eq!(w.court.disputes()[&d].rounds, 3);
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::ClaimantWrong, Some(77_777))
    );
}

#[test]
fn a_court_restarted_mid_dispute_reaches_the_same_verdict() {
    let cuts = 100_000;
    let input = vec![3];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((31_000, 1)));
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 1);
    let d = w.dispute(claim, &honest);
    // Round 0 answered by both, then the node is killed.
    let first = answer_round(&mut w, d, [(CLAIMANT, &liar), (CHALLENGER, &honest)]);
    let before = w.court.disputes()[&d].clone();
    assert!(matches!(before.stage, Stage::Bisect { round: 1, .. }));
    w.restart();
    assert_eq!(w.court.disputes()[&d], before, "the transcript survives");
    // A round-0 reveal gossiped again after the restart is not taken twice.
    for (who, r) in &first {
        let again = w.court.on_reveal(&key(*who), r, w.now).expect("store");
        assert_eq!(again.expect_err("old round").as_str(), "wrong_round");
    }
    let acts = play_honestly(&mut w, d, &liar, &honest);
    // Killed again at the verdict, before the other validators attested: it attests the
    // same verdict after the restart, and the bonds are settled once.
    w.restart();
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::ClaimantWrong, Some(31_000))
    );
    w.restart();
    let a3 = Attestation {
        dispute_id: d,
        verdict: DisputeVerdict::ClaimantWrong,
        segment: Some(31_000),
        prover: Some(Digest(key(MINER))),
    };
    w.court
        .on_attestation(&key(V3), &a3, w.now)
        .expect("store")
        .expect("taken");
    assert_eq!(w.balance(CHALLENGER), BALANCE + 500);
    assert_eq!(w.court.bank().burned().expect("store"), 400);
}

#[test]
fn a_self_dispute_always_loses_money_and_outsiders_cannot_attest() {
    let cuts = 11;
    let input = vec![8];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((2, 1)));
    // The claimant disputes its own (false) claim with a second key, hoping to collect.
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 1);
    let d = w.dispute(claim, &honest);
    let acts = play_honestly(&mut w, d, &liar, &honest);
    finalize(&mut w, d, &acts);
    let together = w.balance(CLAIMANT) + w.balance(CHALLENGER);
    assert!(together < 2 * BALANCE, "the pair kept {together}");
    // Attestations come from genesis validators only; claims from funded accounts only.
    let a = Attestation {
        dispute_id: d,
        verdict: DisputeVerdict::ChallengerWrong,
        segment: None,
        prover: None,
    };
    let r = w
        .court
        .on_attestation(&key(OUTSIDER), &a, w.now)
        .expect("store");
    assert_eq!(r.expect_err("outsider").as_str(), "not_a_validator");
    let broke = Claim {
        model_id: MODEL,
        input: vec![1],
        output: vec![1],
        cuts,
        trace_root: [0; 32],
        bond: 1_000,
        nonce: [9; 16],
    };
    let r = w.court.on_claim(&key(MINER), &broke, w.now).expect("store");
    assert_eq!(r.expect_err("no balance").as_str(), "insufficient_balance");
}

#[test]
fn a_leaf_state_no_run_can_reach_makes_both_sides_wrong() {
    let cuts = 11;
    let input = vec![1];
    let a = Run::new(&input, cuts, Some((2, 1)));
    let b = Run::new(&input, cuts, Some((2, 2)));
    let mut w = World::new(cuts);
    let claim = w.claim(&a, 1);
    let d = w.dispute(claim, &b);
    answer_round(&mut w, d, [(CLAIMANT, &a), (CHALLENGER, &b)]);
    assert!(matches!(w.stage(&d), Stage::Leaf { segment: 2, .. }));
    // The validator's engine refused the state as a segment input (out of range).
    let acts = w.court.leaf_impossible(&d, w.now).expect("store");
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::BothWrong, Some(2))
    );
}

#[test]
fn one_rich_account_cannot_fill_the_court_for_everyone_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let cheap = CourtParams {
        claim_bond: 1,
        ..params()
    };
    let mut court = open_court_with(&dir.path().join("db"), 3, cheap, Some(V1));
    let claim = |nonce: u16| Claim {
        model_id: MODEL,
        input: vec![1],
        output: vec![2],
        cuts: 3,
        trace_root: [0; 32],
        bond: 1,
        nonce: {
            let mut n = [0u8; 16];
            n[..2].copy_from_slice(&nonce.to_le_bytes());
            n
        },
    };
    for n in 0..court::MAX_OPEN_PER_ACCOUNT as u16 {
        court
            .on_claim(&key(CLAIMANT), &claim(n), T0)
            .expect("store")
            .expect("within the account's bound");
    }
    let r = court
        .on_claim(&key(CLAIMANT), &claim(u16::MAX), T0)
        .expect("store");
    assert_eq!(r.expect_err("over the bound").as_str(), "full");
    court
        .on_claim(&key(CHALLENGER), &claim(0), T0)
        .expect("store")
        .expect("another account still claims");
}

#[test]
fn a_side_keeps_answering_when_a_reveal_reaches_it_after_its_own_view_of_the_deadline() {
    // The challenger's node: not a referee. The claimant's reveal reaches it late; the
    // validators had it in time, so the dispute goes on and the side must too.
    let cuts = 100_000;
    let input = vec![2];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((50_000, 1)));
    let dir = tempfile::tempdir().expect("tmp");
    let mut court = open_court_with(&dir.path().join("db"), cuts, params(), None);
    let c = liar.claim(1);
    let claim = court
        .on_claim(&key(CLAIMANT), &c, T0)
        .expect("store")
        .expect("claim");
    let open = DisputeOpen {
        claim_id: claim,
        trace_root: honest.root(),
        bond: 500,
    };
    let d = court
        .on_dispute(&key(CHALLENGER), &open, T0)
        .expect("store")
        .expect("dispute");
    let Some(Owed { points, .. }) = court.owed(&key(CHALLENGER)).pop() else {
        panic!("a reveal is owed");
    };
    let mine = court::reveal(d, 0, &points, false, &honest.tree).expect("in range");
    court
        .on_reveal(&key(CHALLENGER), &mine, T0 + 10)
        .expect("store")
        .expect("holds");
    // Past this node's deadline, and no claimant reveal yet: a side decides nothing.
    let late = T0 + params().round_ms + 1_000;
    court.tick(late, &Runner).expect("store");
    assert!(matches!(
        court.disputes()[&d].stage,
        Stage::Bisect { round: 0, .. }
    ));
    assert!(court.disputes()[&d].local.is_none());
    // The claimant's reveal arrives: the next round opens and is owed.
    let theirs = court::reveal(d, 0, &points, false, &liar.tree).expect("in range");
    court
        .on_reveal(&key(CLAIMANT), &theirs, late)
        .expect("store")
        .expect("holds");
    assert!(matches!(
        court.owed(&key(CHALLENGER)).pop(),
        Some(Owed { round: 1, .. })
    ));
}

#[test]
fn messages_that_arrive_before_what_they_refer_to_are_held_and_applied_in_order() {
    // Gossip from different senders is not ordered: here a node hears, in this order,
    // the challenger's reveal, the dispute, the claim, then the claimant's round-0 reveal;
    // later a round-1 reveal before the round-0 one that opens round 1.
    let cuts = 100_000;
    let input = vec![6];
    let honest = Run::new(&input, cuts, None);
    let liar = Run::new(&input, cuts, Some((12_345, 1)));
    let mut w = World::new(cuts);
    let c = liar.claim(1);
    let claim = c.id(&key(CLAIMANT));
    let open = DisputeOpen {
        claim_id: claim,
        trace_root: honest.root(),
        bond: 500,
    };
    let d = open.id(&key(CHALLENGER));
    let points = court::bisect::query(0, 0, cuts - 1, cuts, params().arity);
    let early = court::reveal(d, 0, &points, false, &honest.tree).expect("in range");
    let r = w
        .court
        .on_reveal(&key(CHALLENGER), &early, w.now)
        .expect("store");
    assert_eq!(r.expect_err("no dispute yet").as_str(), "unknown_dispute");
    let r = w
        .court
        .on_dispute(&key(CHALLENGER), &open, w.now)
        .expect("store");
    assert_eq!(r.expect_err("no claim yet").as_str(), "unknown_claim");
    assert_eq!(w.court.counters().refused.get("held_early"), Some(&2));
    // The claim comes: the dispute, then the challenger's reveal, apply.
    w.court
        .on_claim(&key(CLAIMANT), &c, w.now)
        .expect("store")
        .expect("claim");
    assert!(matches!(
        &w.court.disputes()[&d].stage,
        Stage::Bisect {
            round: 0,
            got: [false, true],
            ..
        }
    ));
    // Round 1's reveal from the challenger before the claimant's round 0.
    let theirs = court::reveal(d, 0, &points, false, &liar.tree).expect("in range");
    let mine: Vec<[u8; 32]> = points
        .iter()
        .map(|&k| honest.tree.leaves()[k as usize])
        .collect();
    let theirs_h: Vec<[u8; 32]> = points
        .iter()
        .map(|&k| liar.tree.leaves()[k as usize])
        .collect();
    let (lo, hi) = court::bisect::narrow(&points, &theirs_h, &mine).expect("they differ");
    let next = court::bisect::query(1, lo, hi, cuts, params().arity);
    let ahead = court::reveal(d, 1, &next, false, &honest.tree).expect("in range");
    let r = w
        .court
        .on_reveal(&key(CHALLENGER), &ahead, w.now)
        .expect("store");
    assert_eq!(r.expect_err("ahead").as_str(), "wrong_round");
    w.court
        .on_reveal(&key(CLAIMANT), &theirs, w.now)
        .expect("store")
        .expect("holds");
    assert!(
        matches!(
            &w.court.disputes()[&d].stage,
            Stage::Bisect {
                round: 1,
                got: [false, true],
                ..
            }
        ),
        "the held round-1 reveal applied: {:?}",
        w.court.disputes()[&d].stage
    );
    let acts = play_honestly(&mut w, d, &liar, &honest);
    assert_eq!(
        finalize(&mut w, d, &acts),
        (DisputeVerdict::ClaimantWrong, Some(12_345))
    );
}

#[test]
fn a_court_that_was_down_catches_up_from_signed_messages_and_settles_the_same_bonds() {
    // Validator 1's court sees a dispute through to its final verdict.
    let cuts = 11;
    let input = vec![4, 4];
    let liar = Run::new(&input, cuts, Some((6, 2)));
    let honest = Run::new(&input, cuts, None);
    let mut w = World::new(cuts);
    let claim = w.claim(&liar, 1);
    let d = w.dispute(claim, &honest);
    let acts = play_honestly(&mut w, d, &liar, &honest);
    let (verdict, segment) = finalize(&mut w, d, &acts);
    let final_now = w.now;
    let attested = w.court.disputes()[&d].attestations.clone();
    // And a second claim, disputed, whose bisection is still running.
    let claim2 = w.claim(&liar, 2);
    let d2 = w.dispute(claim2, &honest);

    // Validator 3 was down for all of it. What peers send it, as signed: the claims, the
    // disputes and the attestations (the envelopes' bytes only go to its archive).
    let open = |claim_id| DisputeOpen {
        claim_id,
        trace_root: honest.root(),
        bond: 500,
    };
    let mut sent = vec![
        (key(CLAIMANT), Message::Claim(liar.claim(1)), T0, vec![1]),
        (
            key(CHALLENGER),
            Message::DisputeOpen(open(claim)),
            T0,
            vec![2],
        ),
        (
            key(CLAIMANT),
            Message::Claim(liar.claim(2)),
            final_now,
            vec![3],
        ),
        (
            key(CHALLENGER),
            Message::DisputeOpen(open(claim2)),
            final_now,
            vec![4],
        ),
        // A forged attestation from a key that is no validator.
        (
            key(OUTSIDER),
            Message::Attestation(Attestation {
                dispute_id: d2,
                verdict: DisputeVerdict::TimeoutChallenger,
                segment: None,
                prover: None,
            }),
            final_now,
            vec![5],
        ),
    ];
    for (v, dec) in &attested {
        let a = Attestation {
            dispute_id: d,
            verdict: dec.verdict,
            segment: dec.segment,
            prover: dec.prover.map(Digest),
        };
        sent.push((*v, Message::Attestation(a), final_now - 5, vec![6, v[0]]));
    }
    sent.reverse(); // in any order: what a message refers to is applied first
    let dir = tempfile::tempdir().expect("tmp");
    let mut late = open_court_with(&dir.path().join("db"), cuts, params(), Some(V3));
    let report = late.apply_synced(sent.clone()).expect("store");
    assert_eq!(report.applied, 4 + attested.len(), "{report:?}");
    assert_eq!(
        report.refused.get("not_a_validator"),
        Some(&1),
        "{report:?}"
    );
    // The same final verdict, and the same money, as the court that saw it live.
    let f = late.disputes()[&d].final_verdict.clone().expect("final");
    assert_eq!((f.verdict, f.segment), (verdict, segment));
    for k in [CLAIMANT, CHALLENGER, MINER] {
        assert_eq!(
            late.bank().balance(&key(k)).expect("store"),
            w.court.bank().balance(&key(k)).expect("store"),
            "account {k}"
        );
    }
    assert!(late.claims()[&claim].overturned);
    // Everything it took is archived, to serve the next node catching up; twice is
    // harmless.
    let (archived, more) = late.archived(0, 1 << 20).expect("store");
    assert_eq!((archived.len(), more), (4 + attested.len(), None));
    assert_eq!(late.last_archived_ms().expect("store"), Some(final_now));
    let again = late.apply_synced(sent).expect("store");
    assert_eq!(
        (again.applied, again.duplicate),
        (0, 4 + attested.len()),
        "{again:?}"
    );
    // The running dispute it only observes: long past its clocks, it never decides a
    // timeout, never fetches a leaf and never attests.
    assert!(late.disputes()[&d2].observed);
    let later = final_now + late.params().round_ms * 3;
    assert_eq!(
        late.tick(later, &Runner).expect("store"),
        Vec::<Action>::new()
    );
    assert_eq!(late.disputes()[&d2].local, None);
    // The same dispute live at validator 1 is refereed: its clock runs out there.
    let acts = w.court.tick(later, &Runner).expect("store");
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Publish(Message::Attestation(_)))),
        "{acts:?}"
    );
}
