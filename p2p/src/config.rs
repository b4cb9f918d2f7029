//! Network settings. Defaults suit an operator's node; tests bind 127.0.0.1 port 0.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use provnet_wire::{Admission, GateConfig, Network, Role};
use serde::{Deserialize, Serialize};

/// The port operators' nodes listen on unless told otherwise (TCP and QUIC/UDP).
pub const DEFAULT_PORT: u16 = 30_777;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Separates networks: topics and the DHT protocol carry it.
    pub netuid: u16,
    /// The first 8 bytes of the genesis hash (all zeros without a genesis file). Every
    /// envelope carries it; messages with another are rejected.
    #[serde(with = "hex8")]
    pub genesis: [u8; 8],
    #[serde(with = "addrs")]
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; `/p2p/<peer id>` suffixes are optional.
    #[serde(with = "addrs")]
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery (off unless asked for).
    pub mdns: bool,
    /// Kademlia discovery. Only test harness peers turn it off, to stay out of the DHT.
    pub kademlia: bool,
    pub max_connections: u32,
    pub max_pending_incoming: u32,
    /// Of `max_connections`, slots only `reserved_peers` may take: a flood of peers never
    /// crowds the genesis validators out.
    pub reserved_slots: u32,
    /// Most peers that dialed us, reserved peers not counted: what is left of the slots
    /// stays for peers this node dials, so inbound floods cannot eclipse it.
    pub max_inbound: u32,
    /// Most peers this node dialed, reserved peers not counted: discovery that a poisoned
    /// DHT steers cannot fill the slots either.
    pub max_outbound: u32,
    /// Most peers from one IP address (loopback excepted: a devnet runs on one machine);
    /// `reserved_peers` are not counted.
    pub max_peers_per_ip: u32,
    /// Peers that may use the reserved slots and are exempt from the per-IP limit (the
    /// genesis validators); not part of a config file.
    #[serde(skip)]
    pub reserved_peers: Vec<libp2p::PeerId>,
    #[serde(with = "millis")]
    pub heartbeat: Duration,
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// How often to re-dial bootstrap peers while no peer is connected.
    #[serde(with = "millis")]
    pub redial: Duration,
    /// How often to re-publish our Announce.
    #[serde(with = "millis")]
    pub announce_every: Duration,
    /// The roles named in our Announce.
    pub roles: Vec<Role>,
    /// Where to write `ready.json` (peer id and bound addresses) once listening.
    pub ready_file: Option<PathBuf>,
    /// Capacity of the event channel each subscriber gets.
    pub event_buffer: usize,
    pub gate: GateConfig,
    /// Who may publish what (from the genesis); not part of a config file.
    #[serde(skip)]
    pub admission: Admission,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            netuid: 1,
            genesis: [0; 8],
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")
                    .parse()
                    .expect("valid"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1")
                    .parse()
                    .expect("valid"),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            kademlia: true,
            max_connections: 128,
            max_pending_incoming: 32,
            reserved_slots: 16,
            max_inbound: 96,
            max_outbound: 64,
            max_peers_per_ip: 8,
            reserved_peers: Vec::new(),
            heartbeat: Duration::from_millis(700),
            idle_timeout: Duration::from_secs(120),
            redial: Duration::from_secs(5),
            announce_every: Duration::from_secs(60),
            roles: Vec::new(),
            ready_file: None,
            event_buffer: 1024,
            gate: GateConfig::default(),
            admission: Admission::default(),
        }
    }
}

impl NetworkConfig {
    /// The network identity every envelope is sealed for and checked against.
    pub fn network(&self) -> Network {
        Network {
            netuid: self.netuid,
            genesis: self.genesis,
        }
    }

    /// A node on loopback with an ephemeral TCP port: what tests and `devnet` use.
    pub fn loopback(netuid: u16) -> Self {
        NetworkConfig {
            netuid,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
            heartbeat: Duration::from_millis(200),
            redial: Duration::from_millis(500),
            ..NetworkConfig::default()
        }
    }
}

mod addrs {
    use libp2p::Multiaddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|a| a.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

mod hex8 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 8], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text)
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| serde::de::Error::custom("genesis id: 16 hex characters"))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
