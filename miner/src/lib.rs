//! provnet's miner: takes challenges into a bounded queue, drops those that expire while
//! they wait, proves the rest on a pool of worker threads off the caller's async runtime,
//! and hands back signed-ready [`ProofSubmission`]s bound to the miner's key.
//!
//! No networking here: the node feeds [`Miner::offer`] from gossip and publishes what the
//! `on_done` callback gives it. Proving goes through the kernels' [`ProverBackend`] seam,
//! so a GPU backend plugs in without touching the queue.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use provnet_kernels::keys::SegmentKey;
use provnet_kernels::{
    prove_segment_many, KernelError, Model, ModelKeys, ProofContext, ProverBackend,
};
use provnet_wire::status::Histogram;
use provnet_wire::{unix_ms, Challenge, MinerStatus, ProofSubmission, ProofSystem, PublicKey};

/// How a miner works.
#[derive(Clone, Debug)]
pub struct MinerConfig {
    /// Threads the proving pool uses (arkworks parallelises each proof over them).
    pub threads: usize,
    /// Proofs made at the same time (worker threads taking jobs from the queue).
    pub max_concurrent: usize,
    /// Challenges waiting to be proved; more are refused with [`Refusal::QueueFull`].
    pub queue_capacity: usize,
    /// A job whose deadline is closer than this when a worker takes it is dropped: its
    /// proof would arrive too late to count.
    pub deadline_margin_ms: u64,
    /// Queued challenges for the same segment a worker proves together, at most: one batch
    /// per MSM on the backend. 1 proves one at a time (right for the CPU, where a batch
    /// only delays the first proof); a GPU gains throughput from more.
    pub batch: usize,
    /// Keys whose challenges this miner proves: the genesis validators, which issue and
    /// score them. Anyone else's (a request, a self-challenge, junk) is refused. `None`
    /// proves anyone's (a development network without a genesis).
    pub issuers: Option<std::collections::BTreeSet<PublicKey>>,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            threads: 2,
            max_concurrent: 1,
            queue_capacity: 64,
            deadline_margin_ms: 50,
            batch: 1,
            issuers: None,
        }
    }
}

/// A model this miner proves, with every segment's proving key loaded once.
pub struct ProvingModel {
    pub model: Arc<Model>,
    keys: Vec<(SegmentKey, [u8; 32])>,
}

impl ProvingModel {
    /// Loads a model directory and all of its proving keys (hash-checked).
    pub fn load(dir: &Path) -> Result<ProvingModel, KernelError> {
        let model = Model::load(dir)?;
        let index = ModelKeys::open(dir, &model)?;
        let keys = (0..model.segments.len())
            .map(|i| {
                let (key, vk_id) = (index.proving_key(i)?, index.vk_id(i)?);
                // Proofs verify under the key embedded in the proving key, whatever the
                // index says: the two must agree, or every proof would be refused.
                if ModelKeys::embedded_vk_id(&key.pk) != vk_id {
                    return Err(KernelError::BadKeys {
                        segment: i,
                        reason: "the proving key embeds another verifying key than the index names"
                            .into(),
                    });
                }
                Ok((key, vk_id))
            })
            .collect::<Result<Vec<_>, KernelError>>()?;
        Ok(ProvingModel {
            model: Arc::new(model),
            keys,
        })
    }
}

/// Why a challenge was not queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error("segment {segment} does not exist (the model has {count})")]
    NoSuchSegment { segment: u32, count: usize },
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("the queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("the deadline has passed")]
    Expired,
    #[error("already queued")]
    Duplicate,
    #[error("the miner is stopping")]
    Stopping,
    #[error("the sender is not a validator: only validators' challenges are proved")]
    NotAnIssuer,
}

impl Refusal {
    /// A stable name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::UnknownModel(_) => "unknown_model",
            Refusal::NoSuchSegment { .. } => "no_such_segment",
            Refusal::BadInput(_) => "bad_input",
            Refusal::QueueFull(_) => "queue_full",
            Refusal::Expired => "expired",
            Refusal::Duplicate => "duplicate",
            Refusal::Stopping => "stopping",
            Refusal::NotAnIssuer => "not_an_issuer",
        }
    }
}

/// A finished proof, ready to publish.
#[derive(Clone, Debug)]
pub struct Proved {
    pub challenge_id: [u8; 32],
    pub deadline_ms: u64,
    pub submission: ProofSubmission,
    /// Time in the prover.
    pub prove_ms: f64,
    /// Time in the queue before a worker took it.
    pub waited_ms: f64,
}

/// What became of a queued challenge.
#[derive(Clone, Debug)]
pub enum Done {
    Proved(Box<Proved>),
    Failed {
        challenge_id: [u8; 32],
        error: String,
    },
    /// Dropped from the queue: the deadline came too close before a worker was free.
    Expired {
        challenge_id: [u8; 32],
    },
}

struct Job {
    challenge_id: [u8; 32],
    challenge: Challenge,
    queued: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    in_flight: usize,
    stopping: bool,
    stats: MinerStatus,
    prove_ms: VecDeque<f64>,
}

const PROVE_SAMPLES: usize = 512;

/// Bucket bounds of the proving-time histogram, seconds: a fixture segment proves in
/// 10-100 ms on a CPU; big segments and loaded machines take seconds.
const PROVE_SECONDS_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type OnDone = Box<dyn Fn(Done) + Send + Sync>;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    models: HashMap<[u8; 32], ProvingModel>,
    miner: PublicKey,
    cfg: MinerConfig,
    pool: rayon::ThreadPool,
    backend: Arc<dyn ProverBackend>,
    on_done: OnDone,
}

/// The queue and its workers. Dropping it stops the workers after their current proof.
pub struct Miner {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Miner {
    /// Starts `cfg.max_concurrent` workers proving for `miner` (its ed25519 public key).
    /// `on_done` is called from a worker thread for every queued challenge, exactly once.
    pub fn start(
        models: Vec<ProvingModel>,
        miner: PublicKey,
        backend: Arc<dyn ProverBackend>,
        cfg: MinerConfig,
        on_done: impl Fn(Done) + Send + Sync + 'static,
    ) -> std::io::Result<Miner> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads.max(1))
            .thread_name(|i| format!("prover-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let state = State {
            stats: MinerStatus {
                queue_capacity: cfg.queue_capacity,
                threads: cfg.threads.max(1),
                max_concurrent: cfg.max_concurrent.max(1),
                prove_seconds: Histogram::with_bounds(PROVE_SECONDS_BOUNDS),
                backend: backend.name().to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            models: models.into_iter().map(|m| (m.model.id(), m)).collect(),
            miner,
            cfg,
            pool,
            backend,
            on_done: Box::new(on_done),
        });
        let workers = (0..shared.cfg.max_concurrent.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("miner-{i}"))
                    .spawn(move || work(&s))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Miner { shared, workers })
    }

    /// Queues a challenge after checking it can be proved: issued by a validator, a known
    /// model and segment, an input of the right length and range, a deadline still ahead,
    /// room in the queue.
    pub fn offer(
        &self,
        issuer: &PublicKey,
        challenge_id: [u8; 32],
        challenge: Challenge,
    ) -> Result<(), Refusal> {
        let issued = match &self.shared.cfg.issuers {
            Some(set) if !set.contains(issuer) => Err(Refusal::NotAnIssuer),
            _ => Ok(()),
        };
        let checked = issued.and_then(|()| self.check(&challenge));
        let mut st = self.shared.state.lock().expect("miner state");
        let refused = |st: &mut State, r: Refusal| {
            *st.stats.refused.entry(r.as_str().into()).or_default() += 1;
            Err(r)
        };
        if let Err(r) = checked {
            return refused(&mut st, r);
        }
        if st.stopping {
            return refused(&mut st, Refusal::Stopping);
        }
        if st.queue.iter().any(|j| j.challenge_id == challenge_id) {
            return refused(&mut st, Refusal::Duplicate);
        }
        if st.queue.len() >= self.shared.cfg.queue_capacity {
            let n = st.queue.len();
            return refused(&mut st, Refusal::QueueFull(n));
        }
        st.queue.push_back(Job {
            challenge_id,
            challenge,
            queued: Instant::now(),
        });
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn check(&self, c: &Challenge) -> Result<(), Refusal> {
        if c.deadline_ms <= unix_ms(SystemTime::now()) {
            return Err(Refusal::Expired);
        }
        let pm = self
            .shared
            .models
            .get(&c.model_id)
            .ok_or_else(|| Refusal::UnknownModel(hex8(&c.model_id)))?;
        let seg = pm
            .model
            .segment(c.segment as usize)
            .map_err(|_| Refusal::NoSuchSegment {
                segment: c.segment,
                count: pm.model.segments.len(),
            })?;
        seg.check_input(&c.input)
            .map_err(|e| Refusal::BadInput(e.to_string()))
    }

    /// Counters and recent prove times (`published` is the node's to fill in).
    pub fn stats(&self) -> MinerStatus {
        let st = self.shared.state.lock().expect("miner state");
        let mut s = st.stats.clone();
        s.queue_depth = st.queue.len();
        s.in_flight = st.in_flight;
        let mut v: Vec<f64> = st.prove_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        s.prove_ms_p50 = percentile(&v, 0.50);
        s.prove_ms_p95 = percentile(&v, 0.95);
        s
    }

    /// The miner's public key, which every proof is bound to.
    pub fn public_key(&self) -> PublicKey {
        self.shared.miner
    }

    /// Stops taking jobs, drops what is queued, and waits for proofs in progress.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        {
            let mut st = self.shared.state.lock().expect("miner state");
            st.stopping = true;
            st.queue.clear();
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.halt();
    }
}

pub use provnet_wire::status::percentile;

fn hex8(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// Takes the next live job and, up to the batch size, queued live jobs for the same
/// segment; expired ones met on the way are dropped and reported.
fn take_batch(s: &Shared, st: &mut State, expired: &mut Vec<[u8; 32]>) -> Vec<Job> {
    let now = unix_ms(SystemTime::now());
    // A job is worth starting only if a proof made now would still arrive in time: its
    // deadline must be further than the margin plus the recent median prove time. Under
    // overload this sheds what would be late instead of proving it anyway, so the worker
    // goes on to jobs it can still answer on time.
    let expected_ms = {
        let mut recent: Vec<f64> = st.prove_ms.iter().copied().collect();
        recent.sort_by(f64::total_cmp);
        recent.get(recent.len() / 2).copied().unwrap_or(0.0) as u64
    };
    let live = |j: &Job| j.challenge.deadline_ms > now + s.cfg.deadline_margin_ms + expected_ms;
    let mut batch: Vec<Job> = Vec::new();
    let mut rest = VecDeque::with_capacity(st.queue.len());
    while let Some(job) = st.queue.pop_front() {
        if !live(&job) {
            st.stats.dropped_expired += 1;
            expired.push(job.challenge_id);
            continue;
        }
        let fits = match batch.first() {
            None => true,
            Some(f) => {
                batch.len() < s.cfg.batch.max(1)
                    && f.challenge.model_id == job.challenge.model_id
                    && f.challenge.segment == job.challenge.segment
            }
        };
        if fits {
            batch.push(job);
        } else {
            rest.push_back(job);
        }
        if batch.len() >= s.cfg.batch.max(1) {
            break;
        }
    }
    rest.extend(st.queue.drain(..));
    st.queue = rest;
    batch
}

fn work(s: &Shared) {
    loop {
        let batch = {
            let mut st = s.state.lock().expect("miner state");
            loop {
                if st.stopping {
                    return;
                }
                let mut expired = Vec::new();
                let batch = take_batch(s, &mut st, &mut expired);
                if !expired.is_empty() {
                    drop(st);
                    for challenge_id in expired {
                        (s.on_done)(Done::Expired { challenge_id });
                    }
                    st = s.state.lock().expect("miner state");
                }
                if !batch.is_empty() {
                    st.in_flight += batch.len();
                    break batch;
                }
                // The lock was let go to report expired jobs: a stop may have come
                // meanwhile, and its wake-up with it. Look before sleeping.
                if st.queue.is_empty() && !st.stopping {
                    st = s.wake.wait(st).expect("miner state");
                }
            }
        };
        let waited_ms: Vec<f64> = batch
            .iter()
            .map(|j| j.queued.elapsed().as_secs_f64() * 1e3)
            .collect();
        let t = Instant::now();
        let result = s.pool.install(|| prove(s, &batch));
        let prove_ms = t.elapsed().as_secs_f64() * 1e3;
        let done: Vec<Done> = {
            let mut st = s.state.lock().expect("miner state");
            st.in_flight -= batch.len();
            match result {
                Ok(submissions) => batch
                    .iter()
                    .zip(submissions)
                    .zip(waited_ms)
                    .map(|((job, submission), waited_ms)| {
                        st.stats.proved += 1;
                        if st.prove_ms.len() == PROVE_SAMPLES {
                            st.prove_ms.pop_front();
                        }
                        st.prove_ms.push_back(prove_ms);
                        st.stats.prove_seconds.observe(prove_ms / 1e3);
                        Done::Proved(Box::new(Proved {
                            challenge_id: job.challenge_id,
                            deadline_ms: job.challenge.deadline_ms,
                            submission,
                            prove_ms,
                            waited_ms,
                        }))
                    })
                    .collect(),
                Err(e) => batch
                    .iter()
                    .map(|job| {
                        st.stats.failed += 1;
                        Done::Failed {
                            challenge_id: job.challenge_id,
                            error: e.to_string(),
                        }
                    })
                    .collect(),
            }
        };
        for d in done {
            (s.on_done)(d);
        }
    }
}

/// Proves a batch of jobs for one segment (see [`take_batch`]).
fn prove(s: &Shared, jobs: &[Job]) -> Result<Vec<ProofSubmission>, KernelError> {
    let c = &jobs[0].challenge;
    let pm = s
        .models
        .get(&c.model_id)
        .expect("offer only queues known models");
    let index = c.segment as usize;
    let seg = pm.model.segment(index)?;
    let (pk, vk_id) = &pm.keys[index];
    let ctxs: Vec<ProofContext> = jobs
        .iter()
        .map(|j| ProofContext {
            challenge: j.challenge_id,
            nonce: j.challenge.nonce,
            miner: s.miner,
        })
        .collect();
    let work: Vec<(&[i64], &ProofContext)> = jobs
        .iter()
        .zip(&ctxs)
        .map(|(j, ctx)| (j.challenge.input.as_slice(), ctx))
        .collect();
    let proofs = prove_segment_many(
        s.backend.as_ref(),
        &pm.model,
        seg,
        pk,
        &work,
        &mut rand::rngs::OsRng,
    )?;
    Ok(proofs
        .into_iter()
        .zip(jobs.iter().zip(&ctxs))
        .map(|(p, (job, ctx))| {
            let pf = p.to_file(&pm.model, seg, vk_id, &job.challenge.input, ctx);
            ProofSubmission {
                challenge_id: job.challenge_id,
                model_id: job.challenge.model_id,
                segment: job.challenge.segment,
                vk_id: *vk_id,
                system: ProofSystem::Groth16Bn254,
                output: pf.output,
                proof: pf.proof,
            }
        })
        .collect())
}
