//! The task that owns the swarm: commands in, swarm events, a housekeeping tick.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::SigningKey;
use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use provnet_wire::{
    unix_ms, Announce, Gate, GossipStatus, Message, PeerStatus, RejectionRecord, Signer, Topic,
    Verdict,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::behaviour::{kad_protocol, Behaviour, BehaviourEvent};
use crate::handle::{Command, NetEvent, NetworkHandle, Ready, Received};
use crate::rpc::{CeremonyRpc, CourtRpc, Endpoint, LeafRpc, Rpc, SyncRpc};
use crate::{identity, NetworkConfig, P2pError};

const COMMAND_BUFFER: usize = 256;
const RECENT_REJECTIONS: usize = 64;
const TICK: Duration = Duration::from_millis(250);
/// Registrations waiting for a ledger subscriber that fell behind, at most.
const LEDGER_BACKLOG_REGISTRATIONS: usize = 4_096;
/// Ledger messages waiting in all, at most: weights come only from genesis validators,
/// one commit and one reveal an epoch each, so a live subscriber never lets this fill
/// (it is the last bound, for one that has stopped taking messages altogether).
const LEDGER_BACKLOG_MAX: usize = 65_536;
/// Least time between two Announces prompted by peers subscribing.
const ANNOUNCE_SPACING: Duration = Duration::from_secs(1);
/// How often to refresh the DHT routing table while connected.
const KAD_REFRESH: Duration = Duration::from_secs(300);
/// With fewer peers than this, the DHT is walked again every [`KAD_REFRESH_FEW`]: a node
/// that bootstrapped before its bootstrap peer knew anyone else would otherwise wait
/// [`KAD_REFRESH`] to find the rest of a small network.
const KAD_FEW_PEERS: usize = 8;
const KAD_REFRESH_FEW: Duration = Duration::from_secs(10);
/// Sync requests answered per peer a minute; more are told "not serving". A node catching
/// up asks a handful; each answer may read megabytes from the store.
const SYNC_PER_MINUTE: u32 = 16;
/// Leaf requests answered per peer a minute: a referee asks each side of a dispute once,
/// and again only when an answer failed.
const LEAF_PER_MINUTE: u32 = 64;
/// Ceremony chunks answered per peer a minute: a megabyte each, so a peer fetches about
/// 17 MB/s of steps from one node.
const BLOB_PER_MINUTE: u32 = 1024;

/// Starts the network: builds the swarm, binds every listen address, joins the topics,
/// dials the bootstrap peers, and spawns the task that owns it all. Call inside a tokio
/// runtime. The task ends on [`NetworkHandle::shutdown`] or when every handle is dropped.
pub async fn spawn(
    key: SigningKey,
    cfg: NetworkConfig,
) -> Result<(NetworkHandle, JoinHandle<()>), P2pError> {
    let keypair = identity::keypair(&key);
    let behaviour = Behaviour::new(&keypair, &cfg)?;
    let idle = cfg.idle_timeout;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Build(e.to_string()))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| P2pError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();

    let mut listeners = HashMap::new();
    for addr in &cfg.listen {
        refuse_taken_port(addr)?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id, Vec::new());
    }
    if listeners.is_empty() {
        return Err(P2pError::Config("no listen address".into()));
    }
    for topic in Topic::ALL {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(topic.name(cfg.netuid)))
            .map_err(|e| P2pError::Build(format!("subscribing to {}: {e}", topic.as_str())))?;
    }

    let (commands, cmd_rx) = mpsc::channel(COMMAND_BUFFER);
    let (events, _) = broadcast::channel(cfg.event_buffer.max(1));
    let (ready_tx, ready) = watch::channel(None);
    let peer_id = *swarm.local_peer_id();
    let public_key = key.verifying_key().to_bytes();
    let handle = NetworkHandle {
        commands,
        events: events.clone(),
        ready,
        peer_id,
        public_key,
    };
    let now = unix_ms(SystemTime::now());
    let mut service = Service {
        ledger_tx: None,
        ledger_backlog: VecDeque::new(),
        ledger_backlog_registrations: 0,
        ledger_dropped: 0,
        connections_refused: 0,
        sync: Endpoint::new(SYNC_PER_MINUTE),
        leaf: Endpoint::new(LEAF_PER_MINUTE),
        court: Endpoint::new(SYNC_PER_MINUTE),
        ceremony: Endpoint::new(BLOB_PER_MINUTE),
        gate: Gate::new(cfg.network(), public_key, cfg.gate.clone())
            .with_admission(cfg.admission.clone()),
        signer: Signer::new(key, cfg.network(), now),
        swarm,
        listeners,
        cmd_rx,
        events,
        ready_tx,
        peers: HashMap::new(),
        published: 0,
        publish_failures: 0,
        recent_rejections: VecDeque::new(),
        announce_due: true,
        last_announce: None,
        last_redial: Instant::now(),
        last_kad_bootstrap: Instant::now(),
        cfg,
    };
    for addr in service.cfg.bootstrap.clone() {
        service.dial_bootstrap(addr);
    }
    let task = tokio::spawn(async move { service.run().await });
    Ok((handle, task))
}

struct PeerEntry {
    address: Multiaddr,
    /// This node dialed it (outbound), rather than it us.
    dialed: bool,
    since_ms: u64,
    agent: Option<String>,
    roles: Vec<String>,
}

struct Service {
    cfg: NetworkConfig,
    swarm: Swarm<Behaviour>,
    gate: Gate,
    signer: Signer,
    listeners: HashMap<ListenerId, Vec<Multiaddr>>,
    cmd_rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<NetEvent>,
    ready_tx: watch::Sender<Option<Ready>>,
    peers: HashMap<PeerId, PeerEntry>,
    published: u64,
    publish_failures: u64,
    recent_rejections: VecDeque<RejectionRecord>,
    announce_due: bool,
    last_announce: Option<Instant>,
    last_redial: Instant,
    last_kad_bootstrap: Instant,
    /// Where weights and registrations go, when someone subscribed (never the lossy bus).
    ledger_tx: Option<mpsc::Sender<Arc<Received>>>,
    /// Ledger messages the subscriber has not taken yet, in arrival order (see
    /// [`Service::send_to_ledger`]).
    ledger_backlog: VecDeque<Arc<Received>>,
    /// How many of those are registrations (bounded by [`LEDGER_BACKLOG_REGISTRATIONS`]).
    ledger_backlog_registrations: usize,
    ledger_dropped: u64,
    connections_refused: u64,
    /// Weights sync, leaf states and court sync: peers' requests and ours.
    sync: Endpoint<SyncRpc>,
    leaf: Endpoint<LeafRpc>,
    court: Endpoint<CourtRpc>,
    ceremony: Endpoint<CeremonyRpc>,
}

impl Service {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        self.stop();
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                // Sending fails only if the peer gave up waiting; nothing to do then.
                Some((channel, answer)) = self.sync.replies_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, answer);
                }
                Some((channel, answer)) = self.leaf.replies_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().leaf.send_response(channel, answer);
                }
                Some((channel, answer)) = self.court.replies_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().court.send_response(channel, answer);
                }
                Some((channel, answer)) = self.ceremony.replies_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().ceremony.send_response(channel, answer);
                }
                permit = reserve(self.ledger_tx.clone()), if !self.ledger_backlog.is_empty() => {
                    self.drain_ledger(permit);
                }
                _ = tick.tick() => self.housekeeping(),
            }
        }
        self.stop();
    }

    /// Hands a weights message or registration to the ledger subscriber. When its channel
    /// is full the message waits in the backlog, in order, and goes as soon as the
    /// subscriber takes one (backpressure, never a silent drop: the network loop itself
    /// never waits on the subscriber, which may be waiting on the network). Only genesis
    /// validators may send weights, one commit and one reveal an epoch each past the gate,
    /// so weights are kept; registrations come from anyone who paid the work, so past
    /// [`LEDGER_BACKLOG_REGISTRATIONS`] waiting a newer one is dropped and counted.
    fn send_to_ledger(&mut self, received: Arc<Received>) {
        let Some(tx) = &self.ledger_tx else { return };
        if self.ledger_backlog.is_empty() {
            match tx.try_send(received) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.ledger_tx = None;
                    return;
                }
                Err(mpsc::error::TrySendError::Full(r)) => return self.hold_for_ledger(r),
            }
        }
        self.hold_for_ledger(received);
    }

    fn hold_for_ledger(&mut self, received: Arc<Received>) {
        let registration = matches!(
            received.verified.message,
            provnet_wire::Message::Register(_)
        );
        let full = if registration {
            self.ledger_backlog_registrations >= LEDGER_BACKLOG_REGISTRATIONS
        } else {
            self.ledger_backlog.len() >= LEDGER_BACKLOG_MAX
        };
        if full {
            self.ledger_dropped += 1;
            warn!(target: "p2p::gossip", dropped = self.ledger_dropped, waiting = self.ledger_backlog.len(), registration, "the ledger subscriber is far behind: a message past the backlog's bound was dropped");
            return;
        }
        if self.ledger_backlog.is_empty() {
            info!(target: "p2p::gossip", "the ledger subscriber is behind: weights messages and registrations wait for it");
        }
        self.ledger_backlog_registrations += usize::from(registration);
        self.ledger_backlog.push_back(received);
    }

    /// One slot freed on the ledger channel: the oldest waiting message takes it.
    fn drain_ledger(&mut self, permit: Option<mpsc::OwnedPermit<Arc<Received>>>) {
        let Some(permit) = permit else {
            // The subscriber is gone: nothing will take these.
            self.ledger_tx = None;
            self.ledger_backlog.clear();
            self.ledger_backlog_registrations = 0;
            return;
        };
        if let Some(r) = self.ledger_backlog.pop_front() {
            if matches!(r.verified.message, provnet_wire::Message::Register(_)) {
                self.ledger_backlog_registrations -= 1;
            }
            permit.send(r);
        }
    }

    fn stop(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        info!(target: "p2p::swarm", peer_id = %self.swarm.local_peer_id(), "network stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(msg, reply) => {
                let topic = Topic::of(msg.kind());
                let now = unix_ms(SystemTime::now());
                // Our own messages obey the rules peers apply: one that would be refused
                // is never sent (and never costs us their score).
                let result = msg
                    .check(now)
                    .and_then(|()| self.signer.seal(&msg, now))
                    .map_err(P2pError::from)
                    .and_then(|bytes| self.publish_bytes(topic, bytes.clone()).map(|()| bytes));
                let _ = reply.send(result);
            }
            Command::PublishRaw(topic, bytes, reply) => {
                let _ = reply.send(self.publish_bytes(topic, bytes));
            }
            Command::Dial(addr, reply) => {
                let result = self.swarm.dial(addr.clone()).map_err(|e| P2pError::Dial {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_statuses());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::ServeSync(server, done) => {
                self.sync.serve(server);
                let _ = done.send(());
            }
            Command::ServeLeaf(server, done) => {
                self.leaf.serve(server);
                let _ = done.send(());
            }
            Command::ServeCourt(server, done) => {
                self.court.serve(server);
                let _ = done.send(());
            }
            Command::ServeBlobs(server, done) => {
                self.ceremony.serve(server);
                let _ = done.send(());
            }
            Command::Blob(peer, request, reply) => {
                let b = &mut self.swarm.behaviour_mut().ceremony;
                self.ceremony.send(b, peer, request, reply);
            }
            Command::SubscribeLedger(tx, done) => {
                self.ledger_tx = Some(tx);
                let _ = done.send(());
            }
            Command::Sync(peer, request, reply) => {
                if let Err(e) = self.connected::<SyncRpc>(&peer) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let b = &mut self.swarm.behaviour_mut().sync;
                self.sync.send(b, peer, request, reply);
            }
            Command::CourtSync(peer, request, reply) => {
                if let Err(e) = self.connected::<CourtRpc>(&peer) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let b = &mut self.swarm.behaviour_mut().court;
                self.court.send(b, peer, request, reply);
            }
            Command::Leaf(peer, request, reply) => {
                // Dials the peer when not connected, at the addresses the DHT and
                // identify gave.
                let b = &mut self.swarm.behaviour_mut().leaf;
                self.leaf.send(b, peer, request, reply);
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    /// Catching up asks connected peers only: an error at once for any other.
    fn connected<R: Rpc>(&self, peer: &PeerId) -> Result<(), P2pError> {
        match self.swarm.is_connected(peer) {
            true => Ok(()),
            false => Err(P2pError::Request {
                protocol: R::NAME,
                peer: peer.to_string(),
                reason: "not connected".into(),
            }),
        }
    }

    fn publish_bytes(&mut self, topic: Topic, bytes: Vec<u8>) -> Result<(), P2pError> {
        let name = topic.name(self.cfg.netuid);
        let result = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(name.clone()), bytes);
        match result {
            Ok(_) => {
                self.published += 1;
                Ok(())
            }
            Err(e) => {
                self.publish_failures += 1;
                Err(match e {
                    PublishError::NoPeersSubscribedToTopic => P2pError::NoPeers { topic: name },
                    e => P2pError::Publish {
                        topic: name,
                        reason: e.to_string(),
                    },
                })
            }
        }
    }

    fn dial_bootstrap(&mut self, addr: Multiaddr) {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, addr.clone());
            }
        }
        if let Err(e) = self.swarm.dial(addr.clone()) {
            warn!(target: "p2p::swarm", %addr, error = %e, "cannot dial bootstrap peer");
        }
    }

    fn housekeeping(&mut self) {
        if self.peers.is_empty()
            && !self.cfg.bootstrap.is_empty()
            && self.last_redial.elapsed() >= self.cfg.redial
        {
            self.last_redial = Instant::now();
            debug!(target: "p2p::swarm", "no peers: dialling the bootstrap peers again");
            for addr in self.cfg.bootstrap.clone() {
                self.dial_bootstrap(addr);
            }
        }
        let refresh = if self.peers.len() < KAD_FEW_PEERS {
            KAD_REFRESH_FEW
        } else {
            KAD_REFRESH
        };
        if !self.peers.is_empty() && self.last_kad_bootstrap.elapsed() >= refresh {
            self.kad_bootstrap();
        }
        let since = self.last_announce.map(|t| t.elapsed());
        let periodic = since.is_none_or(|s| s >= self.cfg.announce_every);
        let spaced = since.is_none_or(|s| s >= ANNOUNCE_SPACING);
        if (self.announce_due && spaced) || periodic {
            self.announce();
        }
    }

    fn announce(&mut self) {
        let Some(ready) = self.ready_tx.borrow().clone() else {
            return;
        };
        let msg = Message::Announce(Announce {
            roles: self.cfg.roles.clone(),
            listen_addrs: ready.listen_addrs,
            software_version: env!("CARGO_PKG_VERSION").into(),
        });
        let now = unix_ms(SystemTime::now());
        let sent = self
            .signer
            .seal(&msg, now)
            .map_err(P2pError::from)
            .and_then(|bytes| self.publish_bytes(Topic::Announce, bytes));
        self.last_announce = Some(Instant::now());
        match sent {
            Ok(()) => {
                self.announce_due = false;
                debug!(target: "p2p::gossip", "announced");
            }
            Err(P2pError::NoPeers { .. }) => {}
            Err(e) => warn!(target: "p2p::gossip", error = %e, "announce failed"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let full = address
                    .clone()
                    .with_p2p(*self.swarm.local_peer_id())
                    .unwrap_or(address);
                info!(target: "p2p::swarm", address = %full, "listening");
                self.listeners.entry(listener_id).or_default().push(full);
                self.update_ready();
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                let local = *self.swarm.local_peer_id();
                let full = address.clone().with_p2p(local).unwrap_or(address);
                if let Some(addrs) = self.listeners.get_mut(&listener_id) {
                    addrs.retain(|a| *a != full);
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                warn!(target: "p2p::swarm", %error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } if num_established.get() == 1 => self.on_connected(
                peer_id,
                endpoint.get_remote_address().clone(),
                endpoint.is_dialer(),
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                self.peers.remove(&peer_id);
                info!(target: "p2p::swarm", peer = %peer_id, cause = ?cause, "peer disconnected");
                let _ = self.events.send(NetEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(target: "p2p::swarm", peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(target: "p2p::swarm", %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, peer_id: PeerId, address: Multiaddr, dialed: bool) {
        if let Some(why) = self.refuse_connection(&peer_id, &address, dialed) {
            debug!(target: "p2p::swarm", peer = %peer_id, %address, "{why}: disconnecting");
            self.connections_refused += 1;
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        info!(target: "p2p::swarm", peer = %peer_id, %address, "peer connected");
        let first = self.peers.is_empty();
        let since_ms = unix_ms(SystemTime::now());
        let entry = PeerEntry {
            address,
            dialed,
            since_ms,
            agent: None,
            roles: Vec::new(),
        };
        self.peers.insert(peer_id, entry);
        let _ = self.events.send(NetEvent::PeerConnected(peer_id));
        if first {
            self.kad_bootstrap();
        }
    }

    /// Why a new peer may not stay: the unreserved slots are full, those of its direction
    /// (inbound or outbound) are, or its IP address has enough peers. Reserved peers
    /// (genesis validators) always stay.
    fn refuse_connection(
        &self,
        peer: &PeerId,
        address: &Multiaddr,
        dialed: bool,
    ) -> Option<&'static str> {
        if self.cfg.reserved_peers.contains(peer) {
            return None;
        }
        let open = self
            .cfg
            .max_connections
            .saturating_sub(self.cfg.reserved_slots) as usize;
        let unreserved = || {
            self.peers
                .iter()
                .filter(|(p, _)| !self.cfg.reserved_peers.contains(p))
        };
        if unreserved().count() >= open {
            return Some("only reserved slots are left");
        }
        let (same_way, cap, why) = match dialed {
            true => (
                unreserved().filter(|(_, e)| e.dialed).count(),
                self.cfg.max_outbound,
                "enough peers dialed out",
            ),
            false => (
                unreserved().filter(|(_, e)| !e.dialed).count(),
                self.cfg.max_inbound,
                "enough peers dialed in",
            ),
        };
        if same_way >= cap as usize {
            return Some(why);
        }
        let ip = ip_of(address)?;
        if ip.is_loopback() {
            return None;
        }
        let same_ip = self
            .peers
            .iter()
            .filter(|(p, e)| !self.cfg.reserved_peers.contains(p) && ip_of(&e.address) == Some(ip))
            .count();
        (same_ip >= self.cfg.max_peers_per_ip as usize)
            .then_some("too many peers from its IP address")
    }

    fn kad_bootstrap(&mut self) {
        self.last_kad_bootstrap = Instant::now();
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            if let Err(e) = kad.bootstrap() {
                debug!(target: "p2p::swarm", error = %e, "DHT bootstrap not started");
            }
        }
    }

    fn update_ready(&mut self) {
        if self.listeners.values().any(|a| a.is_empty()) {
            return;
        }
        let listen_addrs: Vec<String> = self
            .listeners
            .values()
            .flatten()
            .map(|a| a.to_string())
            .collect();
        let ready = Ready {
            peer_id: self.swarm.local_peer_id().to_string(),
            public_key: hex::encode(self.signer.public_key()),
            netuid: self.cfg.netuid,
            genesis: hex::encode(self.cfg.genesis),
            listen_addrs,
        };
        if let Some(path) = &self.cfg.ready_file {
            if let Err(e) = write_ready_file(path, &ready) {
                warn!(target: "p2p::swarm", error = %e, "cannot write the ready file");
            }
        }
        self.ready_tx.send_replace(Some(ready));
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic }) => {
                debug!(target: "p2p::gossip", peer = %peer_id, %topic, "peer subscribed");
                if topic == IdentTopic::new(Topic::Announce.name(self.cfg.netuid)).hash() {
                    self.announce_due = true;
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.agent = Some(info.agent_version.clone());
                }
                let ours = kad_protocol(self.cfg.netuid);
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    if info.protocols.contains(&ours) {
                        for addr in info.listen_addrs.into_iter().filter(dialable) {
                            kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(target: "p2p::swarm", %peer, %addr, "found by mdns");
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer, addr.clone());
                    }
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            BehaviourEvent::Sync(ev) => {
                self.sync.on_event(&mut self.swarm.behaviour_mut().sync, ev)
            }
            BehaviourEvent::Leaf(ev) => {
                self.leaf.on_event(&mut self.swarm.behaviour_mut().leaf, ev)
            }
            BehaviourEvent::Court(ev) => self
                .court
                .on_event(&mut self.swarm.behaviour_mut().court, ev),
            BehaviourEvent::Ceremony(ev) => self
                .ceremony
                .on_event(&mut self.swarm.behaviour_mut().ceremony, ev),
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                debug!(target: "p2p::swarm", %peer, "routing table updated");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: MessageId, message: gossipsub::Message) {
        let now = unix_ms(SystemTime::now());
        let topic = match Topic::parse(message.topic.as_str()) {
            Some((netuid, topic)) if netuid == self.cfg.netuid => topic,
            _ => {
                debug!(target: "p2p::gossip", peer = %source, topic = %message.topic, "message on a topic we do not serve");
                self.report(&id, &source, MessageAcceptance::Ignore);
                return;
            }
        };
        match self.gate.check(topic, &message.data, now) {
            Verdict::Accept(verified) => {
                self.report(&id, &source, MessageAcceptance::Accept);
                let Some(from) = identity::peer_id(&verified.sender) else {
                    return; // the signature verified, so the key is valid
                };
                if let provnet_wire::Message::Announce(a) = &verified.message {
                    if let Some(p) = self.peers.get_mut(&from) {
                        p.roles = a.roles.iter().map(|r| r.as_str().to_string()).collect();
                    }
                }
                debug!(target: "p2p::gossip", %from, via = %source, kind = verified.message.kind().as_str(), "accepted");
                let received = Received {
                    topic,
                    from,
                    via: source,
                    verified: *verified,
                    raw: message.data,
                    received_at_ms: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64() * 1e3),
                };
                let ledger = matches!(
                    received.verified.message,
                    provnet_wire::Message::WeightsCommit(_)
                        | provnet_wire::Message::WeightsReveal(_)
                        | provnet_wire::Message::Register(_)
                );
                match (&self.ledger_tx, ledger) {
                    (Some(_), true) => self.send_to_ledger(Arc::new(received)),
                    _ => {
                        let _ = self.events.send(NetEvent::Message(Arc::new(received)));
                    }
                }
            }
            Verdict::Ignore(reason) => {
                debug!(target: "p2p::gossip", peer = %source, reason = reason.as_str(), "ignored");
                self.report(&id, &source, MessageAcceptance::Ignore);
            }
            Verdict::Reject(reason, detail) => {
                debug!(target: "p2p::gossip", peer = %source, topic = topic.as_str(), reason = reason.as_str(), %detail, "rejected");
                self.report(&id, &source, MessageAcceptance::Reject);
                if self.recent_rejections.len() == RECENT_REJECTIONS {
                    self.recent_rejections.pop_front();
                }
                self.recent_rejections.push_back(RejectionRecord {
                    at_ms: now,
                    peer: source.to_string(),
                    topic: topic.as_str().into(),
                    reason: reason.as_str().into(),
                    detail,
                });
            }
        }
    }

    fn report(&mut self, id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn peer_statuses(&self) -> Vec<PeerStatus> {
        let gs = &self.swarm.behaviour().gossipsub;
        let topics: HashMap<&PeerId, Vec<String>> = gs
            .all_peers()
            .map(|(p, ts)| {
                let names = ts
                    .iter()
                    .filter_map(|t| Topic::parse(t.as_str()).map(|(_, t)| t.as_str().to_string()))
                    .collect();
                (p, names)
            })
            .collect();
        let mut mesh: HashMap<PeerId, Vec<String>> = HashMap::new();
        for t in gs.topics() {
            let Some((_, topic)) = Topic::parse(t.as_str()) else {
                continue;
            };
            for p in gs.mesh_peers(t) {
                mesh.entry(*p).or_default().push(topic.as_str().to_string());
            }
        }
        let mut out: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(peer, e)| PeerStatus {
                peer_id: peer.to_string(),
                address: e.address.to_string(),
                connected_since_ms: e.since_ms,
                agent: e.agent.clone(),
                roles: e.roles.clone(),
                gossip_score: gs.peer_score(peer),
                topics: topics.get(peer).cloned().unwrap_or_default(),
                mesh: mesh.get(peer).cloned().unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    fn status(&self) -> GossipStatus {
        GossipStatus {
            peer_id: self.swarm.local_peer_id().to_string(),
            netuid: self.cfg.netuid,
            listen_addrs: self
                .ready_tx
                .borrow()
                .as_ref()
                .map(|r| r.listen_addrs.clone())
                .unwrap_or_default(),
            connected_peers: self.peers.len(),
            received: self.gate.counters().clone(),
            published: self.published,
            publish_failures: self.publish_failures,
            recent_rejections: self.recent_rejections.iter().cloned().collect(),
            connections_refused: self.connections_refused,
            ledger_dropped: self.ledger_dropped,
            ledger_backlog: self.ledger_backlog.len() as u64,
        }
    }
}

/// A slot on the ledger channel, once the subscriber frees one (`None`: it is gone).
async fn reserve(
    tx: Option<mpsc::Sender<Arc<Received>>>,
) -> Option<mpsc::OwnedPermit<Arc<Received>>> {
    tx?.reserve_owned().await.ok()
}

/// libp2p binds its listeners with SO_REUSEPORT, so a second node on a taken port would
/// quietly share it (and half the first node's connections). Binding once without that
/// option first turns the mistake into an error.
fn refuse_taken_port(addr: &Multiaddr) -> Result<(), P2pError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(v) => ip = Some(std::net::IpAddr::V4(v)),
            Protocol::Ip6(v) => ip = Some(std::net::IpAddr::V6(v)),
            Protocol::Tcp(n) => port = Some((n, true)),
            Protocol::Udp(n) => port = Some((n, false)),
            _ => {}
        }
    }
    let (Some(ip), Some((port, tcp))) = (ip, port) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    let sock = std::net::SocketAddr::new(ip, port);
    let bound = match tcp {
        true => std::net::TcpListener::bind(sock).map(drop),
        false => std::net::UdpSocket::bind(sock).map(drop),
    };
    bound.map_err(|e| P2pError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// Addresses worth putting in the DHT: not the unspecified address.
fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn write_ready_file(path: &std::path::Path, ready: &Ready) -> Result<(), P2pError> {
    let err = |e: std::io::Error| P2pError::ReadyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let json = serde_json::to_vec_pretty(ready).map_err(|e| err(e.into()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The IP address a multiaddr starts with, if any.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    use libp2p::multiaddr::Protocol;
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    })
}
