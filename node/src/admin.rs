//! The admin endpoint: a node's status for its operator, over plain HTTP on loopback.
//!
//! - `GET /status`: the latest [`NodeStatus`] as JSON (what `provnet tui` polls);
//! - `GET /status/stream`: one JSON line per snapshot, until the client hangs up;
//! - `GET /metrics`: Prometheus text exposition;
//! - `POST /claims` (`{"model": ID or name, "input": [quantized ints]}`): an inference
//!   node runs the model on the input, publishes the claim under its key and stands behind
//!   it; the answer names the claim (201), or says why not;
//! - `POST /disputes` (`{"claim": ID}`): a challenger runs the claim itself and, if its
//!   trace differs, disputes it (201 names the dispute);
//! - `GET /claims/ID` and `GET /disputes/ID`: a claim with its disputes, or one dispute,
//!   as this node's court keeps them;
//! - `POST /requests` (`{"model": ID or name, "segment": K, "input": [quantized ints],
//!   "deadline_ms": N (optional)}`): an admitted challenger publishes a proof request for
//!   that segment (201 names it); validators adopt it and miners race it;
//! - `GET /requests/ID`: the request, the validators that adopted it, and every proof to
//!   it that this node verified itself, each with its public context (challenge, nonce,
//!   miner, verifying key id) and proof bytes, so it can be checked again anywhere.
//!
//! It binds 127.0.0.1 unless the operator passes `--admin-allow-remote` with a
//! non-loopback `--admin-listen`, because the status names the node's peers, keys and
//! queue to whoever asks. Writes off loopback need `--admin-token-file`: each POST then
//! carries `authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use provnet_wire::NodeStatus;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

/// Largest request body accepted (a claim's input of 16k values is well under).
const MAX_BODY: usize = 1024 * 1024;

/// An answer: the HTTP status and a JSON body.
pub type Reply = oneshot::Sender<(u16, Value)>;

/// A refusal's answer: `{"error": why}` with `code`.
pub fn error(code: u16, why: &str) -> (u16, Value) {
    (code, json!({ "error": why }))
}

/// What the endpoint asks of the node's roles loop.
pub enum AdminRequest {
    /// Claim a run of `model` (hex id or name) on `input` (quantized).
    Claim {
        model: String,
        input: Vec<i64>,
        reply: Reply,
    },
    /// Dispute `claim` by hand: the node runs it and disputes if its trace differs.
    Dispute {
        claim: [u8; 32],
        reply: Reply,
    },
    GetClaim {
        id: [u8; 32],
        reply: Reply,
    },
    GetDispute {
        id: [u8; 32],
        reply: Reply,
    },
    /// Publish a proof request for `segment` of `model` on `input` (quantized).
    Request {
        model: String,
        segment: u32,
        input: Vec<i64>,
        deadline_ms: Option<u64>,
        reply: Reply,
    },
    GetRequest {
        id: [u8; 32],
        reply: Reply,
    },
}

/// Where the endpoint sends requests that need the node, and who may write.
#[derive(Clone)]
pub struct Writes {
    pub tx: mpsc::Sender<AdminRequest>,
    /// Required as a bearer token on every POST when set; writes off loopback need one.
    pub token: Option<String>,
    /// Whether the endpoint is bound off loopback.
    pub remote: bool,
}

/// Longest request head accepted (a GET needs a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends no full request head in this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses a non-loopback address unless the operator opted in.
pub fn check_bind(addr: SocketAddr, allow_remote: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "--admin-listen {addr} is not a loopback address: the admin endpoint shows the \
             node's keys, peers and queue to anyone who can reach it. Bind 127.0.0.1, or pass \
             --admin-allow-remote if a firewall or proxy guards it"
        );
    }
    Ok(())
}

/// Binds the endpoint; `serve` then answers on it until the runtime stops.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener> {
    check_bind(addr, allow_remote)?;
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint on {addr}"))?;
    info!(target: "node::admin", addr = %l.local_addr()?, "admin endpoint listening");
    Ok(l)
}

/// Answers requests with the latest snapshot from `status`, and hands the court's reads
/// and writes to `writes` (a node without roles has none).
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
    writes: Option<Writes>,
) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(target: "node::admin", "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (status, writes) = (status.clone(), writes.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(sock, status, writes).await {
                debug!(target: "node::admin", %peer, "request: {e}");
            }
        });
    }
}

async fn answer(
    mut sock: TcpStream,
    mut status: watch::Receiver<NodeStatus>,
    writes: Option<Writes>,
) -> Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut sock)).await {
        Ok(r) => r?,
        Err(_) => bail!("no request within {READ_TIMEOUT:?}"),
    };
    let Some((method, path)) = parse_request_line(&head) else {
        return respond(&mut sock, 400, "text/plain", b"malformed request\n").await;
    };
    let path = path.split('?').next().unwrap_or("").to_string();
    let court_path = ["/claims", "/disputes", "/requests"]
        .iter()
        .any(|p| path.starts_with(p));
    if court_path {
        let (code, body) = match tokio::time::timeout(
            READ_TIMEOUT,
            court_request(&mut sock, &head, method, &path, writes.as_ref()),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => error(504, "the node did not answer in time"),
        };
        return respond(
            &mut sock,
            code,
            "application/json",
            &serde_json::to_vec(&body)?,
        )
        .await;
    }
    if method != "GET" {
        return respond(&mut sock, 405, "text/plain", b"only GET\n").await;
    }
    match path.as_str() {
        "/status" => {
            let body = serde_json::to_vec(&*status.borrow_and_update())?;
            respond(&mut sock, 200, "application/json", &body).await
        }
        "/metrics" => {
            let body = metrics(&status.borrow_and_update());
            respond(
                &mut sock,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        "/status/stream" => {
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                  cache-control: no-store\r\nconnection: close\r\n\r\n",
            )
            .await?;
            loop {
                let mut line = serde_json::to_vec(&*status.borrow_and_update())?;
                line.push(b'\n');
                sock.write_all(&line).await?;
                if status.changed().await.is_err() {
                    return Ok(()); // the node is shutting down
                }
            }
        }
        "/" => {
            respond(
                &mut sock,
                200,
                "text/plain",
                b"provnet admin endpoint: /status, /status/stream, /metrics\n",
            )
            .await
        }
        _ => respond(&mut sock, 404, "text/plain", b"not found\n").await,
    }
}

/// `/claims`, `/disputes` and `/requests`: checked here (method, token, body), answered by
/// the node.
async fn court_request(
    sock: &mut TcpStream,
    head: &[u8],
    method: &str,
    path: &str,
    writes: Option<&Writes>,
) -> Result<(u16, Value)> {
    let err = |code: u16, why: &str| Ok(error(code, why));
    let Some(w) = writes else {
        return err(404, "this node keeps no court (it runs without roles)");
    };
    let hex_id = |s: &str| crate::identity::hex32("id", s).ok();
    let (tx, rx) = oneshot::channel();
    let req = match (method, path) {
        ("POST", "/claims") => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct PostClaim {
                model: String,
                input: Vec<i64>,
            }
            let c: PostClaim =
                match posted(sock, head, w, "a claim is {\"model\", \"input\"}").await {
                    Ok(c) => c,
                    Err(e) => return Ok(e),
                };
            AdminRequest::Claim {
                model: c.model,
                input: c.input,
                reply: tx,
            }
        }
        ("POST", "/disputes") => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct PostDispute {
                claim: String,
            }
            let d: PostDispute = match posted(sock, head, w, "a dispute is {\"claim\": ID}").await {
                Ok(d) => d,
                Err(e) => return Ok(e),
            };
            match hex_id(&d.claim) {
                Some(claim) => AdminRequest::Dispute { claim, reply: tx },
                None => return err(400, "a claim id is 64 hex digits"),
            }
        }
        ("POST", "/requests") => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct PostRequest {
                model: String,
                segment: u32,
                input: Vec<i64>,
                #[serde(default)]
                deadline_ms: Option<u64>,
            }
            let shape = "a request is {\"model\", \"segment\", \"input\", \"deadline_ms\"?}";
            let r: PostRequest = match posted(sock, head, w, shape).await {
                Ok(r) => r,
                Err(e) => return Ok(e),
            };
            AdminRequest::Request {
                model: r.model,
                segment: r.segment,
                input: r.input,
                deadline_ms: r.deadline_ms,
                reply: tx,
            }
        }
        ("GET", p) if p.starts_with("/requests/") => match hex_id(&p["/requests/".len()..]) {
            Some(id) => AdminRequest::GetRequest { id, reply: tx },
            None => return err(400, "a request id is 64 hex digits"),
        },
        ("GET", p) if p.starts_with("/claims/") => match hex_id(&p["/claims/".len()..]) {
            Some(id) => AdminRequest::GetClaim { id, reply: tx },
            None => return err(400, "a claim id is 64 hex digits"),
        },
        ("GET", p) if p.starts_with("/disputes/") => match hex_id(&p["/disputes/".len()..]) {
            Some(id) => AdminRequest::GetDispute { id, reply: tx },
            None => return err(400, "a dispute id is 64 hex digits"),
        },
        ("GET" | "POST", _) => {
            return err(
                404,
                "not found: POST /claims, POST /disputes, POST /requests, GET /claims/ID, GET /disputes/ID, GET /requests/ID",
            )
        }
        _ => return err(405, "GET or POST"),
    };
    if w.tx.try_send(req).is_err() {
        return err(503, "the node is busy: try again");
    }
    Ok(rx.await.unwrap_or(error(503, "the node is shutting down")))
}

/// A POST's JSON body, once the writer may write: or the answer that refuses it (403 for
/// the token, 400 for the body, saying `shape`).
async fn posted<T: serde::de::DeserializeOwned>(
    sock: &mut TcpStream,
    head: &[u8],
    w: &Writes,
    shape: &str,
) -> std::result::Result<T, (u16, Value)> {
    if let Some(why) = write_refusal(w, head) {
        return Err(error(403, why));
    }
    let body = read_body(sock, head)
        .await
        .map_err(|e| error(400, &e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| error(400, &format!("{shape}: {e}")))
}

/// Why a write may not go ahead: off loopback without a token, or a wrong token.
fn write_refusal(w: &Writes, head: &[u8]) -> Option<&'static str> {
    let given = header(head, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::trim).map(String::from));
    match (&w.token, w.remote) {
        (None, true) => Some("writes off loopback need the node to run with --admin-token-file"),
        (Some(t), _) if given.as_deref() != Some(t.as_str()) => {
            Some("a POST needs `authorization: Bearer <token>` with this node's token")
        }
        _ => None,
    }
}

/// A header's value (the first with that name, case-insensitive).
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The request body after `head` (which may hold its start), by `content-length`.
async fn read_body(sock: &mut TcpStream, head: &[u8]) -> Result<Vec<u8>> {
    let len: usize = header(head, "content-length")
        .context("a body needs content-length")?
        .parse()
        .context("content-length is not a number")?;
    if len > MAX_BODY {
        bail!("a body of {len} bytes (at most {MAX_BODY})");
    }
    let start = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |p| p + 4);
    let mut body = head[start..].to_vec();
    body.truncate(len);
    let mut buf = [0u8; 8192];
    while body.len() < len {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the end of the body");
        }
        body.extend_from_slice(&buf[..n.min(len - body.len())]);
    }
    Ok(body)
}

async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the end of the request head");
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
    }
}

/// `(method, path)` from `METHOD PATH HTTP/1.x`.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && version.starts_with("HTTP/1.") && path.starts_with('/'))
        .then_some((method, path))
}

async fn respond(sock: &mut TcpStream, code: u16, ctype: &str, body: &[u8]) -> Result<()> {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await?;
    Ok(())
}

/// Prometheus text exposition of a snapshot.
pub fn metrics(s: &NodeStatus) -> String {
    let mut m = Metrics::default();
    m.gauge(
        "provnet_info",
        "Build and identity of this node.",
        &[&[
            ("version", &s.software_version),
            ("peer_id", &s.peer_id),
            ("roles", &s.roles.join(",")),
            ("netuid", &s.netuid.to_string()),
        ]],
        &[1.0],
    );
    m.gauge("provnet_epoch", "Current epoch.", &[&[]], &[s.epoch as f64]);
    m.gauge(
        "provnet_epoch_seconds_left",
        "Seconds until the current epoch ends.",
        &[&[]],
        &[s.epoch_ends_ms.saturating_sub(s.at_ms) as f64 / 1e3],
    );
    m.gauge(
        "provnet_peers",
        "Connected peers.",
        &[&[]],
        &[s.gossip.connected_peers as f64],
    );
    let g = &s.gossip.received;
    m.counter(
        "provnet_gossip_accepted_total",
        "Gossip messages accepted and relayed.",
        &[&[]],
        &[g.accepted as f64],
    );
    m.by_reason(
        "provnet_gossip_rejected_total",
        "Gossip messages rejected (sender penalised), by reason.",
        &g.rejected,
    );
    m.by_reason(
        "provnet_gossip_ignored_total",
        "Gossip messages ignored (not relayed, no penalty), by reason.",
        &g.ignored,
    );
    m.counter(
        "provnet_gossip_published_total",
        "Messages this node published.",
        &[&[]],
        &[s.gossip.published as f64],
    );
    m.counter(
        "provnet_gossip_publish_failures_total",
        "Publishes that failed (no peers on the topic, mostly).",
        &[&[]],
        &[s.gossip.publish_failures as f64],
    );
    m.counter(
        "provnet_gossip_connections_refused_total",
        "Connections refused by the connection limits.",
        &[&[]],
        &[s.gossip.connections_refused as f64],
    );
    m.gauge(
        "provnet_ledger_backlog",
        "Weights messages and registrations waiting for the node's ledger loop.",
        &[&[]],
        &[s.gossip.ledger_backlog as f64],
    );
    m.counter(
        "provnet_ledger_dropped_total",
        "Registrations dropped past the ledger backlog's bound.",
        &[&[]],
        &[s.gossip.ledger_dropped as f64],
    );
    if let Some(c) = &s.court {
        m.per_key(
            "provnet_disputes_total",
            "Disputes whose verdict became final, by verdict.",
            "verdict",
            &c.verdicts,
        );
        m.histogram(
            "provnet_dispute_verdict_seconds",
            "Time from a dispute's opening to its final verdict.",
            &c.verdict_seconds,
        );
        m.gauge(
            "provnet_disputes_open",
            "Disputes running.",
            &[&[]],
            &[f64::from(c.disputes_open)],
        );
        m.gauge(
            "provnet_claims_open",
            "Claims inside their dispute window (or with a dispute running).",
            &[&[]],
            &[f64::from(c.claims_open)],
        );
        m.by_reason(
            "provnet_court_refused_total",
            "Claims, disputes, reveals, leaf states and attestations the court refused, by reason.",
            &c.refused,
        );
        if let Some(b) = c.balance {
            m.gauge(
                "provnet_account_balance",
                "This node's balance (bonds held not counted).",
                &[&[]],
                &[b as f64],
            );
        }
    }
    if let Some(mi) = &s.miner {
        m.gauge(
            "provnet_miner_queue_depth",
            "Challenges waiting to be proved.",
            &[&[]],
            &[mi.queue_depth as f64],
        );
        m.gauge(
            "provnet_miner_queue_capacity",
            "Most challenges the queue holds.",
            &[&[]],
            &[mi.queue_capacity as f64],
        );
        m.gauge(
            "provnet_miner_backend_info",
            "The proving backend in use (value 1).",
            &[&[("backend", mi.backend.as_str())]],
            &[1.0],
        );
        m.gauge(
            "provnet_miner_in_flight",
            "Proofs being made now.",
            &[&[]],
            &[mi.in_flight as f64],
        );
        m.counter(
            "provnet_miner_proofs_total",
            "Proving jobs by result.",
            &[
                &[("result", "proved")],
                &[("result", "failed")],
                &[("result", "expired")],
            ],
            &[
                mi.proved as f64,
                mi.failed as f64,
                mi.dropped_expired as f64,
            ],
        );
        m.counter(
            "provnet_miner_proofs_published_total",
            "Proofs published to the network.",
            &[&[]],
            &[mi.published as f64],
        );
        m.by_reason(
            "provnet_miner_refused_total",
            "Challenges the miner did not queue, by reason.",
            &mi.refused,
        );
        m.histogram(
            "provnet_proving_seconds",
            "Time to prove one segment.",
            &mi.prove_seconds,
        );
    }
    if let Some(v) = &s.validator {
        m.counter(
            "provnet_proofs_verified_total",
            "Proofs verified (every submission is).",
            &[&[]],
            &[v.verified as f64],
        );
        let sum = |f: fn(&provnet_wire::MinerRanking) -> u64| {
            v.rankings.iter().map(f).sum::<u64>() as f64
        };
        m.counter(
            "provnet_verification_failures_total",
            "Proofs that scored zero, by reason.",
            &[
                &[("reason", "invalid")],
                &[("reason", "copied")],
                &[("reason", "replayed")],
                &[("reason", "late")],
            ],
            &[
                sum(|r| r.invalid),
                sum(|r| r.copied),
                sum(|r| r.replayed),
                sum(|r| r.late),
            ],
        );
        m.by_reason(
            "provnet_validator_refused_total",
            "Challenges and proofs refused before verification, by reason.",
            &v.refused,
        );
        m.gauge(
            "provnet_verify_queue_depth",
            "Proofs waiting for verification.",
            &[&[]],
            &[v.verify_queue as f64],
        );
        m.counter(
            "provnet_verify_batches_total",
            "Batch verifications run.",
            &[&[]],
            &[v.verify_batches as f64],
        );
        m.gauge(
            "provnet_open_challenges",
            "Challenges still open for proofs.",
            &[&[]],
            &[v.open_challenges as f64],
        );
        if let Some(e) = v.last_committed_epoch {
            m.gauge(
                "provnet_weights_last_set_epoch",
                "Last epoch whose weights this validator set (committed).",
                &[&[]],
                &[e as f64],
            );
        }
        if let Some(e) = v.last_revealed_epoch {
            m.gauge(
                "provnet_weights_last_revealed_epoch",
                "Last epoch whose weights this validator revealed.",
                &[&[]],
                &[e as f64],
            );
        }
        let miners: Vec<[(&str, &str); 1]> = v
            .rankings
            .iter()
            .map(|r| [("miner", &r.miner[..])])
            .collect();
        let labels: Vec<&[(&str, &str)]> = miners.iter().map(|l| &l[..]).collect();
        m.gauge(
            "provnet_miner_weight",
            "This validator's weight per miner, last closed epoch (of 65535).",
            &labels,
            &v.rankings
                .iter()
                .map(|r| r.weight as f64)
                .collect::<Vec<_>>(),
        );
        m.gauge(
            "provnet_miner_score",
            "Moving-average score per miner.",
            &labels,
            &v.rankings.iter().map(|r| r.score).collect::<Vec<_>>(),
        );
    }
    if let Some(c) = &s.challenger {
        m.counter(
            "provnet_challenges_published_total",
            "Challenges this node published.",
            &[&[]],
            &[c.published as f64],
        );
        m.counter(
            "provnet_challenge_publish_failures_total",
            "Challenges that could not be published.",
            &[&[]],
            &[c.publish_failures as f64],
        );
    }
    if let Some(l) = &s.ledger {
        if let Some(e) = l.last_consensus_epoch {
            m.gauge(
                "provnet_consensus_last_epoch",
                "Last epoch with consensus and rewards.",
                &[&[]],
                &[e as f64],
            );
        }
        m.gauge(
            "provnet_consensus_held",
            "1 while the node fetches missed weights from peers and holds consensus.",
            &[&[]],
            &[f64::from(u8::from(l.catching_up_from.is_some()))],
        );
        m.counter(
            "provnet_owner_rewards_total",
            "Emission paid to the subnet owner.",
            &[&[]],
            &[l.owner_total as f64],
        );
        m.per_key(
            "provnet_miner_rewards_total",
            "Emission paid per miner.",
            "miner",
            &l.miner_totals,
        );
        m.per_key(
            "provnet_validator_rewards_total",
            "Dividends paid per validator.",
            "validator",
            &l.validator_totals,
        );
        m.by_reason(
            "provnet_weights_refused_total",
            "Weight commits and reveals refused, by reason.",
            &l.refused,
        );
    }
    m.out
}

#[derive(Default)]
struct Metrics {
    out: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn samples(&mut self, name: &str, labels: &[&[(&str, &str)]], values: &[f64]) {
        for (l, v) in labels.iter().zip(values) {
            let _ = writeln!(self.out, "{name}{} {}", label_set(l), number(*v));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&[(&str, &str)]], values: &[f64]) {
        self.family(name, "gauge", help);
        self.samples(name, labels, values);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[&[(&str, &str)]], values: &[f64]) {
        self.family(name, "counter", help);
        self.samples(name, labels, values);
    }

    fn by_reason(&mut self, name: &str, help: &str, map: &BTreeMap<String, u64>) {
        self.per_key(name, help, "reason", map);
    }

    /// A counter family with one sample per key of `map`, labelled `label`.
    fn per_key(&mut self, name: &str, help: &str, label: &str, map: &BTreeMap<String, u64>) {
        self.family(name, "counter", help);
        for (key, n) in map {
            let _ = writeln!(self.out, "{name}{} {n}", label_set(&[(label, key)]));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, h: &provnet_wire::status::Histogram) {
        self.family(name, "histogram", help);
        for (b, n) in h.bounds.iter().zip(&h.buckets) {
            let le = number(*b);
            let _ = writeln!(self.out, "{name}_bucket{} {n}", label_set(&[("le", &le)]));
        }
        let _ = writeln!(
            self.out,
            "{name}_bucket{} {}",
            label_set(&[("le", "+Inf")]),
            h.count
        );
        let _ = writeln!(self.out, "{name}_sum {}", number(h.sum));
        let _ = writeln!(self.out, "{name}_count {}", h.count);
    }
}

fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provnet_wire::status::Histogram;
    use provnet_wire::{MinerRanking, MinerStatus, ValidatorStatus};

    fn writes(token: Option<&str>, remote: bool) -> Writes {
        Writes {
            tx: mpsc::channel(1).0,
            token: token.map(String::from),
            remote,
        }
    }

    #[test]
    fn writes_off_loopback_need_the_token_and_a_token_is_always_checked() {
        let bare = b"POST /claims HTTP/1.1\r\nhost: x\r\n\r\n";
        let good = b"POST /claims HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n";
        let bad = b"POST /claims HTTP/1.1\r\nauthorization: Bearer nope\r\n\r\n";
        assert!(write_refusal(&writes(None, false), bare).is_none());
        assert!(write_refusal(&writes(None, true), good).is_some());
        let t = Some("0123456789abcdef");
        for remote in [false, true] {
            assert!(write_refusal(&writes(t, remote), good).is_none());
            assert!(write_refusal(&writes(t, remote), bad).is_some());
            assert!(write_refusal(&writes(t, remote), bare).is_some());
        }
    }

    #[test]
    fn request_lines_parse_and_junk_does_not() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe garbage\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET metrics HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn non_loopback_binds_need_an_explicit_opt_in() {
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9100".parse().expect("addr");
        assert!(check_bind(lo, false).is_ok());
        let e = check_bind(any, false).expect_err("refused").to_string();
        assert!(e.contains("--admin-allow-remote"), "{e}");
        assert!(check_bind(any, true).is_ok());
    }

    #[test]
    fn metrics_render_counters_histograms_and_escaped_labels() {
        let mut h = Histogram::with_bounds(&[0.01, 0.1]);
        h.observe(0.005);
        h.observe(0.05);
        h.observe(3.0);
        let s = NodeStatus {
            roles: vec!["miner".into(), "validator".into()],
            software_version: "0.1.0\"x".into(),
            miner: Some(MinerStatus {
                proved: 3,
                prove_seconds: h,
                ..Default::default()
            }),
            validator: Some(ValidatorStatus {
                verified: 7,
                rankings: vec![MinerRanking {
                    miner: "ab".into(),
                    invalid: 2,
                    weight: 65535,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = metrics(&s);
        for line in [
            "provnet_proofs_verified_total 7",
            "provnet_verification_failures_total{reason=\"invalid\"} 2",
            "provnet_proving_seconds_bucket{le=\"0.01\"} 1",
            "provnet_proving_seconds_bucket{le=\"0.1\"} 2",
            "provnet_proving_seconds_bucket{le=\"+Inf\"} 3",
            "provnet_proving_seconds_count 3",
            "provnet_miner_proofs_total{result=\"proved\"} 3",
            "provnet_miner_weight{miner=\"ab\"} 65535",
            "# TYPE provnet_proving_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("version=\"0.1.0\\\"x\""), "{text}");
        // Every sample line is `name{labels} value` with a number for the value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().expect("value");
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
}
