//! The weights-sync protocol (`/provnet/<netuid>/sync/1`) on libp2p request-response: one
//! stream per request, the request and the response each one CBOR value from
//! [`provnet_wire::sync`], read to the end of the stream with a size cap.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use provnet_wire::sync::{MAX_SYNC_REQUEST_BYTES, MAX_SYNC_RESPONSE_BYTES};
use provnet_wire::{SyncRequest, SyncResponse};
use tokio::sync::oneshot;

use crate::PeerId;

pub(crate) fn sync_protocol(netuid: u16) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/provnet/{netuid}/sync/1"))
        .expect("starts with a slash")
}

/// A peer's sync request, for the part of the node that keeps the ledger to answer. An
/// answer not sent within a few seconds goes out as "not serving".
#[derive(Debug)]
pub struct InboundSync {
    pub peer: PeerId,
    pub request: SyncRequest,
    pub reply: oneshot::Sender<SyncResponse>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SyncCodec;

async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sync message over {max} bytes"),
        ));
    }
    Ok(buf)
}

fn invalid(e: provnet_wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_capped(io, MAX_SYNC_REQUEST_BYTES).await?;
        SyncRequest::decode(&bytes).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_capped(io, MAX_SYNC_RESPONSE_BYTES).await?;
        SyncResponse::decode(&bytes).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req.encode().map_err(invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res.encode().map_err(invalid)?).await
    }
}
