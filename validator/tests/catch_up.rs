//! A node that was down through an epoch's commit window still reaches the network's
//! consensus from the reveals it hears, when validators holding most of the stake vouch for
//! the commitments it missed; a commitment vouched for by a minority does not count.

use std::collections::BTreeMap;

use provnet_validator::{Epochs, Ledger, LedgerConfig, LedgerRefusal, Store};
use provnet_wire::{MinerWeight, PublicKey, SeenCommit, WeightsCommit, WeightsReveal};

const LEN: u64 = 10_000;
const EPOCH: u64 = 170_000_000;

fn v(i: u8) -> PublicKey {
    [i; 32]
}

fn stake() -> BTreeMap<PublicKey, u64> {
    BTreeMap::from([(v(1), 50), (v(2), 30), (v(3), 20)])
}

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    let epochs = Epochs::new(LEN);
    Ledger::open(
        Store::open(dir.path()).expect("store"),
        LedgerConfig {
            stake: stake(),
            params: Default::default(),
            emission_per_epoch: 1_000_000,
            epochs,
        },
        epochs.start(EPOCH),
    )
    .expect("ledger")
}

fn reveal(i: u8, weights: &[(u8, u16)], seen: &[(u8, [u8; 32])]) -> WeightsReveal {
    WeightsReveal {
        epoch: EPOCH,
        salt: [i; 32],
        weights: weights
            .iter()
            .map(|(m, w)| MinerWeight {
                miner: [*m; 32],
                weight: *w,
            })
            .collect(),
        seen_commits: seen
            .iter()
            .map(|(u, c)| SeenCommit {
                validator: v(*u),
                commitment: *c,
            })
            .collect(),
    }
}

/// Three honest validators' reveals, each vouching for all three commitments.
fn honest() -> Vec<(u8, WeightsReveal)> {
    let weights = [
        vec![(10, 65535), (11, 30000)],
        vec![(10, 60000), (11, 35000)],
        vec![(10, 20000), (11, 65535)],
    ];
    let commitments: Vec<[u8; 32]> = (1..=3)
        .map(|i| reveal(i, &weights[i as usize - 1], &[]).commitment())
        .collect();
    let seen: Vec<(u8, [u8; 32])> = (1..=3).map(|i| (i, commitments[i as usize - 1])).collect();
    (1..=3)
        .map(|i| (i, reveal(i, &weights[i as usize - 1], &seen)))
        .collect()
}

fn times() -> (u64, u64, u64) {
    let e = Epochs::new(LEN);
    (
        e.start(EPOCH + 1) + 100,
        e.reveal_from(EPOCH) + 100,
        e.consensus_at(EPOCH),
    )
}

#[test]
fn a_node_that_missed_every_commit_reaches_the_same_consensus() {
    let (commit_at, reveal_at, consensus_at) = times();
    let (da, db) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (mut up, mut restarted) = (ledger(&da), ledger(&db));
    for (i, r) in honest() {
        let c = WeightsCommit {
            epoch: EPOCH,
            commitment: r.commitment(),
        };
        up.on_commit(&v(i), &c, commit_at)
            .expect("store")
            .expect("in window");
        up.on_reveal(&v(i), &r, reveal_at)
            .expect("store")
            .expect("opens its commit");
        // The restarted node heard no commit: the reveal is refused as such, and kept.
        assert_eq!(
            restarted.on_reveal(&v(i), &r, reveal_at).expect("store"),
            Err(LedgerRefusal::NoCommit { epoch: EPOCH })
        );
    }
    assert_eq!(up.tick(consensus_at).expect("tick"), [EPOCH]);
    assert_eq!(restarted.tick(consensus_at).expect("tick"), [EPOCH]);
    let a = up.store().consensus(EPOCH).expect("store").expect("ran");
    let b = restarted
        .store()
        .consensus(EPOCH)
        .expect("store")
        .expect("ran");
    assert!(a.rewards.unallocated < 1_000_000, "{a:?}");
    assert_eq!(a, b, "the restarted node disagrees");
}

#[test]
fn a_commitment_only_a_minority_vouches_for_does_not_count() {
    let (commit_at, reveal_at, consensus_at) = times();
    let honest = honest();
    // Validator 3 (20% of the stake) reveals weights whose commitment nobody else saw,
    // vouching for it itself; validators 1 and 2 vouch for the commitment 3 really made.
    let c3_fake = reveal(3, &[(11, 65535)], &[]).commitment();
    let forged = reveal(3, &[(11, 65535)], &[(3, c3_fake)]);
    // Validator 2 (30%) alone vouches for a commitment of 1's that 1 never made.
    let lone = {
        let mut r = honest[1].1.clone();
        r.seen_commits[0].commitment = [0xee; 32];
        r
    };

    let (dx, dy) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let mut missed = ledger(&dx);
    missed
        .on_reveal(&v(1), &honest[0].1, reveal_at)
        .expect("store")
        .ok();
    missed
        .on_reveal(&v(2), &honest[1].1, reveal_at)
        .expect("store")
        .ok();
    missed
        .on_reveal(&v(3), &forged, reveal_at)
        .expect("store")
        .ok();
    missed.tick(consensus_at).expect("tick");
    // The same as a node that saw only 1's and 2's commits.
    let mut saw = ledger(&dy);
    for (i, r) in &honest[..2] {
        let c = WeightsCommit {
            epoch: EPOCH,
            commitment: r.commitment(),
        };
        saw.on_commit(&v(*i), &c, commit_at)
            .expect("store")
            .expect("in window");
        saw.on_reveal(&v(*i), r, reveal_at)
            .expect("store")
            .expect("opens");
    }
    saw.tick(consensus_at).expect("tick");
    let x = missed
        .store()
        .consensus(EPOCH)
        .expect("store")
        .expect("ran");
    let y = saw.store().consensus(EPOCH).expect("store").expect("ran");
    assert_eq!(x, y, "a self-vouched reveal counted");
    assert!(!x.rewards.validators.contains_key(&v(3)), "{x:?}");

    // 1's reveal vouched for by 1 itself (50%) and nobody else (2 names another
    // commitment for it): not more than half, not counted.
    let dz = tempfile::tempdir().expect("tmp");
    let mut lonely = ledger(&dz);
    lonely
        .on_reveal(&v(1), &honest[0].1, reveal_at)
        .expect("store")
        .ok();
    lonely
        .on_reveal(&v(2), &lone, reveal_at)
        .expect("store")
        .ok();
    lonely.tick(consensus_at).expect("tick");
    let z = lonely
        .store()
        .consensus(EPOCH)
        .expect("store")
        .expect("ran");
    assert!(
        !z.rewards.validators.contains_key(&v(1)),
        "a 30% attestation let a reveal in: {z:?}"
    );
}
