//! A node down through an epoch's commit and reveal windows catches up from a peer's
//! archive of signed envelopes and reaches the same consensus; without it, it would not.
//! Forged, foreign and out-of-window envelopes change nothing.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use provnet_validator::{Epochs, Ledger, LedgerConfig, Store};
use provnet_wire::{
    Envelope, Gate, GateConfig, Message, MinerWeight, Network, PublicKey, SeenCommit, SyncRequest,
    WeightsCommit, WeightsReveal,
};

const LEN: u64 = 10_000;
const EPOCH: u64 = 170_000_000;
const NET: Network = Network {
    netuid: 9,
    genesis: [0x33; 8],
};

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn pk(i: u8) -> PublicKey {
    key(i).verifying_key().to_bytes()
}

fn epochs() -> Epochs {
    Epochs::new(LEN)
}

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    Ledger::open(
        Store::open(dir.path()).expect("store"),
        LedgerConfig {
            // No validator holds more than half: only directly seen commits count.
            stake: BTreeMap::from([(pk(1), 40), (pk(2), 35), (pk(3), 25)]),
            params: Default::default(),
            emission_per_epoch: 1_000_000,
            epochs: epochs(),
        },
        epochs().start(EPOCH),
    )
    .expect("ledger")
}

fn gate() -> Gate {
    Gate::new(NET, [0; 32], GateConfig::default())
}

fn seal(i: u8, m: &Message, at: u64) -> Vec<u8> {
    Envelope::seal(&key(i), NET, m.kind(), at, at * 1000, m.encode().unwrap())
        .encode()
        .unwrap()
}

fn reveal(i: u8, epoch: u64, seen: &[SeenCommit]) -> WeightsReveal {
    WeightsReveal {
        epoch,
        salt: [i; 32],
        weights: vec![
            MinerWeight {
                miner: [10; 32],
                weight: 65535 - u16::from(i) * 9000,
            },
            MinerWeight {
                miner: [11; 32],
                weight: 20000 + u16::from(i) * 7000,
            },
        ],
        seen_commits: seen.to_vec(),
    }
}

/// Validators 1 and 2 commit and reveal `epoch` (3 is offline); returns every envelope
/// with the time it went out.
fn epoch_traffic(epoch: u64) -> Vec<(u64, Vec<u8>)> {
    let e = epochs();
    let commit_at = e.start(epoch + 1) + 200;
    let reveal_at = e.reveal_from(epoch) + 200;
    let mut seen: Vec<SeenCommit> = [1, 2]
        .map(|i| SeenCommit {
            validator: pk(i),
            commitment: reveal(i, epoch, &[]).commitment(),
        })
        .to_vec();
    seen.sort_by_key(|s| s.validator);
    let mut out = Vec::new();
    for i in [1, 2] {
        let c = Message::WeightsCommit(WeightsCommit {
            epoch,
            commitment: reveal(i, epoch, &[]).commitment(),
        });
        out.push((commit_at, seal(i, &c, commit_at)));
    }
    for i in [1, 2] {
        let r = Message::WeightsReveal(reveal(i, epoch, &seen));
        out.push((reveal_at, seal(i, &r, reveal_at)));
    }
    out
}

/// Feeds live traffic to a ledger the way the node does.
fn live(l: &mut Ledger, traffic: &[(u64, Vec<u8>)]) {
    for (at, bytes) in traffic {
        let v = gate().check_archived(bytes, *at).expect("honest envelope");
        let r = match &v.message {
            Message::WeightsCommit(c) => l.on_signed_commit(&v.sender, c, *at, bytes),
            Message::WeightsReveal(r) => l.on_signed_reveal(&v.sender, r, *at, bytes),
            _ => unreachable!(),
        };
        r.expect("store").expect("honest traffic is accepted");
    }
}

#[test]
fn a_node_down_through_both_windows_catches_up_from_a_peers_archive() {
    let e = epochs();
    let (da, db, dc) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (mut up, mut down, mut unsynced) = (ledger(&da), ledger(&db), ledger(&dc));
    for epoch in [EPOCH, EPOCH + 1] {
        live(&mut up, &epoch_traffic(epoch));
    }
    let back_at = e.consensus_at(EPOCH + 1) + 500;
    assert_eq!(up.tick(back_at).expect("tick"), [EPOCH, EPOCH + 1]);

    // The restarted node: consensus waits while it asks.
    let missed = down.missed_epochs(back_at).expect("store");
    assert_eq!(missed, Some((EPOCH, EPOCH + 2)));
    down.hold(EPOCH);
    assert!(
        down.tick(back_at).expect("tick").is_empty(),
        "ran while held"
    );

    let answer = up
        .sync_answer(&SyncRequest {
            from_epoch: EPOCH,
            to_epoch: EPOCH + 2,
        })
        .expect("store");
    assert!(answer.serving && answer.more_from.is_none());
    assert_eq!(
        answer.envelopes.len(),
        8,
        "2 commits and 2 reveals per epoch"
    );
    let mut envelopes: Vec<Vec<u8>> = answer.envelopes.into_iter().map(|b| b.into_vec()).collect();
    // Reveals before commits, and everything twice (two peers): order and duplicates do
    // not matter.
    envelopes.reverse();
    envelopes.extend(envelopes.clone());
    let report = down
        .apply_synced(&gate(), EPOCH..=EPOCH + 2, envelopes, back_at)
        .expect("store");
    assert_eq!(
        (report.distinct, report.commits, report.reveals),
        (8, 4, 4),
        "{report:?}"
    );
    assert!(
        report.refused.is_empty() && report.bad.is_empty(),
        "{report:?}"
    );
    down.release();
    assert_eq!(down.tick(back_at).expect("tick"), [EPOCH, EPOCH + 1]);
    unsynced.tick(back_at).expect("tick");
    for epoch in [EPOCH, EPOCH + 1] {
        let a = up.store().consensus(epoch).expect("store").expect("ran");
        let b = down.store().consensus(epoch).expect("store").expect("ran");
        let c = unsynced
            .store()
            .consensus(epoch)
            .expect("store")
            .expect("ran");
        assert!(a.rewards.unallocated < 1_000_000, "{a:?}");
        assert_eq!(a, b, "the caught-up node disagrees on epoch {epoch}");
        assert_ne!(
            a, c,
            "without catching up it agrees anyway: the test shows nothing"
        );
    }
    // What it caught up on, it serves in turn.
    let relay = down
        .sync_answer(&SyncRequest {
            from_epoch: EPOCH,
            to_epoch: EPOCH + 1,
        })
        .expect("store");
    assert_eq!(relay.envelopes.len(), 8);
}

#[test]
fn forged_foreign_and_late_envelopes_change_nothing() {
    let e = epochs();
    let dir = tempfile::tempdir().expect("tmp");
    let mut l = ledger(&dir);
    let traffic = epoch_traffic(EPOCH);
    let back_at = e.consensus_at(EPOCH) + 500;
    l.hold(EPOCH);

    let mut forged = Envelope::decode(&traffic[2].1).unwrap();
    forged.signature[0] ^= 1;
    let foreign = {
        let m = Envelope::decode(&traffic[0].1).unwrap().message().unwrap();
        let other = Network::dev(9);
        Envelope::seal(
            &key(1),
            other,
            m.kind(),
            traffic[0].0,
            1,
            m.encode().unwrap(),
        )
        .encode()
        .unwrap()
    };
    // Validator 3 commits after the window closed and backdates nothing: refused.
    let late_commit = {
        let r = reveal(3, EPOCH, &[]);
        let c = Message::WeightsCommit(WeightsCommit {
            epoch: EPOCH,
            commitment: r.commitment(),
        });
        seal(3, &c, e.commit_deadline(EPOCH) + 1)
    };
    // A key outside the validator set.
    let outsider = {
        let c = Message::WeightsCommit(WeightsCommit {
            epoch: EPOCH,
            commitment: [7; 32],
        });
        seal(77, &c, traffic[0].0)
    };
    let report = l
        .apply_synced(
            &gate(),
            EPOCH..=EPOCH,
            vec![
                // Honest, but for an epoch nobody asked about.
                epoch_traffic(EPOCH - 3)[0].1.clone(),
                forged.encode().unwrap(),
                foreign,
                late_commit,
                outsider,
                b"garbage".to_vec(),
            ],
            back_at,
        )
        .expect("store");
    assert_eq!(report.commits + report.reveals, 0, "{report:?}");
    assert_eq!(
        report.bad,
        BTreeMap::from([
            ("bad_signature".into(), 1),
            ("foreign_genesis".into(), 1),
            ("malformed".into(), 1),
            ("not_asked".into(), 1),
        ]),
        "{report:?}"
    );
    assert_eq!(
        report.refused,
        BTreeMap::from([
            ("not_a_validator".into(), 1),
            ("outside_commit_window".into(), 1)
        ]),
        "{report:?}"
    );
    l.release();
    l.tick(back_at).expect("tick");
    let outcome = l.store().consensus(EPOCH).expect("store").expect("ran");
    assert!(outcome.rewards.miners.is_empty(), "{outcome:?}");
}

#[test]
fn the_archive_pages_large_answers_and_forgets_old_epochs() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("store");
    for epoch in 0..5u64 {
        for v in 0..3u8 {
            store
                .put_archived(
                    epoch,
                    provnet_validator::Archived::Reveal,
                    &[v; 32],
                    &[epoch as u8; 100],
                )
                .expect("store");
        }
    }
    let (first, more) = store.archived(1, 3, 450).expect("store");
    assert_eq!(first.len(), 4, "cut before the size passes 450 bytes");
    assert_eq!(more, Some(2));
    let (rest, more) = store.archived(2, 3, 10_000).expect("store");
    assert_eq!((rest.len(), more), (6, None));
    // At least one envelope even when it alone is over the budget.
    assert_eq!(store.archived(4, 4, 10).expect("store").0.len(), 1);
    store.prune_archive(3).expect("store");
    assert!(store.archived(0, 2, 10_000).expect("store").0.is_empty());
    assert_eq!(store.archived(0, 9, 10_000).expect("store").0.len(), 6);
}
