//! The screens, rendered from a fixed snapshot into ratatui's `TestBackend` at 80x24 and
//! 160x48, compared with the committed text in `tests/snapshots/`. After a deliberate
//! change to the screens, regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p provnet-tui`
//! and review the diff. Also: key handling on `App` state.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provnet_tui::app::{App, Conn, Feed, SortKey, Tab};
use provnet_tui::input::Action;
use provnet_wire::status::{Histogram, LogLine, ProofNote};
use provnet_wire::{
    ChallengeStatus, Counters, CourtStatus, DisputeStatus, EpochRewards, GossipStatus,
    LedgerStatus, MinerRanking, MinerStatus, NodeStatus, PeerStatus, RejectionRecord,
    ValidatorStatus,
};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

const NOW: u64 = 1_700_000_123_456;

fn key(i: u8) -> String {
    format!("{:02x}", i).repeat(32)
}

fn ranking(i: u8, weight: u16, score: f64, valid: u64, invalid: u64, p50: f64) -> MinerRanking {
    MinerRanking {
        miner: key(i),
        score,
        weight,
        consensus: weight as f64 / 65535.0,
        incentive: weight as f64 / 65535.0 / 2.0,
        valid,
        invalid,
        latency_ms_p50: (valid > 0).then_some(p50),
        latency_ms_p95: (valid > 0).then_some(p50 * 1.8),
        verified_ms_p50: (valid > 0).then_some(p50 + 4.0),
        proof_bytes: Some(128),
        reward_last_epoch: weight as u64 * 6_000,
        reward_total: weight as u64 * 60_000,
        uid: Some(i as u16),
        recent_proofs: vec![
            ProofNote {
                challenge: "c0ffee0011223344".into(),
                at_ms: NOW - 4_000,
                outcome: if valid > 0 { "valid" } else { "late" }.into(),
                latency_ms: (valid > 0).then_some(p50),
                proof_bytes: Some(128),
                detail: String::new(),
            },
            ProofNote {
                challenge: "badbad0011223344".into(),
                at_ms: NOW - 2_000,
                outcome: if invalid > 0 { "invalid" } else { "valid" }.into(),
                latency_ms: (invalid == 0).then_some(p50),
                proof_bytes: Some(128),
                detail: if invalid > 0 {
                    "pairing check failed".into()
                } else {
                    String::new()
                },
            },
        ],
        ..Default::default()
    }
}

/// A validator-and-ledger node with a bit of everything.
fn fixture() -> NodeStatus {
    let rankings = vec![
        ranking(0xa1, 40_000, 0.91, 120, 0, 21.0),
        ranking(0xb2, 25_535, 0.58, 118, 0, 37.0),
        ranking(0xc3, 0, 0.0, 0, 57, 0.0),
    ];
    let recent_challenges = (0..6u64)
        .map(|i| ChallengeStatus {
            id: format!("{:08x}{}", 0xfeed_0000 + i, "ab".repeat(28)),
            model: key(0x5e),
            segment: (i % 2) as u32,
            received_ms: NOW - 1_000 - i * 500,
            deadline_ms: NOW - 1_000 - i * 500 + 3_000,
            proofs: 3,
            valid: if i == 5 { 0 } else { 2 },
            fastest_ms: (i != 5).then_some(20.0 + i as f64),
            status: if i < 2 { "open" } else { "closed" }.into(),
        })
        .collect();
    let recent = (0..8u64)
        .map(|i| EpochRewards {
            epoch: 170_000_000 + i,
            owner: 180_000_000,
            miners: 410_000_000 - i * 10_000_000,
            validators: 410_000_000,
            unallocated: i * 10_000_000,
            revealed_by: vec![key(0x11), key(0x22)],
            dividends: BTreeMap::from([(key(0x11), 250_000_000), (key(0x22), 160_000_000)]),
        })
        .collect();
    let mut received = Counters {
        accepted: 1234,
        ..Default::default()
    };
    received.rejected.insert("bad_signature".into(), 3);
    received.rejected.insert("malformed".into(), 1);
    let mut h = Histogram::with_bounds(&[0.01, 0.05, 0.1]);
    h.observe(0.02);
    NodeStatus {
        at_ms: NOW,
        software_version: "0.1.0".into(),
        public_key: key(0x11),
        peer_id: "12D3KooWProvnetValidatorOne".into(),
        roles: vec!["validator".into()],
        netuid: 7,
        genesis: "0badc0de".repeat(8),
        epoch: 170_000_008,
        epoch_secs: 10,
        epoch_ends_ms: NOW + 4_500,
        gossip: GossipStatus {
            peer_id: "12D3KooWProvnetValidatorOne".into(),
            netuid: 7,
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/40001".into()],
            connected_peers: 2,
            received,
            published: 40,
            publish_failures: 0,
            recent_rejections: vec![RejectionRecord {
                at_ms: NOW - 30_000,
                peer: "12D3KooWAttackerPeerXYZ".into(),
                topic: "proofs".into(),
                reason: "bad_signature".into(),
                detail: "envelope signature does not verify".into(),
            }],
            connections_refused: 0,
            ledger_dropped: 0,
            ledger_backlog: 0,
        },
        peers: vec![
            PeerStatus {
                peer_id: "12D3KooWProvnetMinerA1".into(),
                address: "/ip4/127.0.0.1/tcp/40002".into(),
                connected_since_ms: NOW - 95_000,
                agent: Some("provnet/0.1.0".into()),
                roles: vec!["miner".into()],
                gossip_score: Some(12.5),
                topics: vec![],
                mesh: vec![],
            },
            PeerStatus {
                peer_id: "12D3KooWProvnetMinerC3".into(),
                address: "/ip4/127.0.0.1/tcp/40004".into(),
                connected_since_ms: NOW - 5_000,
                agent: None,
                roles: vec!["miner".into()],
                gossip_score: Some(-40.0),
                topics: vec![],
                mesh: vec![],
            },
        ],
        miner: None,
        validator: Some(ValidatorStatus {
            open_challenges: 2,
            verified: 295,
            verify_batches: 101,
            verify_queue: 0,
            last_committed_epoch: Some(170_000_007),
            last_revealed_epoch: Some(170_000_006),
            rankings,
            recent_challenges,
            refused: BTreeMap::from([("unknown_challenge".into(), 1)]),
        }),
        challenger: None,
        ledger: Some(LedgerStatus {
            last_consensus_epoch: Some(170_000_007),
            recent,
            owner_total: 1_440_000_000,
            miner_totals: BTreeMap::from([(key(0xa1), 2_000_000_000), (key(0xb2), 1_000_000_000)]),
            validator_totals: BTreeMap::from([
                (key(0x11), 2_000_000_000),
                (key(0x22), 1_280_000_000),
            ]),
            refused: BTreeMap::new(),
            catching_up_from: None,
            registered_miners: 2,
            max_miners: 256,
            registrations_refused: BTreeMap::new(),
            registrations_pending: 0,
        }),
        court: Some(CourtStatus {
            claims_open: 3,
            claims_total: 9,
            disputes_open: 1,
            disputes: vec![
                DisputeStatus {
                    id: key(0x31),
                    claim: key(0x41),
                    claimant: key(0xc1),
                    challenger: key(0xd1),
                    stage: "round 1".into(),
                    rounds: 1,
                    lo: 781,
                    hi: 1_562,
                    deadline_ms: Some(NOW + 6_500),
                    opened_ms: NOW - 3_000,
                    ..Default::default()
                },
                DisputeStatus {
                    id: key(0x32),
                    claim: key(0x42),
                    claimant: key(0xc2),
                    challenger: key(0xd1),
                    stage: "final".into(),
                    rounds: 1,
                    opened_ms: NOW - 30_000,
                    verdict: Some("claimant_wrong".into()),
                    final_verdict: Some("claimant_wrong".into()),
                    segment: Some(5),
                    prover: Some(key(0xa1)),
                    ms_to_verdict: Some(453),
                    slashed: 100,
                    ..Default::default()
                },
            ],
            burned: 40,
            balance: Some(1_000_200),
            ..Default::default()
        }),
        log: vec![LogLine {
            at_ms: NOW - 12_000,
            level: "WARN".into(),
            target: "validator".into(),
            message: "misconduct miner=c3c3c3c3 outcome=Invalid".into(),
        }],
        ceremony: None,
    }
}

fn live_app() -> App {
    let mut app = App::new(vec!["127.0.0.1:9100".into()]);
    // Two snapshots so the score trend has more than one sample.
    let mut first = fixture();
    first.at_ms -= 1_000;
    for r in &mut first.validator.as_mut().expect("validator").rankings {
        r.score *= 0.5;
    }
    app.on_feed(0, Feed::Status(Box::new(first)), NOW - 1_000);
    app.on_feed(0, Feed::Status(Box::new(fixture())), NOW);
    app.now_ms = NOW;
    app
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| provnet_tui::ui::render(app, f)).expect("draws");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, app: &App) {
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let got = screen(app, w, h);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(format!("{name}_{w}x{h}.txt"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &got).expect("writing the snapshot");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it. Rendered:\n{got}",
                path.display()
            )
        });
        assert_eq!(
            got,
            want,
            "{} differs (UPDATE_SNAPSHOTS=1 to accept). Rendered:\n{got}",
            path.display()
        );
    }
}

fn tab(app: &App, t: Tab) -> App {
    let mut a = app.clone();
    a.tab = t;
    a
}

#[test]
fn every_tab_renders_as_committed() {
    let app = live_app();
    check("rankings", &app);
    check("rewards", &tab(&app, Tab::Rewards));
    check("challenges", &tab(&app, Tab::Challenges));
    check("disputes", &tab(&app, Tab::Disputes));
    check("peers", &tab(&app, Tab::Peers));
    check("log", &tab(&app, Tab::Log));
}

#[test]
fn the_detail_and_help_overlays_render_as_committed() {
    let mut app = live_app();
    app.apply(Action::Down);
    app.apply(Action::Down);
    app.apply(Action::Open);
    assert!(app.detail);
    check("detail", &app);
    let mut app = live_app();
    app.apply(Action::Help);
    check("help", &app);
}

#[test]
fn a_node_that_goes_away_shows_disconnected_and_keeps_its_last_data() {
    let mut app = live_app();
    app.on_feed(0, Feed::Error("connection refused".into()), NOW + 1_000);
    app.now_ms = NOW + 6_000;
    assert!(
        matches!(app.source().conn, Conn::Disconnected { since_ms, .. } if since_ms == NOW + 1_000)
    );
    assert!(app.status().is_some(), "the last snapshot is kept");
    check("disconnected", &app);
    // A second failure keeps the first failure's time; a snapshot brings it back.
    app.on_feed(0, Feed::Error("connection refused".into()), NOW + 2_000);
    assert!(
        matches!(app.source().conn, Conn::Disconnected { since_ms, .. } if since_ms == NOW + 1_000)
    );
    app.on_feed(0, Feed::Status(Box::new(fixture())), NOW + 3_000);
    assert_eq!(app.source().conn, Conn::Live);

    let mut never = App::new(vec!["127.0.0.1:1".into()]);
    never.on_feed(0, Feed::Error("connection refused".into()), NOW);
    never.now_ms = NOW;
    check("never_connected", &never);
}

#[test]
fn a_node_in_its_setup_ceremony_says_where_it_stands() {
    // Before its roles start: peers and gossip, no roles' data yet.
    let s = NodeStatus {
        ceremony: Some("digits_mlp: slot 2 of 3, round 0 (1 accepted, 0 skipped)".into()),
        validator: None,
        ledger: None,
        court: None,
        miner: None,
        challenger: None,
        ..fixture()
    };
    let mut app = App::new(vec!["127.0.0.1:9102".into()]);
    app.on_feed(0, Feed::Status(Box::new(s)), NOW);
    app.now_ms = NOW;
    let text = screen(&app, 160, 48);
    assert!(
        text.contains("setup ceremony: digits_mlp: slot 2 of 3"),
        "{text}"
    );
    check("ceremony", &app);
}

#[test]
fn a_miner_only_node_renders_its_prover_instead_of_rankings() {
    let mut s = fixture();
    s.roles = vec!["miner".into()];
    s.validator = None;
    s.ledger = None;
    s.miner = Some(MinerStatus {
        queue_depth: 3,
        queue_capacity: 64,
        in_flight: 1,
        threads: 2,
        max_concurrent: 1,
        proved: 410,
        failed: 0,
        dropped_expired: 2,
        prove_ms_p50: Some(18.25),
        prove_ms_p95: Some(30.5),
        published: 410,
        backend: "cuda".into(),
        ..Default::default()
    });
    let mut app = App::new(vec!["127.0.0.1:9101".into()]);
    app.on_feed(0, Feed::Status(Box::new(s)), NOW);
    app.now_ms = NOW;
    check("miner_only", &app);
    check("miner_only_rewards", &tab(&app, Tab::Rewards));
}

fn press(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn keys_switch_tabs_sort_select_open_and_quit() {
    let mut app = live_app();
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Rewards);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab, Tab::Log, "Shift-Tab wraps around");
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Rankings);
    press(&mut app, KeyCode::Char('5'));
    assert_eq!(app.tab, Tab::Peers, "the number in the tab bar jumps there");
    press(&mut app, KeyCode::Char('1'));

    // Default: by weight, biggest first.
    let order = |a: &App| -> Vec<String> {
        a.rankings()
            .iter()
            .map(|r| r.miner[..2].to_string())
            .collect()
    };
    assert_eq!(order(&app), ["a1", "b2", "c3"]);
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Consensus);
    while app.sort != SortKey::Latency {
        press(&mut app, KeyCode::Char('s'));
    }
    // Fastest first; a miner with no valid proof has no latency and goes last.
    assert_eq!(order(&app), ["a1", "b2", "c3"]);
    press(&mut app, KeyCode::Char('S'));
    assert_eq!(order(&app), ["c3", "b2", "a1"]);
    while app.sort != SortKey::Invalid {
        press(&mut app, KeyCode::Char('s'));
    }
    assert!(!app.reversed, "a new column starts in its natural order");
    assert_eq!(order(&app)[2], "c3");

    // Selection moves and stops at the ends; Enter opens that miner.
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected[Tab::Rankings.index()], 2);
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected[Tab::Rankings.index()], 1);
    press(&mut app, KeyCode::Enter);
    assert!(app.detail);
    assert_eq!(app.selected_miner().expect("selected").miner, key(0xb2));
    press(&mut app, KeyCode::Esc);
    assert!(!app.detail);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.selected[Tab::Rankings.index()], 2);

    // Help swallows movement; q quits from anywhere.
    press(&mut app, KeyCode::Char('?'));
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Rankings);
    press(&mut app, KeyCode::Char('?'));
    assert!(!app.help);
    assert!(!app.quit);
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
    let mut app = live_app();
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn nodes_switch_and_selection_follows_the_data() {
    let mut app = App::new(vec!["a".into(), "b".into()]);
    app.on_feed(0, Feed::Status(Box::new(fixture())), NOW);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.selected[0], 2);
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.current, 1);
    assert!(app.status().is_none());
    assert_eq!(app.selected[0], 0, "no rows on a node without data");
    press(&mut app, KeyCode::Char('p'));
    assert_eq!(app.current, 0);
    // Fewer rows than the selection: it follows down.
    let mut fewer = fixture();
    fewer
        .validator
        .as_mut()
        .expect("validator")
        .rankings
        .truncate(1);
    press(&mut app, KeyCode::Char('G'));
    app.on_feed(0, Feed::Status(Box::new(fewer)), NOW + 1_000);
    assert_eq!(app.selected[0], 0);
    // A feed for a node that does not exist changes nothing.
    app.on_feed(9, Feed::Error("x".into()), NOW);
}

#[test]
fn score_trends_take_one_sample_per_fresh_snapshot() {
    let mut app = App::new(vec!["a".into()]);
    for i in 0..3 {
        let mut s = fixture();
        s.at_ms = NOW + i * 1_000;
        app.on_feed(0, Feed::Status(Box::new(s.clone())), NOW);
        // The same snapshot polled twice adds nothing.
        app.on_feed(0, Feed::Status(Box::new(s)), NOW);
    }
    assert_eq!(app.source().trend[&key(0xa1)].len(), 3);
    assert_eq!(
        provnet_tui::ui::sparkline([0.0, 0.5, 1.0].into_iter(), 8),
        "▁▅█"
    );
    assert_eq!(provnet_tui::ui::sparkline([0.0, 0.0].into_iter(), 8), "▁▁");
}

#[test]
fn tiny_and_odd_terminals_do_not_panic() {
    let mut app = live_app();
    for (w, h) in [(1u16, 1u16), (20, 5), (79, 23), (300, 10), (40, 100)] {
        for t in Tab::ALL {
            app.tab = t;
            for (detail, help) in [(false, false), (true, false), (false, true)] {
                app.detail = detail && t == Tab::Rankings;
                app.help = help;
                let _ = screen(&app, w, h);
            }
        }
    }
}
