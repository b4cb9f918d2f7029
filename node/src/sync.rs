//! Catching up after downtime: a node that restarts with epochs whose commits or reveals it
//! may have missed asks a few peers for their archived, signed weights envelopes before it
//! runs consensus for those epochs (see `provnet_wire::sync`), and for the claims, disputes
//! and attestations its court missed. Peers are not trusted: the envelopes are checked by
//! signature and judged by the ledger's and the court's own rules.

use std::time::Duration;

use provnet_p2p::{NetworkHandle, PeerId};
use provnet_wire::sync::ByteBuf;
use provnet_wire::SyncRequest;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::roles::LOG_TARGET_SYNC;

/// Peers asked: genesis validators first.
const PEERS_ASKED: usize = 3;
/// How long to wait for a genesis validator to be connected (others are asked after).
const PEER_WAIT: Duration = Duration::from_secs(20);
/// Most envelope bytes kept from one peer (a few pages): a peer cannot fill memory.
const MAX_BYTES_PER_PEER: usize = 8 * 1024 * 1024;
/// The whole catch-up gives up after this; consensus then goes on with what it has.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// What the peers sent, for the node to check and apply.
#[derive(Debug, Default)]
pub struct Fetched {
    pub envelopes: Vec<ByteBuf>,
    pub peers_asked: usize,
    pub peers_answered: usize,
}

/// Runs a catch-up on its own task, for at most [`CATCH_UP_LIMIT`] (then with nothing
/// from it: the node goes on with what it has); what it fetched comes back on the channel.
pub fn in_background(
    fetch: impl std::future::Future<Output = Fetched> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<Fetched> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let fetched = tokio::time::timeout(CATCH_UP_LIMIT, fetch)
            .await
            .unwrap_or_else(|_| {
                warn!(target: LOG_TARGET_SYNC, "catching up took over {CATCH_UP_LIMIT:?}: going on with what this node has");
                Fetched::default()
            });
        let _ = tx.send(fetched);
    });
    rx
}

/// Asks up to [`PEERS_ASKED`] connected peers for epochs `from..=to` of weights, page by
/// page, and returns every envelope they sent (duplicates included: applying one twice is
/// harmless).
pub async fn fetch(
    net: NetworkHandle,
    from: u64,
    to: u64,
    validators: &std::collections::BTreeSet<[u8; 32]>,
) -> Fetched {
    let ask = |peer: PeerId, at: u64| {
        let net = net.clone();
        async move {
            let req = SyncRequest {
                from_epoch: at,
                to_epoch: to.min(at + provnet_wire::sync::MAX_SYNC_EPOCHS - 1),
            };
            let next = (req.to_epoch < to).then_some(req.to_epoch + 1);
            net.sync(peer, req).await.map(|r| (r, next))
        }
    };
    fetch_pages(&net, from, validators, ask).await
}

/// Asks up to [`PEERS_ASKED`] connected peers for the claims, disputes and attestations
/// their courts took since `since_ms`, page by page.
pub async fn fetch_court(
    net: NetworkHandle,
    since_ms: u64,
    validators: &std::collections::BTreeSet<[u8; 32]>,
) -> Fetched {
    let ask = |peer: PeerId, at: u64| {
        let net = net.clone();
        async move {
            let req = provnet_wire::CourtSyncRequest { since_ms: at };
            net.court_sync(peer, req).await.map(|r| (r, None))
        }
    };
    fetch_pages(&net, since_ms, validators, ask).await
}

/// The pager both use: `ask(peer, at)` asks one page from `at` and says where the next
/// starts when the peer's answer did not stop at its size limit (none: that was the last).
/// Genesis validators are asked first, recognised by their PeerId (derived from the key),
/// never by what a peer announces; at most [`MAX_BYTES_PER_PEER`] are kept from each.
async fn fetch_pages<F, Fut>(
    net: &NetworkHandle,
    from: u64,
    validators: &std::collections::BTreeSet<[u8; 32]>,
    ask: F,
) -> Fetched
where
    F: Fn(PeerId, u64) -> Fut,
    Fut: std::future::Future<
        Output = Result<(provnet_wire::SyncResponse, Option<u64>), provnet_p2p::P2pError>,
    >,
{
    let mut out = Fetched::default();
    let me = net.public_key();
    let validator_peers: Vec<PeerId> = validators
        .iter()
        .filter(|k| **k != me)
        .filter_map(provnet_p2p::identity::peer_id)
        .collect();
    let waited = Instant::now();
    let mut peers: Vec<PeerId> = Vec::new();
    while waited.elapsed() < PEER_WAIT {
        peers = net
            .peers()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        if peers.iter().any(|p| validator_peers.contains(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if peers.is_empty() {
        warn!(target: LOG_TARGET_SYNC, "no peer to catch up from within {PEER_WAIT:?}: going on with what this node has");
        return out;
    }
    peers.sort_by_key(|p| !validator_peers.contains(p));
    for peer in peers.into_iter().take(PEERS_ASKED) {
        out.peers_asked += 1;
        let mut at = from;
        let mut answered = false;
        let mut bytes = 0usize;
        while bytes < MAX_BYTES_PER_PEER {
            match ask(peer, at).await {
                Ok((r, _)) if !r.serving => break,
                Ok((r, next_page)) => {
                    answered = true;
                    bytes += r.envelopes.iter().map(|e| e.len()).sum::<usize>();
                    out.envelopes.extend(r.envelopes);
                    match r.more_from.or(next_page) {
                        None => break,
                        Some(next) if next <= at => {
                            warn!(target: LOG_TARGET_SYNC, %peer, at, "peer's answer made no progress: asking the next peer");
                            break;
                        }
                        Some(next) => at = next,
                    }
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
