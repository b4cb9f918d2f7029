//! Real swarms on 127.0.0.1 with ephemeral ports: discovery from one bootstrap address,
//! delivery to every subscriber, and bad messages stopped at the first hop.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use provnet_p2p::{spawn, Multiaddr, NetEvent, NetworkConfig, NetworkHandle, Received};
use provnet_wire::{
    unix_ms, Announce, Challenge, Envelope, Kind, Message, Network, RejectReason, Topic,
    WeightsCommit,
};
use tokio::sync::broadcast;

const NETUID: u16 = 42;
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(30);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `pred` until it holds, failing the test with `what` after [`WAIT`].
async fn wait_for<F, Fut>(what: &str, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pred().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Node {
    key: SigningKey,
    net: NetworkHandle,
    inbox: broadcast::Receiver<NetEvent>,
    got: Vec<Arc<Received>>,
    addr: Multiaddr,
}

impl Node {
    async fn start(cfg: NetworkConfig) -> Node {
        Node::start_with(SigningKey::generate(&mut rand::rngs::OsRng), cfg).await
    }

    async fn start_with(key: SigningKey, cfg: NetworkConfig) -> Node {
        let (net, _task) = spawn(key.clone(), cfg).await.expect("network starts");
        let inbox = net.subscribe();
        let ready = net.wait_ready(WAIT).await.expect("listening");
        let addr = ready.listen_addrs[0].parse().expect("multiaddr");
        Node {
            key,
            net,
            inbox,
            got: Vec::new(),
            addr,
        }
    }

    /// Two honest nodes, B dialed into A, once they are connected.
    async fn pair() -> (Node, Node) {
        let a = Node::honest(None).await;
        let b = Node::honest(Some(&a.addr)).await;
        wait_for("A and B to connect", || {
            let b = &b;
            async move { b.connected().await == 1 }
        })
        .await;
        (a, b)
    }

    async fn honest(bootstrap: Option<&Multiaddr>) -> Node {
        let mut cfg = NetworkConfig::loopback(NETUID);
        cfg.bootstrap = bootstrap.into_iter().cloned().collect();
        Node::start(cfg).await
    }

    /// A peer outside the DHT that talks only to `target`.
    async fn attacker(target: &Multiaddr) -> Node {
        let mut cfg = NetworkConfig::loopback(NETUID);
        cfg.bootstrap = vec![target.clone()];
        cfg.kademlia = false;
        Node::start(cfg).await
    }

    fn drain(&mut self) {
        while let Ok(ev) = self.inbox.try_recv() {
            if let NetEvent::Message(m) = ev {
                self.got.push(m);
            }
        }
    }

    fn challenges_from(&mut self, sender: &SigningKey) -> Vec<Challenge> {
        self.drain();
        let sender = sender.verifying_key().to_bytes();
        self.got
            .iter()
            .filter(|m| m.verified.sender == sender)
            .filter_map(|m| match &m.verified.message {
                Message::Challenge(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    async fn has_peer(&self, peer_id: &str) -> bool {
        let peers = self.net.peers().await.unwrap_or_default();
        peers.iter().any(|p| p.peer_id == peer_id)
    }

    async fn connected(&self) -> usize {
        self.net.peers().await.map(|p| p.len()).unwrap_or(0)
    }

    async fn rejected(&self, reason: RejectReason) -> u64 {
        self.net
            .status()
            .await
            .expect("status")
            .received
            .rejected(reason)
    }

    async fn total_rejected(&self) -> u64 {
        self.net
            .status()
            .await
            .expect("status")
            .received
            .total_rejected()
    }

    async fn score_of(&self, other: &Node) -> Option<f64> {
        let id = other.net.peer_id().to_string();
        let peers = self.net.peers().await.ok()?;
        peers.into_iter().find(|p| p.peer_id == id)?.gossip_score
    }

    /// Publishes, retrying while no peer has joined the topic yet.
    async fn publish(&self, msg: Message) {
        wait_for("a peer on the topic to publish to", || {
            let (net, msg) = (self.net.clone(), msg.clone());
            async move { net.publish(msg).await.is_ok() }
        })
        .await;
    }

    async fn publish_raw(&self, topic: Topic, bytes: Vec<u8>) {
        wait_for("a peer on the topic to publish raw bytes to", || {
            let net = self.net.clone();
            let b = bytes.clone();
            async move { net.publish_raw(topic, b).await.is_ok() }
        })
        .await;
    }
}

fn now() -> u64 {
    unix_ms(SystemTime::now())
}

fn challenge(tag: u8) -> Challenge {
    Challenge {
        model_id: [7; 32],
        segment: 0,
        input: vec![i64::from(tag), -3, 5],
        nonce: [tag; 32],
        deadline_ms: now() + 60_000,
        request: None,
    }
}

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test ran past its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_from_one_bootstrap_deliver_every_message() {
    init_logs();
    within(async {
        let boot = Node::honest(None).await;
        let mut nodes = vec![boot];
        let addr = nodes[0].addr.clone();
        for _ in 0..4 {
            nodes.push(Node::honest(Some(&addr)).await);
        }
        // Discovery: from one bootstrap address, kademlia introduces everyone.
        for (i, n) in nodes.iter().enumerate() {
            wait_for(&format!("node {i} to connect to all 4 others"), || async {
                n.connected().await == 4
            })
            .await;
        }
        for (i, n) in nodes.iter().enumerate() {
            n.publish(Message::Challenge(challenge(i as u8))).await;
        }
        let keys: Vec<SigningKey> = nodes.iter().map(|n| n.key.clone()).collect();
        for (i, n) in nodes.iter_mut().enumerate() {
            for (j, k) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                wait_for(&format!("node {i} to receive node {j}'s challenge"), || {
                    let got = n.challenges_from(k);
                    async move { got.len() == 1 && got[0].nonce == [j as u8; 32] }
                })
                .await;
            }
            let from_peers: Vec<_> = n
                .got
                .iter()
                .filter(|m| m.topic == Topic::Challenge)
                .collect();
            assert_eq!(
                from_peers.len(),
                4,
                "node {i} got each challenge exactly once"
            );
            for m in &from_peers {
                let pk = provnet_p2p::identity::public_key(&m.from).expect("ed25519 peer id");
                assert_eq!(pk, m.verified.sender, "the PeerId names the signer");
            }
            assert_eq!(n.total_rejected().await, 0);
        }
        for n in &nodes {
            n.net.shutdown().await;
        }
    })
    .await;
}

/// One bad message per case, each from a fresh attacker that is connected to node A only.
enum Bad {
    ForgedSignature,
    ForeignNetuid,
    ForeignGenesis,
    Stale,
    Replay,
    Oversize,
    Garbage,
}

fn craft(bad: &Bad, key: &SigningKey) -> (RejectReason, Topic, Vec<Vec<u8>>) {
    let payload = Message::Challenge(challenge(200))
        .encode()
        .expect("encodes");
    let seal = |netuid, ts, seq, payload: Vec<u8>| {
        Envelope::seal(key, Network::dev(netuid), Kind::Challenge, ts, seq, payload)
    };
    let t = Topic::Challenge;
    match bad {
        Bad::ForgedSignature => {
            let mut env = seal(NETUID, now(), 1, payload);
            env.signature[0] ^= 0x40;
            (RejectReason::BadSignature, t, vec![env.encode().unwrap()])
        }
        Bad::ForeignNetuid => {
            let env = seal(NETUID + 1, now(), 1, payload);
            (RejectReason::ForeignNetuid, t, vec![env.encode().unwrap()])
        }
        Bad::ForeignGenesis => {
            let mut env = seal(NETUID, now(), 1, payload);
            env.genesis = *b"othernet";
            env.sign(key);
            (RejectReason::ForeignGenesis, t, vec![env.encode().unwrap()])
        }
        Bad::Stale => {
            let env = seal(NETUID, now() - 10 * 60_000, 1, payload);
            (RejectReason::Stale, t, vec![env.encode().unwrap()])
        }
        Bad::Replay => {
            // The first is honest (and forwarded); the second reuses its sequence number.
            let first = seal(NETUID, now(), 1, payload);
            let other = Message::Challenge(challenge(201)).encode().unwrap();
            let second = seal(NETUID, now(), 1, other);
            let bytes = vec![first.encode().unwrap(), second.encode().unwrap()];
            (RejectReason::Replay, t, bytes)
        }
        Bad::Oversize => {
            let env = seal(
                NETUID,
                now(),
                1,
                vec![0x55; Kind::Challenge.max_payload() + 1],
            );
            (RejectReason::Oversize, t, vec![env.encode().unwrap()])
        }
        Bad::Garbage => {
            let junk: Vec<u8> = (0..300u32).map(|i| (i * 131 % 251) as u8).collect();
            (RejectReason::Malformed, t, vec![junk])
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_stop_at_the_first_hop_and_cost_the_sender_score() {
    init_logs();
    within(async {
        let a = Node::honest(None).await;
        let mut b = Node::honest(Some(&a.addr)).await;
        let mut c = Node::honest(Some(&a.addr)).await;
        for n in [&a, &b, &c] {
            wait_for("the honest nodes to connect", || async {
                n.connected().await >= 2
            })
            .await;
        }
        let cases = [
            Bad::ForgedSignature,
            Bad::ForeignNetuid,
            Bad::ForeignGenesis,
            Bad::Stale,
            Bad::Replay,
            Bad::Oversize,
            Bad::Garbage,
        ];
        let mut rejected_at_a = 0;
        for case in &cases {
            let evil = Node::attacker(&a.addr).await;
            wait_for("the attacker to connect to A", || async {
                evil.connected().await == 1
            })
            .await;
            let (reason, topic, messages) = craft(case, &evil.key);
            let honest_first = matches!(case, Bad::Replay);
            for bytes in messages {
                evil.publish_raw(topic, bytes).await;
            }
            wait_for(
                &format!("A to reject the {} message", reason.as_str()),
                || async { a.rejected(reason).await == 1 },
            )
            .await;
            rejected_at_a += 1;
            wait_for("the attacker's score at A to drop below zero", || async {
                a.score_of(&evil).await.is_some_and(|s| s < 0.0)
            })
            .await;

            // The path through A works: a good message from the attacker reaches B and C.
            // So the bad one's absence there is A's doing.
            evil.publish(Message::Challenge(challenge(150))).await;
            let expected = if honest_first { 2 } else { 1 };
            for (name, n) in [("B", &mut b), ("C", &mut c)] {
                wait_for(
                    &format!("{name} to get the attacker's good message"),
                    || {
                        let got = n.challenges_from(&evil.key);
                        async move { got.len() == expected }
                    },
                )
                .await;
                let got = n.challenges_from(&evil.key);
                assert!(
                    got.iter().all(|ch| ch.nonce != [201; 32]),
                    "{name} received the replayed message"
                );
            }
            evil.net.shutdown().await;
        }
        // A spammer: its third rejected message takes it below the graylist threshold, after
        // which A drops everything it sends without even validating it.
        let spam = Node::attacker(&a.addr).await;
        wait_for("the spammer to connect to A", || async {
            spam.connected().await == 1
        })
        .await;
        let before = a.rejected(RejectReason::Malformed).await;
        for i in 0..3u8 {
            spam.publish_raw(Topic::Challenge, vec![0xf0 | i; 40]).await;
        }
        wait_for("A to reject all three spam messages", || async {
            a.rejected(RejectReason::Malformed).await == before + 3
        })
        .await;
        rejected_at_a += 3;
        wait_for("A to graylist the spammer (score below -80)", || async {
            a.score_of(&spam).await.is_some_and(|s| s < -80.0)
        })
        .await;
        spam.net.shutdown().await;

        assert_eq!(a.total_rejected().await, rejected_at_a);
        assert_eq!(b.total_rejected().await, 0, "nothing bad got past A to B");
        assert_eq!(c.total_rejected().await, 0, "nothing bad got past A to C");
        for n in [&a, &b, &c] {
            n.net.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_over_quic() {
    init_logs();
    within(async {
        let mut cfg = NetworkConfig::loopback(NETUID);
        cfg.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
        let a = Node::start(cfg.clone()).await;
        assert!(a.addr.to_string().contains("/quic-v1/"), "{}", a.addr);
        cfg.bootstrap = vec![a.addr.clone()];
        let mut b = Node::start(cfg).await;
        let announce = Message::Announce(Announce {
            roles: vec![provnet_wire::Role::Miner],
            listen_addrs: vec![],
            software_version: "test".into(),
        });
        a.publish(announce).await;
        let a_key = a.key.verifying_key().to_bytes();
        wait_for("B to receive A's announce over QUIC", || {
            b.drain();
            let got = b.got.iter().any(|m| {
                m.verified.sender == a_key
                    && matches!(&m.verified.message, Message::Announce(x) if x.software_version == "test")
            });
            async move { got }
        })
        .await;
        a.net.shutdown().await;
        b.net.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_requests_reach_the_serving_node_and_others_say_not_serving() {
    init_logs();
    within(async {
        let (a, b) = Node::pair().await;
        let req = provnet_wire::SyncRequest {
            from_epoch: 10,
            to_epoch: 12,
        };
        // A serves nothing yet: B is told so, not left waiting.
        let r = b.net.sync(a.net.peer_id(), req).await.expect("answered");
        assert!(!r.serving && r.envelopes.is_empty());

        // Once A serves, B's request reaches A's handler and A's answer reaches B.
        let mut inbound = a.net.serve_sync(4).await.expect("serving");
        let server = tokio::spawn(async move {
            let got = inbound.recv().await.expect("a request");
            let request = got.request;
            let answer = provnet_wire::SyncResponse {
                serving: true,
                envelopes: vec![provnet_wire::sync::ByteBuf::from(vec![
                    request.from_epoch
                        as u8;
                    3
                ])],
                more_from: Some(request.to_epoch + 1),
            };
            got.reply.send(answer).expect("B waits");
            // A second request is left unanswered: it goes out as "not serving".
            let ignored = inbound.recv().await.expect("a second request");
            drop(ignored);
            request
        });
        let r = b.net.sync(a.net.peer_id(), req).await.expect("answered");
        assert!(r.serving);
        assert_eq!(
            r.envelopes,
            vec![provnet_wire::sync::ByteBuf::from(vec![10u8; 3])]
        );
        assert_eq!(r.more_from, Some(13));
        let r = b.net.sync(a.net.peer_id(), req).await.expect("answered");
        assert!(!r.serving);
        assert_eq!(server.await.expect("server task"), req);

        // Three requests so far; a peer gets 16 answers a minute, then "not serving".
        let mut inbound = a.net.serve_sync(4).await.expect("serving");
        tokio::spawn(async move {
            while let Some(got) = inbound.recv().await {
                let answer = provnet_wire::SyncResponse {
                    serving: true,
                    ..Default::default()
                };
                let _ = got.reply.send(answer);
            }
        });
        let mut served = 0;
        for _ in 0..14 {
            let r = b.net.sync(a.net.peer_id(), req).await.expect("answered");
            served += usize::from(r.serving);
        }
        assert_eq!(served, 13, "the 17th request in a minute was served");

        // A peer that is not connected is an error at once.
        let stranger = provnet_p2p::PeerId::random();
        let e = b.net.sync(stranger, req).await.unwrap_err();
        assert!(e.to_string().contains("not connected"), "{e}");
        a.net.shutdown().await;
        b.net.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referee_fetches_a_leaf_state_from_the_node_that_holds_it() {
    use provnet_wire::{LeafRequest, LeafResponse, LeafState};
    init_logs();
    within(async {
        let (a, b) = Node::pair().await;
        let req = LeafRequest {
            dispute_id: [9; 32],
            cut: 5,
        };
        // A serves no leaf states yet: B gets none, at once.
        let r = b.net.leaf(a.net.peer_id(), req).await.expect("answered");
        assert_eq!(r, LeafResponse::default());

        // A serves: the state for the dispute it holds, none for another.
        let mut inbound = a.net.serve_leaf(4).await.expect("serving");
        tokio::spawn(async move {
            while let Some(got) = inbound.recv().await {
                let state = (got.request.dispute_id == [9; 32]).then(|| LeafState {
                    dispute_id: got.request.dispute_id,
                    cut: got.request.cut,
                    tensors: vec![vec![-3, 4, i64::from(got.request.cut)]],
                });
                let _ = got.reply.send(LeafResponse { state });
            }
        });
        let r = b.net.leaf(a.net.peer_id(), req).await.expect("answered");
        let state = r.state.expect("A holds it");
        assert_eq!((state.cut, state.tensors), (5, vec![vec![-3, 4, 5]]));
        let other = LeafRequest {
            dispute_id: [8; 32],
            ..req
        };
        let r = b.net.leaf(a.net.peer_id(), other).await.expect("answered");
        assert_eq!(r.state, None);

        // A peer nobody knows an address for cannot be dialed: an error, not a hang.
        let stranger = provnet_p2p::PeerId::random();
        let e = b.net.leaf(stranger, req).await.unwrap_err();
        assert!(e.to_string().contains("leaf request"), "{e}");
        a.net.shutdown().await;
        b.net.shutdown().await;
    })
    .await;
}

/// Two ordinary peers dial `hub` and stay; a third is refused. Returns all three (kept
/// alive by the caller).
async fn two_in_and_a_third_refused(hub: &Node) -> [Node; 3] {
    let a = Node::attacker(&hub.addr).await;
    let b = Node::attacker(&hub.addr).await;
    within(wait_for("two peers in", || async {
        hub.connected().await == 2
    }))
    .await;
    let c = Node::attacker(&hub.addr).await;
    within(wait_for("the third refused", || async {
        hub.net.status().await.expect("status").connections_refused >= 1
    }))
    .await;
    [a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_slots_keep_room_for_validators_when_other_peers_fill_the_rest() {
    init_logs();
    let validator = SigningKey::generate(&mut rand::rngs::OsRng);
    let validator_peer =
        provnet_p2p::identity::peer_id(&validator.verifying_key().to_bytes()).expect("peer id");
    let mut cfg = NetworkConfig::loopback(NETUID);
    cfg.max_connections = 4;
    cfg.reserved_slots = 2;
    cfg.reserved_peers = vec![validator_peer];
    cfg.kademlia = false;
    let hub = Node::start(cfg).await;
    // A third ordinary peer finds only reserved slots left.
    let _attackers = two_in_and_a_third_refused(&hub).await;
    assert_eq!(hub.connected().await, 2);
    // The validator still gets in.
    let mut vcfg = NetworkConfig::loopback(NETUID);
    vcfg.bootstrap = vec![hub.addr.clone()];
    vcfg.kademlia = false;
    let _v = Node::start_with(validator, vcfg).await;
    let want = validator_peer.to_string();
    within(wait_for("the validator connected", || hub.has_peer(&want))).await;
    assert_eq!(hub.connected().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_wait_for_a_ledger_subscriber_that_falls_behind_and_none_is_dropped() {
    init_logs();
    let hub = Node::honest(None).await;
    // A one-slot channel nobody reads yet: the subscriber is stalled.
    let mut ledger = hub.net.subscribe_ledger(1).await.expect("subscribe");
    let validator = Node::honest(Some(&hub.addr)).await;
    const SENT: u64 = 40;
    for epoch in 1..=SENT {
        validator
            .publish(Message::WeightsCommit(WeightsCommit {
                epoch,
                commitment: [epoch as u8; 32],
            }))
            .await;
    }
    within(wait_for("the hub to hold every commit", || async {
        hub.net.status().await.expect("status").ledger_backlog == SENT - 1
    }))
    .await;
    // The subscriber wakes: every commit arrives, in the order sent.
    let mut epochs = Vec::new();
    while epochs.len() < SENT as usize {
        let m = within(ledger.recv()).await.expect("the channel stays open");
        match &m.verified.message {
            Message::WeightsCommit(c) => epochs.push(c.epoch),
            other => panic!("not a commit: {other:?}"),
        }
    }
    assert_eq!(epochs, (1..=SENT).collect::<Vec<_>>());
    let status = hub.net.status().await.expect("status");
    assert_eq!((status.ledger_backlog, status.ledger_dropped), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_dial_in_leave_room_for_the_peers_a_node_dials() {
    init_logs();
    let mut cfg = NetworkConfig::loopback(NETUID);
    cfg.max_inbound = 2;
    cfg.kademlia = false;
    let hub = Node::start(cfg).await;
    let _attackers = two_in_and_a_third_refused(&hub).await;
    // The inbound slots are full, yet the hub still dials out.
    let mut other = NetworkConfig::loopback(NETUID);
    other.kademlia = false;
    let out = Node::start(other).await;
    hub.net.dial(out.addr.clone()).await.expect("dial");
    let want = out.net.peer_id().to_string();
    within(wait_for("the dialed peer connected", || {
        hub.has_peer(&want)
    }))
    .await;
    assert_eq!(hub.connected().await, 3);
}
