//! The composed libp2p behaviour and the gossipsub settings: validation by the application,
//! content-addressed message ids, and peer scoring that punishes rejected messages.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, kad, mdns, ping, StreamProtocol};
use provnet_wire::{Kind, Topic};

use crate::rpc::{self, CeremonyRpc, CourtRpc, LeafRpc, RpcBehaviour, SyncRpc};
use crate::{NetworkConfig, P2pError};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub ping: ping::Behaviour,
    pub sync: RpcBehaviour<SyncRpc>,
    pub leaf: RpcBehaviour<LeafRpc>,
    pub court: RpcBehaviour<CourtRpc>,
    pub ceremony: RpcBehaviour<CeremonyRpc>,
}

/// The DHT protocol for a network; nodes of other netuids never enter our routing table.
pub(crate) fn kad_protocol(netuid: u16) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/provnet/{netuid}/kad/1.0.0"))
        .expect("starts with a slash")
}

pub(crate) fn agent_version() -> String {
    format!("provnet/{}", env!("CARGO_PKG_VERSION"))
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, cfg: &NetworkConfig) -> Result<Behaviour, P2pError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(cfg.max_pending_incoming));
        let identify = identify::Behaviour::new(
            identify::Config::new(format!("/provnet/{}/1", cfg.netuid), key.public())
                .with_agent_version(agent_version()),
        );
        let kad = cfg.kademlia.then(|| {
            let mut kc = kad::Config::new(kad_protocol(cfg.netuid));
            kc.set_query_timeout(Duration::from_secs(30));
            // We bootstrap ourselves once connected (and every few minutes after), rather
            // than on a timer that fires before any peer is known.
            kc.set_periodic_bootstrap_interval(None);
            let mut k =
                kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kc);
            // Loopback and private nodes never learn a confirmed external address, so kad's
            // automatic mode would leave them clients that nobody can find. Serve always.
            k.set_mode(Some(kad::Mode::Server));
            k
        });
        let mdns = match cfg.mdns {
            true => Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| P2pError::Build(format!("starting mdns: {e}")))?,
            ),
            false => None,
        };
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            gossipsub: gossipsub(cfg)?,
            identify,
            kad: kad.into(),
            mdns: mdns.into(),
            ping: ping::Behaviour::new(ping::Config::new()),
            sync: rpc::behaviour(cfg.netuid),
            leaf: rpc::behaviour(cfg.netuid),
            court: rpc::behaviour(cfg.netuid),
            ceremony: rpc::behaviour(cfg.netuid),
        })
    }
}

fn gossipsub(cfg: &NetworkConfig) -> Result<gossipsub::Behaviour, P2pError> {
    let err = |e: String| P2pError::Build(format!("gossipsub: {e}"));
    // Identical bytes are one message: replays inside the duplicate cache never reach the
    // gate, and the cache outlives the gate's timestamp window, after which the gate refuses
    // them as stale.
    let dup_window = Duration::from_millis(cfg.gate.max_age_ms + cfg.gate.max_future_ms)
        + Duration::from_secs(10);
    let config = gossipsub::ConfigBuilder::default()
        .validate_messages()
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
        })
        .max_transmit_size(Kind::max_envelope() + 4096)
        .duplicate_cache_time(dup_window)
        .heartbeat_interval(cfg.heartbeat)
        .build()
        .map_err(|e| err(e.to_string()))?;
    // Our own envelope carries the sender and its signature; libp2p's would be a second one.
    let mut g = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
        .map_err(|e| err(e.into()))?;
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_whitelist: HashSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
        ..Default::default()
    };
    for topic in Topic::ALL {
        let hash = gossipsub::IdentTopic::new(topic.name(cfg.netuid)).hash();
        params.topics.insert(hash, topic_score());
    }
    g.with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(err)?;
    Ok(g)
}

/// Score parameters for each of our topics. Our topics are quiet (a challenge every few
/// seconds), so mesh delivery-rate penalties are off; what counts is invalid messages: one
/// rejection takes a peer to -20 (no more gossip with it, pruned from the mesh), a third to
/// -180 (graylisted: everything it sends is dropped). The count halves in about a minute.
fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    }
}
