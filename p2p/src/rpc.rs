//! The request-response protocols, on libp2p request-response: one stream per request,
//! the request and the response each one CBOR value read to the end of the stream with a
//! size cap.
//!
//! - `/provnet/<netuid>/sync/1` ([`SyncRpc`]): the commits and reveals of missed epochs
//!   ([`provnet_wire::sync`]).
//! - `/provnet/<netuid>/leaf/1` ([`LeafRpc`]): a dispute's agreed state at its leaf, which
//!   referees fetch from a side ([`provnet_wire::LeafRequest`]).
//! - `/provnet/<netuid>/court/1` ([`CourtRpc`]): the claims, disputes and attestations of
//!   a time a node was down ([`provnet_wire::CourtSyncRequest`]).
//! - `/provnet/<netuid>/ceremony/1` ([`CeremonyRpc`]): a setup ceremony's step, by content
//!   hash, a chunk at a time ([`provnet_wire::BlobRequest`]).
//!
//! Both are served the same way ([`Endpoint`]): a peer's request goes to the part of the
//! node that can answer, over a bounded channel, and is answered "not serving" when that
//! channel is full, when the node does not answer within a few seconds, or when the peer
//! has asked too often this minute.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::StreamProtocol;
use provnet_wire::ceremony::{MAX_BLOB_REQUEST_BYTES, MAX_BLOB_RESPONSE_BYTES};
use provnet_wire::dispute::{MAX_LEAF_REQUEST_BYTES, MAX_LEAF_RESPONSE_BYTES};
use provnet_wire::sync::{MAX_SYNC_REQUEST_BYTES, MAX_SYNC_RESPONSE_BYTES};
use provnet_wire::{
    BlobRequest, BlobResponse, CourtSyncRequest, LeafRequest, LeafResponse, SyncRequest,
    SyncResponse, WireError,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::{P2pError, PeerId};

/// One CBOR value with a size cap.
pub trait Framed: Sized + Send + Debug + 'static {
    const MAX_BYTES: usize;
    fn to_bytes(&self) -> Result<Vec<u8>, WireError>;
    fn from_bytes(bytes: &[u8]) -> Result<Self, WireError>;
}

/// A request-response protocol: its name and message types.
pub trait Rpc: Send + 'static {
    type Request: Framed;
    type Response: Framed;
    /// The protocol's name in `/provnet/<netuid>/<name>/1`, and its log target's.
    const NAME: &'static str;
    /// What goes back when the node does not answer.
    fn not_serving() -> Self::Response;
}

macro_rules! framed {
    ($t:ty, $max:expr) => {
        impl Framed for $t {
            const MAX_BYTES: usize = $max;
            fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
                self.encode()
            }
            fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
                <$t>::decode(bytes)
            }
        }
    };
}
framed!(SyncRequest, MAX_SYNC_REQUEST_BYTES);
framed!(SyncResponse, MAX_SYNC_RESPONSE_BYTES);
framed!(LeafRequest, MAX_LEAF_REQUEST_BYTES);
framed!(CourtSyncRequest, MAX_SYNC_REQUEST_BYTES);
framed!(LeafResponse, MAX_LEAF_RESPONSE_BYTES);
framed!(BlobRequest, MAX_BLOB_REQUEST_BYTES);
framed!(BlobResponse, MAX_BLOB_RESPONSE_BYTES);

/// A ceremony step's bytes, by hash.
#[derive(Debug)]
pub enum CeremonyRpc {}

impl Rpc for CeremonyRpc {
    type Request = BlobRequest;
    type Response = BlobResponse;
    const NAME: &'static str = "ceremony";
    fn not_serving() -> BlobResponse {
        BlobResponse::default()
    }
}

/// Catching up on weights.
#[derive(Debug)]
pub enum SyncRpc {}

impl Rpc for SyncRpc {
    type Request = SyncRequest;
    type Response = SyncResponse;
    const NAME: &'static str = "sync";
    fn not_serving() -> SyncResponse {
        SyncResponse::not_serving()
    }
}

/// Catching up on the court.
#[derive(Debug)]
pub enum CourtRpc {}

impl Rpc for CourtRpc {
    type Request = CourtSyncRequest;
    type Response = SyncResponse;
    const NAME: &'static str = "court";
    fn not_serving() -> SyncResponse {
        SyncResponse::not_serving()
    }
}

/// A dispute's leaf state.
#[derive(Debug)]
pub enum LeafRpc {}

impl Rpc for LeafRpc {
    type Request = LeafRequest;
    type Response = LeafResponse;
    const NAME: &'static str = "leaf";
    fn not_serving() -> LeafResponse {
        LeafResponse::default()
    }
}

pub(crate) fn protocol<R: Rpc>(netuid: u16) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/provnet/{netuid}/{}/1", R::NAME))
        .expect("starts with a slash")
}

/// A peer's request, for the part of the node that can answer. An answer not sent within
/// a few seconds goes out as "not serving".
#[derive(Debug)]
pub struct Inbound<R: Rpc> {
    pub peer: PeerId,
    pub request: R::Request,
    pub reply: oneshot::Sender<R::Response>,
}

/// A peer catching up on weights.
pub type InboundSync = Inbound<SyncRpc>;
/// A referee asking for a dispute's leaf state.
pub type InboundLeaf = Inbound<LeafRpc>;
/// A peer catching up on the court.
pub type InboundCourt = Inbound<CourtRpc>;
/// A peer fetching a ceremony step.
pub type InboundBlob = Inbound<CeremonyRpc>;

pub(crate) struct Codec<R>(PhantomData<R>);

impl<R> Default for Codec<R> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<R> Clone for Codec<R> {
    fn clone(&self) -> Self {
        Codec(PhantomData)
    }
}

async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message over {max} bytes"),
        ));
    }
    Ok(buf)
}

fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

async fn read<T, M>(io: &mut T) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: Framed,
{
    let bytes = read_capped(io, M::MAX_BYTES).await?;
    M::from_bytes(&bytes).map_err(invalid)
}

async fn write<T, M>(io: &mut T, m: M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Framed,
{
    io.write_all(&m.to_bytes().map_err(invalid)?).await
}

impl<R: Rpc> request_response::Codec for Codec<R> {
    type Protocol = StreamProtocol;
    type Request = R::Request;
    type Response = R::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<R::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<R::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: R::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: R::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write(io, res).await
    }
}

pub(crate) type RpcBehaviour<R> = request_response::Behaviour<Codec<R>>;

/// How long a request may take, answer included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn behaviour<R: Rpc>(netuid: u16) -> RpcBehaviour<R> {
    request_response::Behaviour::with_codec(
        Codec::default(),
        [(
            protocol::<R>(netuid),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(16),
    )
}

/// How long the node may take to answer a peer's request before "not serving" goes out.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(60);

type Reply<R> = (ResponseChannel<<R as Rpc>::Response>, <R as Rpc>::Response);
type Pending<R> = oneshot::Sender<Result<<R as Rpc>::Response, P2pError>>;

/// One protocol's side of the swarm task: peers' requests to the node and its answers
/// back, and the node's requests in flight.
pub(crate) struct Endpoint<R: Rpc> {
    /// Where peers' requests go, once the node serves them.
    server: Option<mpsc::Sender<Inbound<R>>>,
    /// Our requests in flight.
    pending: HashMap<OutboundRequestId, Pending<R>>,
    /// Per peer: when its current window began, and its requests in it.
    asked: HashMap<PeerId, (Instant, u32)>,
    /// Requests answered per peer per minute; more are told "not serving".
    per_window: u32,
    /// Answers to peers' requests, back from the node.
    replies: mpsc::Sender<Reply<R>>,
    pub replies_rx: mpsc::Receiver<Reply<R>>,
}

impl<R: Rpc> Endpoint<R> {
    pub(crate) fn new(per_window: u32) -> Endpoint<R> {
        let (replies, replies_rx) = mpsc::channel(64);
        Endpoint {
            server: None,
            pending: HashMap::new(),
            asked: HashMap::new(),
            per_window,
            replies,
            replies_rx,
        }
    }

    pub(crate) fn serve(&mut self, server: mpsc::Sender<Inbound<R>>) {
        self.server = Some(server);
    }

    pub(crate) fn send(
        &mut self,
        b: &mut RpcBehaviour<R>,
        peer: PeerId,
        request: R::Request,
        reply: Pending<R>,
    ) {
        let id = b.send_request(&peer, request);
        self.pending.insert(id, reply);
    }

    fn not_serving(b: &mut RpcBehaviour<R>, channel: ResponseChannel<R::Response>) {
        // Fails only if the peer gave up waiting.
        let _ = b.send_response(channel, R::not_serving());
    }

    pub(crate) fn on_event(
        &mut self,
        b: &mut RpcBehaviour<R>,
        event: request_response::Event<R::Request, R::Response>,
    ) {
        use request_response::{Event, Message as M};
        let name = R::NAME;
        match event {
            Event::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                debug!(target: "p2p::rpc", %peer, name, ?request, "request");
                let now = Instant::now();
                self.asked
                    .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
                let (_, asked) = self.asked.entry(peer).or_insert((now, 0));
                *asked += 1;
                if *asked > self.per_window {
                    debug!(target: "p2p::rpc", %peer, name, "over {} requests a minute: not serving", self.per_window);
                    Self::not_serving(b, channel);
                    return;
                }
                let (reply, answer) = oneshot::channel();
                let inbound = Inbound {
                    peer,
                    request,
                    reply,
                };
                let queued = self
                    .server
                    .as_ref()
                    .is_some_and(|s| s.try_send(inbound).is_ok());
                if !queued {
                    Self::not_serving(b, channel);
                    return;
                }
                let replies = self.replies.clone();
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(ANSWER_WITHIN, answer)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_else(R::not_serving);
                    let _ = replies.send((channel, answer)).await;
                });
            }
            Event::Message {
                peer,
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                debug!(target: "p2p::rpc", %peer, name, "response");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(P2pError::Request {
                        protocol: name,
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(target: "p2p::rpc", %peer, name, %error, "answering a request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
