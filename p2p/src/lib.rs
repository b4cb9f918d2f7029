//! provnet's gossip network: a libp2p swarm (TCP + noise + yamux, and QUIC) running
//! gossipsub, identify, kademlia, optional mdns and ping, on which every message is checked
//! by the [`provnet_wire::Gate`] before gossipsub may forward it.
//!
//! One task owns the swarm; the rest of the node holds a cloneable [`NetworkHandle`] over
//! bounded channels. Depends on `provnet-wire` for message types only; proofs are opaque.

mod behaviour;
pub mod config;
pub mod error;
mod handle;
pub mod identity;
mod rpc;
mod service;

pub use config::NetworkConfig;
pub use error::P2pError;
pub use handle::{NetEvent, NetworkHandle, Ready, Received};
pub use libp2p::{Multiaddr, PeerId};
pub use rpc::{
    CeremonyRpc, CourtRpc, Inbound, InboundBlob, InboundCourt, InboundLeaf, InboundSync, LeafRpc,
    Rpc, SyncRpc,
};
pub use service::spawn;
