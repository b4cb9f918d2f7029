//! The verification pool: one dedicated thread verifies whatever proofs have queued up as
//! one batch per segment (one shared final exponentiation), checked one by one when a batch
//! fails, and reports each verdict. The queue is bounded; [`crate::queue`] stands in front
//! of it.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use provnet_kernels::{ProofContext, ProofFile};
use provnet_wire::PublicKey;

use crate::engine::VerifyingModel;

/// One proof to verify.
pub struct VerifyJob {
    pub challenge_id: [u8; 32],
    pub miner: PublicKey,
    pub model: Arc<VerifyingModel>,
    pub file: ProofFile,
}

/// A verdict on a [`VerifyJob`].
pub struct Verdict {
    pub challenge_id: [u8; 32],
    pub miner: PublicKey,
    pub result: std::result::Result<(), String>,
}

/// Verifies proofs on a dedicated thread: whatever has queued up while it worked is
/// verified as one batch per segment (one shared final exponentiation), checked one by one when a
/// batch fails so every proof gets its own verdict.
pub struct VerifyPool {
    tx: Option<mpsc::SyncSender<VerifyJob>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PoolStats>,
}

#[derive(Default)]
struct PoolStats {
    queued: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicU64,
}

/// Most proofs verified together.
pub const MAX_BATCH: usize = 256;

impl VerifyPool {
    /// `capacity` bounds the queue; `on_verdict` is called on the pool's thread.
    pub fn start(
        capacity: usize,
        on_verdict: impl Fn(Verdict) + Send + 'static,
    ) -> std::io::Result<VerifyPool> {
        let (tx, rx) = mpsc::sync_channel::<VerifyJob>(capacity);
        let stats = Arc::new(PoolStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || verify_loop(&rx, &st, &on_verdict))?;
        Ok(VerifyPool {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Queues a job; hands it back if the queue is full.
    pub fn submit(&self, job: VerifyJob) -> std::result::Result<(), Box<VerifyJob>> {
        use std::sync::atomic::Ordering;
        let tx = self.tx.as_ref().expect("open until dropped");
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.try_send(job).map_err(|e| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::TrySendError::Full(j) | mpsc::TrySendError::Disconnected(j) => Box::new(j),
            }
        })
    }

    pub fn queued(&self) -> usize {
        self.stats.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.stats
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn verify_loop(rx: &mpsc::Receiver<VerifyJob>, st: &PoolStats, on_verdict: &dyn Fn(Verdict)) {
    use std::sync::atomic::Ordering;
    let mut rng = rand::rngs::OsRng;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        st.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        // One batch per (model, segment).
        let mut groups: BTreeMap<([u8; 32], u32), Vec<VerifyJob>> = BTreeMap::new();
        for j in jobs {
            groups
                .entry((j.model.model.id(), j.file.segment))
                .or_default()
                .push(j);
        }
        for ((_, segment), group) in groups {
            st.batches.fetch_add(1, Ordering::Relaxed);
            let vm = group[0].model.clone();
            let results: Vec<std::result::Result<(), String>> =
                match vm.verifiers.get(segment as usize) {
                    None => group
                        .iter()
                        .map(|_| Err(format!("segment {segment} does not exist")))
                        .collect(),
                    Some(verifier) => {
                        let items: Vec<(&ProofFile, ProofContext)> =
                            group.iter().map(|j| (&j.file, j.file.context())).collect();
                        verifier
                            .verify_files(&vm.model, &items, &mut rng)
                            .into_iter()
                            .map(|r| r.map_err(|e| e.to_string()))
                            .collect()
                    }
                };
            for (job, result) in group.into_iter().zip(results) {
                on_verdict(Verdict {
                    challenge_id: job.challenge_id,
                    miner: job.miner,
                    result,
                });
            }
        }
    }
}
