//! Fetching a node's status from its admin endpoint (plain HTTP/1.1 on loopback), and a
//! feed thread per node that polls it and retries forever.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use provnet_wire::NodeStatus;

use crate::app::Feed;

/// Largest status body accepted.
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// `GET /status` from `addr` (`host:port`), parsed.
pub fn fetch_status(addr: &str, timeout: Duration) -> Result<NodeStatus, String> {
    let body = get(addr, "/status", timeout)?;
    serde_json::from_slice(&body).map_err(|e| format!("bad status JSON: {e}"))
}

/// The body of a `GET path` that answered 200.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let (code, head, body) = request(addr, "GET", path, "", b"", timeout)?;
    if code != 200 {
        return Err(format!("admin endpoint answered {head:?}"));
    }
    Ok(body)
}

/// One HTTP/1.1 request (`headers`: extra header lines, each ending in `\r\n`): the status
/// code, the status line and the body, whatever the code.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String, Vec<u8>), String> {
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&sock_addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|()| s.write_all(body))
    .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut resp)
        .map_err(|e| e.to_string())?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response")?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    Ok((code, status_line, resp[split + 4..].to_vec()))
}

/// Polls each address every `every`, sending `(index, Feed)` until `stop` is set or the
/// receiver goes away. A node that does not answer is reported and retried.
pub fn spawn_feeds(
    addrs: Vec<String>,
    every: Duration,
    tx: SyncSender<(usize, Feed)>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            let tx = tx.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("tui-feed-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let feed = match fetch_status(&addr, every.max(Duration::from_secs(1))) {
                            Ok(s) => Feed::Status(Box::new(s)),
                            Err(e) => Feed::Error(e),
                        };
                        if tx.send((i, feed)).is_err() {
                            return;
                        }
                        // Sleep in short steps so quitting is prompt.
                        while t.elapsed() < every && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
                .expect("spawning a feed thread")
        })
        .collect()
}
