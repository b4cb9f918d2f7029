//! The cloneable handle the rest of the node uses to talk to the swarm task.

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use provnet_wire::{
    BlobRequest, BlobResponse, CourtSyncRequest, GossipStatus, LeafRequest, LeafResponse, Message,
    PeerStatus, PublicKey, SyncRequest, SyncResponse, Topic, Verified,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::rpc::{InboundBlob, InboundCourt, InboundLeaf, InboundSync};
use crate::P2pError;

/// A message that passed validation, as delivered to subscribers.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: Topic,
    /// The signer (the envelope's sender) as a PeerId.
    pub from: PeerId,
    /// The peer that forwarded it to us.
    pub via: PeerId,
    pub verified: Verified,
    /// The signed envelope as received.
    pub raw: Vec<u8>,
    /// When the gate accepted it (Unix ms, sub-ms precision): a proof's latency is measured
    /// to here, so however long the node takes to get to it costs the miner nothing.
    pub received_at_ms: f64,
}

#[derive(Clone, Debug)]
pub enum NetEvent {
    Message(Arc<Received>),
    PeerConnected(PeerId),
    PeerDisconnected(PeerId),
}

/// What a node writes to its ready file once listening: how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub peer_id: String,
    /// The node's ed25519 public key (hotkey), hex.
    pub public_key: String,
    pub netuid: u16,
    /// The genesis id (hex) this node seals and accepts.
    pub genesis: String,
    /// Bound addresses, each ending in `/p2p/<peer id>`, ready to pass to `--bootstrap`.
    pub listen_addrs: Vec<String>,
}

pub(crate) enum Command {
    Publish(Message, oneshot::Sender<Result<Vec<u8>, P2pError>>),
    PublishRaw(Topic, Vec<u8>, oneshot::Sender<Result<(), P2pError>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), P2pError>>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Status(oneshot::Sender<GossipStatus>),
    ServeSync(mpsc::Sender<InboundSync>, oneshot::Sender<()>),
    ServeLeaf(mpsc::Sender<InboundLeaf>, oneshot::Sender<()>),
    ServeCourt(mpsc::Sender<InboundCourt>, oneshot::Sender<()>),
    ServeBlobs(mpsc::Sender<InboundBlob>, oneshot::Sender<()>),
    Blob(
        PeerId,
        BlobRequest,
        oneshot::Sender<Result<BlobResponse, P2pError>>,
    ),
    CourtSync(
        PeerId,
        CourtSyncRequest,
        oneshot::Sender<Result<SyncResponse, P2pError>>,
    ),
    SubscribeLedger(mpsc::Sender<Arc<Received>>, oneshot::Sender<()>),
    Sync(
        PeerId,
        SyncRequest,
        oneshot::Sender<Result<SyncResponse, P2pError>>,
    ),
    Leaf(
        PeerId,
        LeafRequest,
        oneshot::Sender<Result<LeafResponse, P2pError>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

/// Talks to the swarm task. Cheap to clone; every channel behind it is bounded.
#[derive(Clone)]
pub struct NetworkHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<NetEvent>,
    pub(crate) ready: watch::Receiver<Option<Ready>>,
    pub(crate) peer_id: PeerId,
    pub(crate) public_key: PublicKey,
}

impl NetworkHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Events from now on. A subscriber that falls more than the configured buffer behind
    /// misses the oldest events (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Signs, numbers and publishes `msg` on its topic.
    pub async fn publish(&self, msg: Message) -> Result<(), P2pError> {
        self.publish_sealed(msg).await.map(drop)
    }

    /// [`publish`](NetworkHandle::publish), returning the signed envelope as sent (for a
    /// node that keeps its own weights to serve to peers catching up).
    pub async fn publish_sealed(&self, msg: Message) -> Result<Vec<u8>, P2pError> {
        self.request(|tx| Command::Publish(msg, tx)).await?
    }

    /// Weights commits and reveals and registrations from now on, on a channel of their
    /// own instead of [`subscribe`](NetworkHandle::subscribe)'s bus, so a flood of
    /// challenges or proofs can never make a subscriber miss them. Only genesis validators
    /// may send weights (see `Admission`), so `capacity` is reached only if the subscriber
    /// stalls; then messages wait, in order, in the network's backlog (`ledger_backlog`)
    /// until it takes them. Weights are kept; registrations past the backlog's bound are
    /// dropped and counted (`ledger_dropped`).
    pub async fn subscribe_ledger(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Arc<Received>>, P2pError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.request(|done| Command::SubscribeLedger(tx, done))
            .await?;
        Ok(rx)
    }

    /// Answers peers' sync requests from now on: each arrives on the returned channel
    /// (bounded by `capacity`; a request that finds it full is answered "not serving").
    pub async fn serve_sync(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<InboundSync>, P2pError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.request(|done| Command::ServeSync(tx, done)).await?;
        Ok(rx)
    }

    /// Answers referees' leaf requests from now on, as [`NetworkHandle::serve_sync`] does
    /// sync requests.
    pub async fn serve_leaf(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<InboundLeaf>, P2pError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.request(|done| Command::ServeLeaf(tx, done)).await?;
        Ok(rx)
    }

    /// Answers peers' court sync requests from now on, as [`NetworkHandle::serve_sync`]
    /// does weights sync requests.
    pub async fn serve_court(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<InboundCourt>, P2pError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.request(|done| Command::ServeCourt(tx, done)).await?;
        Ok(rx)
    }

    /// Answers peers' requests for ceremony steps from now on, as
    /// [`NetworkHandle::serve_sync`] does sync requests.
    pub async fn serve_blobs(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<InboundBlob>, P2pError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.request(|done| Command::ServeBlobs(tx, done)).await?;
        Ok(rx)
    }

    /// Asks a peer (dialed if need be) for a chunk of a ceremony step.
    pub async fn blob(&self, peer: PeerId, request: BlobRequest) -> Result<BlobResponse, P2pError> {
        self.request(|tx| Command::Blob(peer, request, tx)).await?
    }

    /// Asks a connected peer for the claims, disputes and attestations since a time.
    pub async fn court_sync(
        &self,
        peer: PeerId,
        request: CourtSyncRequest,
    ) -> Result<SyncResponse, P2pError> {
        self.request(|tx| Command::CourtSync(peer, request, tx))
            .await?
    }

    /// Asks a peer (dialed if need be) for a dispute's state at a cut.
    pub async fn leaf(&self, peer: PeerId, request: LeafRequest) -> Result<LeafResponse, P2pError> {
        self.request(|tx| Command::Leaf(peer, request, tx)).await?
    }

    /// Asks a connected peer for the commits and reveals of a range of epochs.
    pub async fn sync(&self, peer: PeerId, request: SyncRequest) -> Result<SyncResponse, P2pError> {
        self.request(|tx| Command::Sync(peer, request, tx)).await?
    }

    /// Publishes bytes exactly as given, skipping every local check: for adversarial test
    /// peers and tools that probe other nodes' validation. Honest code calls [`publish`].
    ///
    /// [`publish`]: NetworkHandle::publish
    #[doc(hidden)]
    pub async fn publish_raw(&self, topic: Topic, bytes: Vec<u8>) -> Result<(), P2pError> {
        self.request(|tx| Command::PublishRaw(topic, bytes, tx))
            .await?
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.request(|tx| Command::Dial(addr, tx)).await?
    }

    pub async fn peers(&self) -> Result<Vec<PeerStatus>, P2pError> {
        self.request(Command::Peers).await
    }

    pub async fn status(&self) -> Result<GossipStatus, P2pError> {
        self.request(Command::Status).await
    }

    /// Waits until every listen address is bound.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Ready, P2pError> {
        let mut rx = self.ready.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|r| r.is_some()).await.map(|r| r.clone())
        })
        .await;
        match waited {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(_) => Err(P2pError::Stopped),
            Err(_) => Err(P2pError::ListenTimeout(timeout)),
        }
    }

    /// Stops the swarm task and waits until it has let go of its connections.
    pub async fn shutdown(&self) {
        let _ = self.request(Command::Shutdown).await;
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }
}
