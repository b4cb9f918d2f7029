//! Scoring: faster valid proofs score higher, misconduct costs the epoch, and the weights
//! that come out rank miners by what they earned.

use std::collections::BTreeMap;

use proptest::prelude::*;
use provnet_validator::{challenge_samples, Outcome, ScoreParams, Scores};
use provnet_wire::PublicKey;

fn key(b: u8) -> PublicKey {
    [b; 32]
}

fn valid(latency_ms: f64) -> Outcome {
    Outcome::Valid {
        latency_ms,
        proof_bytes: 128,
    }
}

#[test]
fn honest_miners_rank_by_speed_and_cheaters_get_nothing() {
    let p = ScoreParams::default();
    let mut scores = Scores::default();
    // Three honest miners at 40, 80 and 160 ms; an invalid prover, a copier, a replayer, a
    // latecomer. The adversaries misbehave on every challenge.
    for _ in 0..50 {
        let outcomes = BTreeMap::from([
            (key(1), valid(40.0)),
            (key(2), valid(80.0)),
            (key(3), valid(160.0)),
            (key(4), Outcome::Invalid),
            (key(5), Outcome::Copied),
            (key(6), Outcome::Replayed),
            (key(7), Outcome::Late),
        ]);
        scores.record(&p, &outcomes);
    }
    let weights = scores.close_epoch(usize::MAX);
    let w: BTreeMap<PublicKey, u16> = weights.iter().map(|w| (w.miner, w.weight)).collect();
    assert_eq!(w.get(&key(1)), Some(&u16::MAX));
    assert!(w[&key(1)] > w[&key(2)] && w[&key(2)] > w[&key(3)] && w[&key(3)] > 0);
    for bad in 4..=7 {
        assert_eq!(w.get(&key(bad)), None, "miner {bad} must end with weight 0");
    }
    assert!(
        weights.windows(2).all(|p| p[0].miner < p[1].miner),
        "sorted for the reveal"
    );
}

#[test]
fn one_invalid_proof_forfeits_the_epoch_but_not_the_history() {
    let p = ScoreParams::default();
    let mut scores = Scores::default();
    for _ in 0..20 {
        scores.record(
            &p,
            &BTreeMap::from([(key(1), valid(50.0)), (key(2), valid(60.0))]),
        );
    }
    scores.record(
        &p,
        &BTreeMap::from([(key(1), Outcome::Invalid), (key(2), valid(60.0))]),
    );
    let epoch1 = scores.close_epoch(usize::MAX);
    assert_eq!(epoch1.len(), 1);
    assert_eq!(epoch1[0].miner, key(2));
    // Next epoch, honest again: miner 1 is back, its average only dented.
    scores.record(
        &p,
        &BTreeMap::from([(key(1), valid(50.0)), (key(2), valid(60.0))]),
    );
    let epoch2 = scores.close_epoch(usize::MAX);
    assert_eq!(epoch2.len(), 2);
}

#[test]
fn nobody_valid_means_no_weights() {
    let mut scores = Scores::default();
    scores.record(
        &ScoreParams::default(),
        &BTreeMap::from([(key(1), Outcome::Late)]),
    );
    assert!(scores.close_epoch(usize::MAX).is_empty());
}

#[test]
fn a_miner_that_goes_silent_decays_to_no_weight_and_is_forgotten() {
    let p = ScoreParams::default();
    let mut scores = Scores::default();
    // 50 keys answer one challenge, validly, then go silent; one honest miner keeps on.
    let sybils: BTreeMap<PublicKey, Outcome> = (10..60u8).map(|i| (key(i), valid(30.0))).collect();
    let mut first = sybils.clone();
    first.insert(key(1), valid(40.0));
    scores.record(&p, &first);
    let early = scores.close_epoch(usize::MAX);
    assert_eq!(early.len(), 51, "one proof earns weight in its epoch");
    let mut epochs = 0;
    loop {
        for _ in 0..20 {
            scores.record(&p, &BTreeMap::from([(key(1), valid(40.0))]));
        }
        epochs += 1;
        let w = scores.close_epoch(usize::MAX);
        if w.len() == 1 {
            assert_eq!(w[0].miner, key(1));
            break;
        }
        assert!(
            epochs < 10,
            "silent miners still weighted after {epochs} epochs"
        );
    }
    assert!(epochs <= 6, "decay took {epochs} epochs of 20 challenges");
    assert!(
        sybils.keys().all(|k| !scores.ema.contains_key(k)),
        "silent miners are forgotten"
    );
}

#[test]
fn weights_never_name_more_than_max_miners_and_keep_the_best() {
    let p = ScoreParams::default();
    let mut scores = Scores::default();
    let outcomes: BTreeMap<PublicKey, Outcome> = (1..=40u8)
        .map(|i| (key(i), valid(10.0 * f64::from(i))))
        .collect();
    scores.record(&p, &outcomes);
    let w = scores.close_epoch(8);
    assert_eq!(w.len(), 8);
    let kept: Vec<PublicKey> = w.iter().map(|x| x.miner).collect();
    let mut best: Vec<PublicKey> = (1..=8u8).map(key).collect();
    best.sort();
    assert_eq!(kept, best, "the 8 fastest, sorted by key");
}

proptest! {
    #[test]
    fn faster_never_scores_lower_and_valid_beats_everything_else(
        latencies in prop::collection::vec(1.0f64..10_000.0, 1..8),
        sizes in prop::collection::vec(64usize..8192, 8),
    ) {
        let p = ScoreParams::default();
        let mut outcomes: BTreeMap<PublicKey, Outcome> = latencies
            .iter()
            .zip(&sizes)
            .enumerate()
            .map(|(i, (&l, &b))| (key(i as u8), Outcome::Valid { latency_ms: l, proof_bytes: b }))
            .collect();
        outcomes.insert(key(100), Outcome::Invalid);
        let s = challenge_samples(&p, &outcomes);
        for (i, li) in latencies.iter().enumerate() {
            prop_assert!(s[&key(i as u8)] > 0.0);
            prop_assert!(s[&key(i as u8)] <= 1.0 + 1e-12);
            for (j, lj) in latencies.iter().enumerate() {
                if li < lj && sizes[i] <= sizes[j] {
                    prop_assert!(s[&key(i as u8)] >= s[&key(j as u8)]);
                }
            }
        }
        prop_assert_eq!(s[&key(100)], 0.0);
    }

    #[test]
    fn a_higher_sample_never_lowers_the_average(start in 0.0f64..1.0, a in 1.0f64..100.0, b in 1.0f64..100.0) {
        let p = ScoreParams::default();
        let run = |latency: f64| {
            let mut s = Scores::default();
            s.ema.insert(key(1), start);
            // Miner 2 sets the pace at 1 ms; miner 1's latency decides its sample.
            s.record(&p, &BTreeMap::from([(key(1), valid(latency)), (key(2), valid(1.0))]));
            s.ema[&key(1)]
        };
        let (fast, slow) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(run(fast) >= run(slow));
    }
}
