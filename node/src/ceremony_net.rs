//! The network's setup ceremony, as a node runs it before its roles start: for each genesis
//! model that names a ceremony, derive the initial parameters from the model and the
//! `.ptau`, follow (and, as a validator with stake, take part in) the ceremony of
//! [`provnet_validator::ceremony`], then install the agreed keys in
//! `<data-dir>/ceremony/<model id>/` and use that directory for the model.
//!
//! The node's part here is I/O: gossip in and out, steps fetched by hash over
//! request-response from whoever has them (checked against the hash and then verified),
//! steps served to peers from disk, contributions and verification off the async threads,
//! and its own ceremony messages published again every few seconds for nodes that start
//! late. That keeps running for the node's life.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use provnet_kernels::ceremony::{self, Transcript};
use provnet_kernels::ptau::Ptau;
use provnet_kernels::{keys, Model, ModelKeys};
use provnet_p2p::{NetEvent, NetworkHandle};
use provnet_validator::ceremony::{
    Action, Ceremony, CeremonyParams, CeremonyRefusal, Finished, Participant,
};
use provnet_wire::ceremony::{BlobRequest, Hash32, BLOB_CHUNK, MAX_STEP_BYTES};
use provnet_wire::{BlobResponse, CeremonyMessage, Message, PublicKey};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::genesis::{Genesis, GenesisCeremony, GenesisModel};

/// How often our own ceremony messages go out again (for nodes that joined late).
const REPUBLISH: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(200);
/// Ceremony messages held while the initial parameters are derived.
const EARLY_MESSAGES: usize = 4096;

/// Test-only misbehaviour of a validator in the ceremony (none outside `adversary` builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Contributes a step with its H query moved wrongly (well-formed, fails verification).
    #[cfg(feature = "adversary")]
    Garbage,
}

/// What `<data-dir>/ceremony/<model id>/done.json` records.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Done {
    genesis: String,
    model_id: String,
    state: String,
    vk_ids: Vec<String>,
    transcript_blake3: String,
    slots: Vec<(String, bool)>,
    beacon: String,
}

/// Where the ceremony stands, in a line, for the node's status while it runs.
pub type Progress = Arc<Mutex<String>>;

fn say(progress: &Progress, line: String) {
    if let Ok(mut p) = progress.lock() {
        *p = line;
    }
}

/// Steps this node can serve, by hash: their files.
#[derive(Clone, Default)]
struct Blobs(Arc<Mutex<HashMap<Hash32, PathBuf>>>);

impl Blobs {
    fn add(&self, hash: Hash32, path: PathBuf) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(hash, path);
        }
    }

    fn read(&self, req: &BlobRequest) -> BlobResponse {
        let path = match self.0.lock() {
            Ok(m) => m.get(&req.hash).cloned(),
            Err(_) => None,
        };
        let Some(path) = path else {
            return BlobResponse::default();
        };
        let read = || -> std::io::Result<BlobResponse> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path)?;
            let total = f.metadata()?.len();
            if req.offset >= total {
                return Ok(BlobResponse {
                    total,
                    data: Default::default(),
                });
            }
            f.seek(SeekFrom::Start(req.offset))?;
            let n = (total - req.offset).min(BLOB_CHUNK as u64) as usize;
            let mut data = vec![0u8; n];
            f.read_exact(&mut data)?;
            Ok(BlobResponse {
                total,
                data: data.into(),
            })
        };
        read().unwrap_or_else(|e| {
            warn!(target: "ceremony", path = %path.display(), "serving a step: {e}");
            BlobResponse::default()
        })
    }
}

/// Runs every ceremony the genesis names (one model after another) and returns the
/// genesis with those models pointing at their installed keys. Without any, returns it
/// unchanged and starts nothing.
pub async fn run_all(
    net: &NetworkHandle,
    genesis: Genesis,
    data_dir: &Path,
    misbehaviour: Option<Misbehaviour>,
    progress: &Progress,
) -> Result<Genesis> {
    if genesis.models.iter().all(|m| m.ceremony.is_none()) {
        return Ok(genesis);
    }
    let blobs = Blobs::default();
    serve(net, blobs.clone()).await?;
    let own: Arc<Mutex<Vec<CeremonyMessage>>> = Arc::default();
    tokio::spawn(republish(net.clone(), own.clone()));
    let mut g = genesis.clone();
    let hash = genesis.hash();
    let participants: Vec<Participant> = genesis
        .validators
        .iter()
        .map(|v| {
            Ok(Participant {
                key: crate::identity::hex32("validator hotkey", &v.hotkey)?,
                stake: v.stake,
            })
        })
        .collect::<Result<_>>()?;
    for m in &mut g.models {
        let Some(c) = m.ceremony.clone() else {
            continue;
        };
        let dir = run_one(
            net,
            m,
            &c,
            &participants,
            hash,
            data_dir,
            &blobs,
            &own,
            misbehaviour,
            progress,
        )
        .await
        .with_context(|| format!("the setup ceremony of model {}", m.name))?;
        let model = Model::load(&dir)?;
        let keys = ModelKeys::open(&dir, &model)?;
        m.vk_ids = (0..model.segments.len())
            .map(|i| Ok(hex::encode(keys.vk_id(i)?)))
            .collect::<Result<_>>()?;
        m.path = dir;
    }
    Ok(g)
}

/// Answers peers' step requests from `blobs`, for the node's life.
async fn serve(net: &NetworkHandle, blobs: Blobs) -> Result<()> {
    let mut rx = net.serve_blobs(64).await?;
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let b = blobs.clone();
            let r = req.request;
            let answer = tokio::task::spawn_blocking(move || b.read(&r))
                .await
                .unwrap_or_default();
            let _ = req.reply.send(answer);
        }
    });
    Ok(())
}

/// Publishes our ceremony messages again every few seconds.
async fn republish(net: NetworkHandle, own: Arc<Mutex<Vec<CeremonyMessage>>>) {
    let mut every = tokio::time::interval(REPUBLISH);
    loop {
        every.tick().await;
        let msgs = own.lock().map(|m| m.clone()).unwrap_or_default();
        for m in msgs {
            // Fails when no peer is subscribed yet: the next round tries again.
            let _ = net.publish(Message::Ceremony(m)).await;
        }
    }
}

fn now_ms() -> u64 {
    provnet_wire::unix_ms(std::time::SystemTime::now())
}

/// Where a node keeps a model's ceremony: its keys, transcript, steps and `done.json`.
pub fn keys_dir(data_dir: &Path, model_id: &Hash32) -> PathBuf {
    data_dir.join("ceremony").join(hex::encode(model_id))
}

/// A finished ceremony's record in `dir` (from [`keys_dir`]), as JSON.
pub fn record(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("done.json")).ok()?).ok()
}

/// Hex blake3 of a file, streamed.
pub fn file_blake3(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    h.update_reader(std::io::BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize().as_bytes()))
}

/// What finished work comes back to the loop with.
enum Work {
    Contributed {
        slot: usize,
        result: Result<(Hash32, u64, Transcript), String>,
    },
    Checked {
        slot: usize,
        step: Hash32,
        result: Result<Transcript, String>,
        fetched: bool,
    },
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    net: &NetworkHandle,
    m: &GenesisModel,
    c: &GenesisCeremony,
    participants: &[Participant],
    genesis_hash: Hash32,
    data_dir: &Path,
    blobs: &Blobs,
    own: &Arc<Mutex<Vec<CeremonyMessage>>>,
    misbehaviour: Option<Misbehaviour>,
    progress: &Progress,
) -> Result<PathBuf> {
    let model = Model::load(&m.path)?;
    let model_id = model.id();
    let out = keys_dir(data_dir, &model_id);
    let steps_dir = out.join("steps");
    if let Some(done) = finished_before(&out, &genesis_hash, &model)? {
        info!(target: "ceremony", model = %m.name, state = %done.state, "keys from this network's ceremony are installed already");
        // Still of use to nodes that join later: the steps, and our messages.
        resume_serving(&out, blobs, own);
        return Ok(out);
    }
    std::fs::create_dir_all(&steps_dir)
        .with_context(|| format!("creating {}", steps_dir.display()))?;
    let me: PublicKey = net.public_key();

    say(
        progress,
        format!("{}: deriving the initial parameters", m.name),
    );
    // Listen first: messages that come while the initial parameters are derived are held.
    let mut events = net.subscribe();
    let ptau_path = c.ptau.clone();
    let want_ptau = c.ptau_blake3.clone();
    let model_dir = m.path.clone();
    let derive = tokio::task::spawn_blocking(move || -> Result<Transcript> {
        let have = file_blake3(&ptau_path)?;
        if have != want_ptau {
            bail!(
                "{} has blake3 {have}, the genesis names {want_ptau}: every node needs the same \
                 phase-1 file",
                ptau_path.display()
            );
        }
        let model = Model::load(&model_dir)?;
        let mut ptau = Ptau::open(&ptau_path)?;
        Ok(ceremony::initial(
            &model,
            &mut ptau,
            &ptau_path.display().to_string(),
        )?)
    });
    tokio::pin!(derive);
    let mut early: Vec<(PublicKey, CeremonyMessage)> = Vec::new();
    let started = std::time::Instant::now();
    let initial = loop {
        tokio::select! {
            r = &mut derive => break r.context("deriving the initial parameters")??,
            ev = events.recv() => {
                if let Ok(NetEvent::Message(r)) = ev {
                    if let Message::Ceremony(cm) = &r.verified.message {
                        if cm.model_id == model_id && early.len() < EARLY_MESSAGES {
                            early.push((r.verified.sender, cm.clone()));
                        }
                    }
                }
            }
        }
    };
    info!(
        target: "ceremony",
        model = %m.name,
        segments = initial.segments.len(),
        ms = started.elapsed().as_millis() as u64,
        participants = participants.iter().filter(|p| p.stake > 0).count(),
        "initial parameters derived"
    );
    let params = CeremonyParams {
        start_ms: c.start_ms,
        slot_ms: c.slot_ms,
        beacon_iterations_exp: c.beacon_iterations_exp,
        genesis: genesis_hash,
    };
    let mut machine = Ceremony::new(initial, participants.to_vec(), params, me);
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(16);
    let mut tick = tokio::time::interval(TICK);
    let mut status = tokio::time::interval(Duration::from_secs(10));
    let mut pending: Vec<Action> = Vec::new();
    for (sender, cm) in early {
        pending.extend(on_message(&mut machine, &sender, &cm));
    }
    loop {
        for action in std::mem::take(&mut pending) {
            match action {
                Action::Publish(body) => {
                    let msg = CeremonyMessage { model_id, body };
                    if let Ok(mut o) = own.lock() {
                        o.push(msg.clone());
                    }
                    if let Err(e) = net.publish(Message::Ceremony(msg)).await {
                        debug!(target: "ceremony", "publish failed (sent again later): {e}");
                    }
                }
                Action::Contribute { slot, base } => {
                    info!(target: "ceremony", model = %m.name, slot, "contributing");
                    let tx = work_tx.clone();
                    let dir = steps_dir.clone();
                    let blobs = blobs.clone();
                    let name = hex::encode(me);
                    tokio::task::spawn_blocking(move || {
                        let result = contribute(&base, &name, &dir, &blobs, misbehaviour);
                        let _ = tx.blocking_send(Work::Contributed { slot, result });
                    });
                }
                Action::Fetch {
                    slot,
                    step,
                    len,
                    from,
                    base,
                } => {
                    let tx = work_tx.clone();
                    let net = net.clone();
                    let dir = steps_dir.clone();
                    let blobs = blobs.clone();
                    tokio::spawn(async move {
                        let work =
                            fetch_and_check(&net, slot, step, len, &from, *base, &dir, &blobs)
                                .await;
                        let _ = tx.send(work).await;
                    });
                }
                Action::Done(f) => {
                    install(&out, &m.path, &model, &f, &genesis_hash)?;
                    let mine: Vec<CeremonyMessage> = own
                        .lock()
                        .map(|o| {
                            o.iter()
                                .filter(|c| c.model_id == model_id)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    let bytes = provnet_wire::codec::encode(&mine)?;
                    std::fs::write(out.join(OWN_FILE), bytes)
                        .with_context(|| format!("writing {}", out.join(OWN_FILE).display()))?;
                    info!(
                        target: "ceremony",
                        model = %m.name,
                        accepted = f.slots.iter().filter(|s| s.1).count(),
                        skipped = f.slots.iter().filter(|s| !s.1).count(),
                        vk_ids = ?f.vk_ids.iter().map(|v| hex::encode(&v[..8])).collect::<Vec<_>>(),
                        "ceremony finished: keys installed"
                    );
                    return Ok(out);
                }
            }
        }
        if let Some(why) = machine.failed() {
            bail!("{why}");
        }
        let (slot, round, accepted, skipped) = machine.progress();
        say(
            progress,
            if slot < machine.slots() {
                format!(
                    "{}: slot {} of {}, round {round} ({accepted} accepted, {skipped} skipped)",
                    m.name,
                    slot + 1,
                    machine.slots()
                )
            } else {
                format!(
                    "{}: all {} slots decided ({accepted} accepted), waiting for 2/3 of stake \
                     on the final keys",
                    m.name,
                    machine.slots()
                )
            },
        );
        tokio::select! {
            _ = tick.tick() => pending.extend(heavy(|| machine.tick(now_ms()))),
            _ = status.tick() => {
                let (slot, round, accepted, skipped) = machine.progress();
                info!(target: "ceremony", model = %m.name, slot, round, accepted, skipped, slots = machine.slots(), "ceremony in progress");
            }
            Some(w) = work_rx.recv() => match w {
                Work::Contributed { slot, result } => match result {
                    Ok((step, len, next)) => {
                        pending.extend(heavy(|| machine.contributed(slot, step, len, next)))
                    }
                    Err(e) => warn!(target: "ceremony", slot, "our contribution failed: {e}"),
                },
                Work::Checked { slot, step, result, fetched } => {
                    if let Err(e) = &result {
                        warn!(target: "ceremony", slot, step = %hex::encode(&step[..8]), "step refused: {e}");
                    }
                    pending.extend(heavy(|| machine.checked(slot, step, result, fetched)));
                }
            },
            ev = events.recv() => match ev {
                Ok(NetEvent::Message(r)) => {
                    if let Message::Ceremony(cm) = &r.verified.message {
                        if cm.model_id == model_id {
                            pending.extend(on_message(&mut machine, &r.verified.sender, cm));
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(target: "ceremony", missed = n, "fell behind on gossip (their senders publish again)");
                }
                Err(_) => bail!("the network stopped"),
            },
        }
    }
}

/// Runs a call into the machine where it may block: deciding the last slot applies the
/// beacon (an x on every L and H point), seconds for a big model.
fn heavy<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn on_message(machine: &mut Ceremony, sender: &PublicKey, cm: &CeremonyMessage) -> Vec<Action> {
    match heavy(|| machine.on_message(sender, &cm.body)) {
        Ok(actions) => actions,
        Err(e) => {
            let level_warn = matches!(
                e,
                CeremonyRefusal::Equivocation { .. } | CeremonyRefusal::SecondStep { .. }
            );
            if level_warn {
                warn!(target: "ceremony", from = %hex::encode(&sender[..8]), "refused: {e}");
            } else {
                debug!(target: "ceremony", from = %hex::encode(&sender[..8]), "refused: {e}");
            }
            Vec::new()
        }
    }
}

/// Writes a step under `dir` as `<hash>.step` and serves it.
fn keep(dir: &Path, blobs: &Blobs, hash: Hash32, bytes: &[u8]) -> Result<(), String> {
    let path = dir.join(format!("{}.step", hex::encode(hash)));
    crate::prove::write_atomically(&path, bytes).map_err(|e| format!("{e:#}"))?;
    blobs.add(hash, path);
    Ok(())
}

fn contribute(
    base: &Transcript,
    name: &str,
    dir: &Path,
    blobs: &Blobs,
    misbehaviour: Option<Misbehaviour>,
) -> Result<(Hash32, u64, Transcript), String> {
    let next =
        ceremony::contribute(base, name, b"provnet network ceremony").map_err(|e| e.to_string())?;
    #[cfg_attr(not(feature = "adversary"), allow(unused_mut))]
    let mut step = next.last_step().ok_or("no step")?;
    let next = match misbehaviour {
        #[cfg(feature = "adversary")]
        Some(Misbehaviour::Garbage) => {
            step.segments[0].h_query.swap(0, 1);
            base.apply(&step).map_err(|e| e.to_string())?
        }
        _ => next,
    };
    let bytes = step.to_bytes();
    let hash = *blake3::hash(&bytes).as_bytes();
    keep(dir, blobs, hash, &bytes)?;
    Ok((hash, bytes.len() as u64, next))
}

/// Fetches a step from the first of `from` that serves all of it with the right hash,
/// then verifies it on `base`.
#[allow(clippy::too_many_arguments)]
async fn fetch_and_check(
    net: &NetworkHandle,
    slot: usize,
    step: Hash32,
    len: u64,
    from: &[PublicKey],
    base: Transcript,
    dir: &Path,
    blobs: &Blobs,
) -> Work {
    let max = if len == 0 { MAX_STEP_BYTES } else { len };
    let mut last = String::from("nobody to ask");
    let mut bytes = None;
    for key in from {
        if *key == net.public_key() {
            continue;
        }
        let Some(peer) = provnet_p2p::identity::peer_id(key) else {
            continue;
        };
        match fetch_from(net, peer, step, max).await {
            Ok(b) => {
                bytes = Some(b);
                break;
            }
            Err(e) => last = format!("{peer}: {e}"),
        }
    }
    let Some(bytes) = bytes else {
        return Work::Checked {
            slot,
            step,
            result: Err(format!("could not fetch the step: {last}")),
            fetched: false,
        };
    };
    let dir = dir.to_path_buf();
    let blobs = blobs.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = base
            .accept(&bytes)
            .map(|(t, _)| t)
            .map_err(|e| e.to_string());
        if r.is_ok() {
            keep(&dir, &blobs, step, &bytes)?;
        }
        r
    })
    .await
    .unwrap_or_else(|e| Err(format!("verification stopped: {e}")));
    Work::Checked {
        slot,
        step,
        result,
        fetched: true,
    }
}

async fn fetch_from(
    net: &NetworkHandle,
    peer: provnet_p2p::PeerId,
    step: Hash32,
    max: u64,
) -> Result<Vec<u8>, String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut total = None;
    loop {
        let r = net
            .blob(
                peer,
                BlobRequest {
                    hash: step,
                    offset: buf.len() as u64,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.total == 0 {
            return Err("does not hold the step".into());
        }
        if r.total > max || total.is_some_and(|t| t != r.total) {
            return Err(format!("claims a step of {} bytes", r.total));
        }
        total = Some(r.total);
        if r.data.is_empty() {
            return Err("sent an empty chunk".into());
        }
        buf.extend_from_slice(&r.data);
        if buf.len() as u64 >= r.total {
            break;
        }
    }
    if *blake3::hash(&buf).as_bytes() != step {
        return Err("sent bytes that do not hash to the step".into());
    }
    Ok(buf)
}

/// Our own ceremony messages, kept for republishing after a restart.
const OWN_FILE: &str = "own.cbor";

/// After a restart: serves the steps kept in `out` and republishes our messages.
fn resume_serving(out: &Path, blobs: &Blobs, own: &Arc<Mutex<Vec<CeremonyMessage>>>) {
    if let Ok(entries) = std::fs::read_dir(out.join("steps")) {
        for e in entries.flatten() {
            let name = e.file_name();
            let hash = name
                .to_str()
                .and_then(|n| n.strip_suffix(".step"))
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok());
            if let Some(hash) = hash {
                blobs.add(hash, e.path());
            }
        }
    }
    let mine: Vec<CeremonyMessage> = std::fs::read(out.join(OWN_FILE))
        .ok()
        .and_then(|b| provnet_wire::codec::decode(&b).ok())
        .unwrap_or_default();
    if let Ok(mut o) = own.lock() {
        o.extend(mine);
    }
}

/// The ceremony's keys, already installed for this genesis, if they are.
fn finished_before(out: &Path, genesis: &Hash32, model: &Model) -> Result<Option<Done>> {
    let Ok(bytes) = std::fs::read(out.join("done.json")) else {
        return Ok(None);
    };
    let done: Done = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            warn!(target: "ceremony", "{}: unreadable ({e}): running the ceremony again", out.display());
            return Ok(None);
        }
    };
    if done.genesis != hex::encode(genesis) || done.model_id != hex::encode(model.id()) {
        return Ok(None);
    }
    let keys = ModelKeys::open(out, model)?;
    for (i, want) in done.vk_ids.iter().enumerate() {
        if hex::encode(keys.vk_id(i)?) != *want {
            bail!(
                "{}: installed keys do not match the ceremony's record",
                out.display()
            );
        }
    }
    Ok(Some(done))
}

/// Installs the ceremony's keys with a copy of the model, the transcript and a record.
fn install(
    out: &Path,
    model_dir: &Path,
    model: &Model,
    f: &Finished,
    genesis: &Hash32,
) -> Result<()> {
    for file in ["model.cbor", "model.json"] {
        let from = model_dir.join(file);
        if from.exists() {
            std::fs::copy(&from, out.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let transcript = out.join("transcript.bin");
    f.transcript.write(&transcript)?;
    let record = format!(
        "network ceremony, final state {}, transcript blake3 {}; {} of {} slots accepted ({}); beacon {}",
        hex::encode(f.transcript.state_id()),
        hex::encode(f.transcript.hash()),
        f.slots.iter().filter(|s| s.1).count(),
        f.slots.len(),
        f.slots
            .iter()
            .map(|(k, a)| format!("{}:{}", hex::encode(&k[..8]), if *a { "accepted" } else { "skipped" }))
            .collect::<Vec<_>>()
            .join(", "),
        hex::encode(&f.beacon)
    );
    keys::install(
        out,
        model,
        f.transcript
            .segments
            .iter()
            .map(|pk| (pk.clone(), 0))
            .collect(),
        &record,
        crate::ceremony_cli::CEREMONY_TRUST,
    )?;
    let done = Done {
        genesis: hex::encode(genesis),
        model_id: hex::encode(model.id()),
        state: hex::encode(f.transcript.state_id()),
        vk_ids: f.vk_ids.iter().map(hex::encode).collect(),
        transcript_blake3: hex::encode(f.transcript.hash()),
        slots: f.slots.iter().map(|(k, a)| (hex::encode(k), *a)).collect(),
        beacon: hex::encode(&f.beacon),
    };
    std::fs::write(out.join("done.json"), serde_json::to_vec_pretty(&done)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
