//! Catching up after downtime: a node that restarts with epochs whose commits or reveals it
//! may have missed asks a few peers for their archived, signed weights envelopes before it
//! runs consensus for those epochs (see `provnet_wire::sync`). Peers are not trusted: the
//! envelopes are checked by signature and judged by the ledger's own rules.

use std::time::Duration;

use provnet_p2p::{NetworkHandle, PeerId};
use provnet_wire::sync::ByteBuf;
use provnet_wire::SyncRequest;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::roles::LOG_TARGET_SYNC;

/// Peers asked, validators first.
const PEERS_ASKED: usize = 3;
/// How long to wait for a first peer.
const PEER_WAIT: Duration = Duration::from_secs(20);
/// After the first peer connects, how long to let others connect before asking.
const SETTLE: Duration = Duration::from_millis(1500);
/// The whole catch-up gives up after this; consensus then goes on with what it has.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// What the peers sent, for the node to check and apply.
#[derive(Debug, Default)]
pub struct Fetched {
    pub envelopes: Vec<ByteBuf>,
    pub peers_asked: usize,
    pub peers_answered: usize,
}

/// Asks up to [`PEERS_ASKED`] connected peers for epochs `from..=to`, page by page, and
/// returns every envelope they sent (duplicates included: applying one twice is harmless).
pub async fn fetch(net: NetworkHandle, from: u64, to: u64) -> Fetched {
    let mut out = Fetched::default();
    let waited = Instant::now();
    let mut peers = Vec::new();
    while waited.elapsed() < PEER_WAIT {
        peers = net.peers().await.unwrap_or_default();
        if !peers.is_empty() {
            tokio::time::sleep(SETTLE).await;
            peers = net.peers().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if peers.is_empty() {
        warn!(target: LOG_TARGET_SYNC, "no peer to catch up from within {PEER_WAIT:?}: going on with what this node has");
        return out;
    }
    // Validators first: they keep every commit and reveal by construction.
    peers.sort_by_key(|p| !p.roles.iter().any(|r| r == "validator"));
    for p in peers.iter().take(PEERS_ASKED) {
        let Ok(peer) = p.peer_id.parse::<PeerId>() else {
            continue;
        };
        out.peers_asked += 1;
        let mut at = from;
        let mut answered = false;
        while at <= to {
            let req = SyncRequest {
                from_epoch: at,
                to_epoch: to.min(at + provnet_wire::sync::MAX_SYNC_EPOCHS - 1),
            };
            match net.sync(peer, req).await {
                Ok(r) if !r.serving => break,
                Ok(r) => {
                    answered = true;
                    out.envelopes.extend(r.envelopes);
                    let next = match r.more_from {
                        Some(n) => n,
                        None => req.to_epoch + 1,
                    };
                    if next <= at {
                        warn!(target: LOG_TARGET_SYNC, %peer, epoch = at, "peer's answer made no progress: asking the next peer");
                        break;
                    }
                    at = next;
                }
                Err(e) => {
                    info!(target: LOG_TARGET_SYNC, %peer, "sync failed: {e}");
                    break;
                }
            }
        }
        out.peers_answered += usize::from(answered);
    }
    out
}
