//! Yuma consensus: majority stake decides, minorities are clipped, early support earns
//! bonds, and every unit of emission is accounted for.

use std::collections::BTreeMap;

use proptest::prelude::*;
use provnet_validator::{yuma, Bonds, ConsensusParams};
use provnet_wire::{MinerWeight, PublicKey};

fn key(b: u8) -> PublicKey {
    [b; 32]
}

fn row(ws: &[(u8, u16)]) -> Vec<MinerWeight> {
    ws.iter()
        .map(|&(m, weight)| MinerWeight {
            miner: key(m),
            weight,
        })
        .collect()
}

const V1: u8 = 1;
const V2: u8 = 2;
const V3: u8 = 3;
const M1: u8 = 11;
const M2: u8 = 12;
const M3: u8 = 13;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_stake_minority_cannot_lift_its_own_miner() {
    let stake = BTreeMap::from([(key(V1), 40), (key(V2), 40), (key(V3), 20)]);
    let weights = BTreeMap::from([
        (key(V1), row(&[(M1, 100), (M2, 100)])),
        (key(V2), row(&[(M1, 100), (M2, 100)])),
        (key(V3), row(&[(M3, 65535)])),
    ]);
    let out = yuma(
        &ConsensusParams::default(),
        &stake,
        &weights,
        &Bonds::new(),
        1_000_000,
    );
    assert!(close(out.consensus[&key(M1)], 0.5));
    assert!(
        close(out.consensus[&key(M3)], 0.0),
        "only 20% of stake backs M3"
    );
    assert!(close(out.incentive[&key(M1)], 0.5));
    assert!(close(out.incentive[&key(M2)], 0.5));
    assert!(close(out.incentive[&key(M3)], 0.0));
    assert!(close(out.dividends[&key(V1)], 0.5));
    assert!(
        close(out.dividends[&key(V3)], 0.0),
        "V3 backed nobody the consensus backs"
    );

    let r = &out.rewards;
    assert_eq!(r.owner, 180_000);
    assert_eq!(r.miners.get(&key(M1)), Some(&205_000));
    assert_eq!(r.miners.get(&key(M2)), Some(&205_000));
    assert_eq!(r.miners.get(&key(M3)), None);
    assert_eq!(r.validators.get(&key(V1)), Some(&205_000));
    assert_eq!(r.validators.get(&key(V3)), None);
    assert_eq!(r.unallocated, 0);
    assert_eq!(r.total(), 1_000_000);
}

#[test]
fn weights_above_consensus_are_clipped_not_rewarded() {
    // V1 (30%) overweights M1; V2 and V3 (70%) split evenly. M1's consensus is 0.5.
    let stake = BTreeMap::from([(key(V1), 30), (key(V2), 35), (key(V3), 35)]);
    let even = row(&[(M1, 1), (M2, 1)]);
    let weights = BTreeMap::from([
        (key(V1), row(&[(M1, 9), (M2, 1)])),
        (key(V2), even.clone()),
        (key(V3), even),
    ]);
    let out = yuma(
        &ConsensusParams::default(),
        &stake,
        &weights,
        &Bonds::new(),
        100,
    );
    assert!(close(out.consensus[&key(M1)], 0.5));
    // Clipped: ranks 0.3*0.5 + 0.7*0.5 = 0.5 for M1 and 0.3*0.1 + 0.7*0.5 = 0.38 for M2.
    // Unclipped, V1's 0.9 would have given M1 0.62 of the incentive instead of 0.5/0.88.
    assert!(close(out.incentive[&key(M1)], 0.5 / 0.88));
    assert!(close(out.incentive[&key(M2)], 0.38 / 0.88));
    // V1's deviation costs it dividends relative to its stake.
    assert!(out.dividends[&key(V1)] < 0.30);
}

#[test]
fn bonds_reward_early_support() {
    let params = ConsensusParams::default();
    let stake = BTreeMap::from([(key(V1), 50), (key(V2), 50)]);
    // Epoch 1: only V1 weights M1 (50% support meets kappa). Epoch 2 on: both do.
    let first = BTreeMap::from([(key(V1), row(&[(M1, 1)])), (key(V2), row(&[(M2, 1)]))]);
    let both = BTreeMap::from([(key(V1), row(&[(M1, 1)])), (key(V2), row(&[(M1, 1)]))]);
    let mut bonds = yuma(&params, &stake, &first, &Bonds::new(), 1000).bonds;
    for _ in 0..5 {
        let out = yuma(&params, &stake, &both, &bonds, 1000);
        bonds = out.bonds;
        let col: f64 = bonds.values().filter_map(|r| r.get(&key(M1))).sum();
        assert!(close(col, 1.0), "bond column sums to 1, got {col}");
        assert!(out.dividends[&key(V1)] > out.dividends[&key(V2)]);
    }
}

#[test]
fn without_weights_only_the_owner_is_paid() {
    let stake = BTreeMap::from([(key(V1), 10)]);
    // A reveal from a key outside the validator set does not count.
    let weights = BTreeMap::from([(key(99), row(&[(M1, 1)]))]);
    let out = yuma(
        &ConsensusParams::default(),
        &stake,
        &weights,
        &Bonds::new(),
        1001,
    );
    assert!(out.incentive.is_empty());
    assert_eq!(out.rewards.owner, 1001 - 410 - 410);
    assert_eq!(out.rewards.unallocated, 820);
    assert_eq!(out.rewards.total(), 1001);
}

fn arb_epoch() -> impl Strategy<
    Value = (
        BTreeMap<PublicKey, u64>,
        BTreeMap<PublicKey, Vec<MinerWeight>>,
        u64,
    ),
> {
    let stake = prop::collection::btree_map((1u8..6).prop_map(key), 0u64..1_000_000, 1..6);
    let rows = prop::collection::btree_map(
        (1u8..7).prop_map(key),
        prop::collection::vec(((10u8..18).prop_map(key), any::<u16>()), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(miner, weight)| MinerWeight { miner, weight })
                .collect()
        }),
        0..6,
    );
    (stake, rows, any::<u64>())
}

proptest! {
    #[test]
    fn every_unit_is_accounted_for_and_shares_are_normalised((stake, weights, emission) in arb_epoch()) {
        let params = ConsensusParams::default();
        let out = yuma(&params, &stake, &weights, &Bonds::new(), emission);
        prop_assert_eq!(out.rewards.total(), emission);
        for shares in [&out.incentive, &out.dividends] {
            let sum: f64 = shares.values().sum();
            prop_assert!(shares.values().all(|x| *x >= 0.0));
            prop_assert!(sum == 0.0 || (sum - 1.0).abs() < 1e-9, "sum {}", sum);
        }
        for c in out.consensus.values() {
            prop_assert!((0.0..=1.0 + 1e-12).contains(c));
        }
        for (m, _) in out.incentive.iter().filter(|(_, i)| **i > 0.0) {
            let col: f64 = out.bonds.values().filter_map(|r| r.get(m)).sum();
            prop_assert!((col - 1.0).abs() < 1e-9, "bond column of an earning miner sums to {}", col);
        }
        // Every node computes the same thing.
        prop_assert_eq!(yuma(&params, &stake, &weights, &Bonds::new(), emission), out);
    }
}
