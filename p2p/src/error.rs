//! Errors from starting and using the network.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum P2pError {
    #[error("cannot listen on {addr}: {reason} (is the port in use? pass another --listen)")]
    Listen { addr: String, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: String, reason: String },
    #[error("building the libp2p swarm: {0}")]
    Build(String),
    #[error("invalid network config: {0}")]
    Config(String),
    #[error("no peer is subscribed to {topic} yet; retry once connected")]
    NoPeers { topic: String },
    #[error("publishing on {topic}: {reason}")]
    Publish { topic: String, reason: String },
    #[error("encoding the message: {0}")]
    Wire(#[from] provnet_wire::WireError),
    #[error("{protocol} request to {peer}: {reason}")]
    Request {
        protocol: &'static str,
        peer: String,
        reason: String,
    },
    #[error("the network service has stopped")]
    Stopped,
    #[error("timed out after {0:?} waiting for the network to listen")]
    ListenTimeout(std::time::Duration),
    #[error("writing the ready file {path}: {reason}")]
    ReadyFile { path: String, reason: String },
}
