//! `provnet devnet`: a whole subnet on this machine. Imports a bundled model, runs a
//! (development) setup, makes a key per node, writes a genesis, then starts a challenger,
//! the validators and the miners as separate `provnet run` processes on 127.0.0.1, each
//! with its own data dir. After `--duration` seconds (or Ctrl-C) it stops them with
//! SIGTERM and prints the final rankings, read from the validators' status and stores.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::{
    import, keys, prove_segment, CpuBackend, ImportOptions, Model, ModelKeys, ProofContext,
};
use provnet_validator::{Outcome, Store};
use provnet_wire::NodeStatus;
use serde::Serialize;
use serde_json::json;

use crate::genesis::{
    Genesis, GenesisAccount, GenesisCeremony, GenesisChallenger, GenesisMiner, GenesisModel,
    GenesisValidator,
};

#[derive(Args, Debug)]
pub struct DevnetArgs {
    #[arg(long, default_value_t = 4)]
    pub miners: usize,
    #[arg(long, default_value_t = 2)]
    pub validators: usize,
    /// Seconds to run once every node is up.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Epoch length in seconds.
    #[arg(long, default_value_t = 10)]
    pub epoch_secs: u64,
    /// Benchmark challenges per second, over all validators (each issues its share).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Proof requests per second from the challenger (an admitted key); every validator
    /// adopts each one with a challenge of its own.
    #[arg(long, default_value_t = 0.2)]
    pub request_rate: f64,
    /// Load test: junk challenges and proofs per second (each) from fresh keys, flooded by
    /// one more process while the devnet runs (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub junk_rate: f64,
    /// Import and set up this ONNX model instead of the bundled one (digits_mlp).
    #[arg(long, value_name = "FILE.onnx")]
    pub model: Option<PathBuf>,
    /// Honest inference nodes: each claims runs of the model (with trace commitments and
    /// bonds) at `--claim-rate`.
    #[arg(long, default_value_t = 0)]
    pub inference: usize,
    /// Inference nodes that corrupt one boundary tensor, at a random segment, in half of
    /// their claims (`adversary` builds).
    #[arg(long, default_value_t = 0)]
    pub cheaters: usize,
    /// Challengers that dispute half of the claims they hear, honest ones included, with a
    /// corrupted trace (`adversary` builds).
    #[arg(long, default_value_t = 0)]
    pub false_challengers: usize,
    /// Claims per second per inference node.
    #[arg(long, default_value_t = 0.2)]
    pub claim_rate: f64,
    /// The share of claims the honest challenger re-executes.
    #[arg(long, default_value_t = 1.0)]
    pub audit_rate: f64,
    /// Milliseconds from a challenge to its deadline.
    #[arg(long, default_value_t = 3_000)]
    pub deadline_ms: u64,
    /// Proving threads per miner, cycled over the miners (so rankings are earned).
    #[arg(long, value_delimiter = ',', default_value = "2,1")]
    pub miner_threads: Vec<usize>,
    /// Where the network lives (default: a fresh temporary directory, kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the model, keys and genesis (and devnet.json, naming every node) and exit
    /// without starting anything: for starting nodes by hand.
    #[arg(long)]
    pub setup_only: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keys from a single-party development setup instead of the network's ceremony among
    /// the validators.
    #[arg(long)]
    pub dev_setup: bool,
    /// The phase-1 file for the ceremony (default: the repository's test pot14, whose maker
    /// knows τ: a devnet is for development).
    #[arg(long, value_name = "FILE")]
    pub ptau: Option<PathBuf>,
    /// Milliseconds each validator has for its ceremony contribution.
    #[arg(long, default_value_t = 10_000)]
    pub ceremony_slot_ms: u64,
    /// Validators (after the honest ones, with the least stake) that contribute garbage to
    /// the ceremony (`adversary` builds).
    #[arg(long, default_value_t = 0)]
    pub garbage_validators: usize,
    /// Watch the devnet in the terminal UI while it runs (`q` stops it early; logs go to
    /// <dir>/devnet.log and each node's node.log).
    #[arg(long, conflicts_with = "json")]
    pub tui: bool,
}

impl DevnetArgs {
    /// `--dir`, or a fresh directory under the system's temporary directory.
    pub fn dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("provnet-devnet-{}", std::process::id())),
        }
    }
}

/// One node of the devnet, as written to `devnet.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DevnetNode {
    pub name: String,
    pub role: String,
    pub data_dir: PathBuf,
    pub public_key: String,
    pub threads: usize,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub genesis: PathBuf,
    pub model_dir: PathBuf,
    pub nodes: Vec<DevnetNode>,
}

const MODEL: &str = "digits_mlp";
/// The repository's test phase-1 file (power 14), for a devnet run from a checkout.
const DEFAULT_PTAU: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kernels/fixtures/pot14_final.ptau"
);
/// What each devnet account starts with (bonds are 100 by default).
pub const ACCOUNT_BALANCE: u64 = 1_000_000;

/// Writes the model, the keys and the genesis under `dir`.
pub fn setup(dir: &Path, args: &DevnetArgs) -> Result<Manifest> {
    if (args.junk_rate > 0.0
        || args.cheaters > 0
        || args.false_challengers > 0
        || args.garbage_validators > 0)
        && !cfg!(feature = "adversary")
    {
        bail!("--junk-rate, --cheaters, --false-challengers and --garbage-validators need a build with the adversary feature (cargo run --release --features provnet-node/adversary -- devnet ...)");
    }
    if args.garbage_validators > 0 && args.dev_setup {
        bail!("--garbage-validators needs the ceremony (leave out --dev-setup)");
    }
    if args.miners == 0 || args.validators == 0 {
        bail!("a devnet needs at least one miner and one validator");
    }
    if args.miner_threads.is_empty() || args.miner_threads.contains(&0) {
        bail!("--miner-threads must list positive thread counts");
    }
    if args.epoch_secs < 2 {
        bail!("--epoch-secs must be at least 2");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (name, onnx, opts) = match &args.model {
        Some(file) => {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| !s.is_empty())
                .context("--model: a file name")?
                .to_string();
            (name, file.clone(), ImportOptions::default())
        }
        None => {
            let onnx = dir.join(format!("{MODEL}.onnx"));
            std::fs::write(
                &onnx,
                include_bytes!("../../kernels/fixtures/digits_mlp.onnx"),
            )?;
            let opts = ImportOptions {
                input_min: 0.0,
                input_max: 1.0,
                ..Default::default()
            };
            (MODEL.to_string(), onnx, opts)
        }
    };
    let model_dir = dir.join("models").join(&name);
    if model_dir.exists() {
        bail!("{} exists: pass a fresh --dir", model_dir.display());
    }
    import(&onnx, &model_dir, &opts)?;
    let model = Model::load(&model_dir)?;
    let (vk_ids, ceremony) = if args.dev_setup {
        keys::setup(&model_dir, &model, &mut rand::rngs::OsRng)?;
        let mk = ModelKeys::open(&model_dir, &model)?;
        let vk_ids = (0..model.segments.len())
            .map(|i| Ok(hex::encode(mk.vk_id(i)?)))
            .collect::<Result<Vec<_>>>()?;
        (vk_ids, None)
    } else {
        let ptau = match &args.ptau {
            Some(p) => p.clone(),
            None => PathBuf::from(DEFAULT_PTAU),
        };
        let ptau = std::fs::canonicalize(&ptau).with_context(|| {
            format!(
                "the ceremony's phase-1 file {} is not there: pass --ptau FILE (a snarkjs \
                 .ptau prepared for phase 2), or --dev-setup",
                ptau.display()
            )
        })?;
        let ceremony = GenesisCeremony {
            ptau_blake3: crate::ceremony_net::file_blake3(&ptau)?,
            ptau,
            // Slot 0 opens a few seconds after the nodes start; a node that comes up later
            // catches up from the others' messages.
            start_ms: provnet_wire::unix_ms(std::time::SystemTime::now()) + 5_000,
            slot_ms: args.ceremony_slot_ms,
            beacon_iterations_exp: 10,
        };
        (Vec::new(), Some(ceremony))
    };

    let mut nodes = Vec::new();
    let mut add = |name: String, role: &str, threads: usize| -> Result<()> {
        let data_dir = dir.join("nodes").join(&name);
        let key = crate::identity::generate(&data_dir.join("keys").join("node.key"), false)?;
        nodes.push(DevnetNode {
            name,
            role: role.into(),
            data_dir,
            public_key: hex::encode(key.verifying_key().to_bytes()),
            threads,
        });
        Ok(())
    };
    add("challenger".into(), "challenger", 0)?;
    for i in 1..=args.validators {
        add(format!("validator-{i}"), "validator", 0)?;
    }
    for i in 1..=args.garbage_validators {
        add(format!("garbage-validator-{i}"), "validator", 0)?;
    }
    for i in 1..=args.miners {
        let threads = args.miner_threads[(i - 1) % args.miner_threads.len()];
        add(format!("miner-{i}"), "miner", threads)?;
    }
    for i in 1..=args.inference {
        add(format!("inference-{i}"), "inference", 0)?;
    }
    for i in 1..=args.cheaters {
        add(format!("cheater-{i}"), "inference", 0)?;
    }
    for i in 1..=args.false_challengers {
        add(format!("false-challenger-{i}"), "challenger", 0)?;
    }
    let genesis = Genesis {
        netuid: 1,
        epoch_secs: args.epoch_secs,
        emission_per_epoch: 1_000_000_000,
        models: vec![GenesisModel {
            name: name.clone(),
            path: PathBuf::from("models").join(&name),
            model_id: hex::encode(model.id()),
            vk_ids,
            ceremony,
        }],
        // Stake falls with the index so stake weighting shows in dividends.
        validators: nodes
            .iter()
            .filter(|n| n.role == "validator")
            .enumerate()
            .map(|(i, n)| GenesisValidator {
                hotkey: n.public_key.clone(),
                stake: 1_000 * (args.validators + args.garbage_validators - i) as u64,
            })
            .collect(),
        challengers: nodes
            .iter()
            .filter(|n| n.role == "challenger")
            .map(|n| GenesisChallenger {
                hotkey: n.public_key.clone(),
                quota_per_epoch: 1_000,
            })
            .collect(),
        miners: nodes
            .iter()
            .filter(|n| n.role == "miner")
            .map(|n| GenesisMiner {
                hotkey: n.public_key.clone(),
            })
            .collect(),
        registration: Default::default(),
        keep_epochs: 256,
        scoring: Default::default(),
        consensus: Default::default(),
        // Inference nodes and challengers post bonds.
        accounts: nodes
            .iter()
            .filter(|n| n.role == "inference" || n.role == "challenger")
            .map(|n| GenesisAccount {
                hotkey: n.public_key.clone(),
                balance: ACCOUNT_BALANCE,
            })
            .collect(),
        disputes: Default::default(),
    };
    let genesis_path = dir.join("genesis.toml");
    std::fs::write(
        &genesis_path,
        format!(
            "# provnet devnet genesis (development keys: never use on a real network)\n{}",
            toml_string(&genesis)?
        ),
    )?;
    Genesis::load(&genesis_path).context("checking the genesis just written")?;
    let manifest = Manifest {
        genesis: genesis_path,
        model_dir,
        nodes,
    };
    std::fs::write(
        dir.join("devnet.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

fn toml_string(g: &Genesis) -> Result<String> {
    // The toml crate is built to parse only; genesis files are simple enough to write here.
    let mut s = format!(
        "netuid = {}\nepoch_secs = {}\nemission_per_epoch = {}\n",
        g.netuid, g.epoch_secs, g.emission_per_epoch
    );
    for m in &g.models {
        s += &format!(
            "\n[[models]]\nname = {:?}\npath = {:?}\nmodel_id = {:?}\nvk_ids = {:?}\n",
            m.name,
            m.path.to_str().context("model path is not UTF-8")?,
            m.model_id,
            m.vk_ids
        );
        if let Some(c) = &m.ceremony {
            s += &format!(
                "\n[models.ceremony]\nptau = {:?}\nptau_blake3 = {:?}\nstart_ms = {}\nslot_ms = {}\nbeacon_iterations_exp = {}\n",
                c.ptau.to_str().context("ptau path is not UTF-8")?,
                c.ptau_blake3,
                c.start_ms,
                c.slot_ms,
                c.beacon_iterations_exp
            );
        }
    }
    for v in &g.validators {
        s += &format!(
            "\n[[validators]]\nhotkey = {:?}\nstake = {}\n",
            v.hotkey, v.stake
        );
    }
    for m in &g.miners {
        s += &format!("\n[[miners]]\nhotkey = {:?}\n", m.hotkey);
    }
    for c in &g.challengers {
        s += &format!(
            "\n[[challengers]]\nhotkey = {:?}\nquota_per_epoch = {}\n",
            c.hotkey, c.quota_per_epoch
        );
    }
    for a in &g.accounts {
        s += &format!(
            "\n[[accounts]]\nhotkey = {:?}\nbalance = {}\n",
            a.hotkey, a.balance
        );
    }
    Ok(s)
}

/// Median prove time per segment on this machine with `threads` threads, nothing else
/// running: the baseline the network latency is compared against.
fn raw_prove_ms(model_dir: &Path, threads: usize, runs: usize) -> Result<Vec<f64>> {
    let model = Model::load(model_dir)?;
    let mk = ModelKeys::open(model_dir, &model)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut out = Vec::new();
    for seg in &model.segments {
        let pk = mk.proving_key(seg.index)?;
        // A state the model reaches (a corner of a later segment's input box need not be).
        let input =
            provnet_kernels::trace::random_state(&model, seg.index, &mut rand::thread_rng())?;
        let ctx = ProofContext {
            challenge: [1; 32],
            nonce: [2; 32],
            miner: [3; 32],
        };
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            pool.install(|| {
                prove_segment(
                    &CpuBackend,
                    &model,
                    seg,
                    &pk,
                    &input,
                    &ctx,
                    &mut rand::rngs::OsRng,
                )
            })?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        out.push(times[times.len() / 2]);
    }
    Ok(out)
}

struct Proc {
    name: String,
    child: Child,
}

fn spawn(
    node: &DevnetNode,
    genesis: &Path,
    args: &DevnetArgs,
    bootstrap: &[String],
) -> Result<Proc> {
    let exe = std::env::current_exe().context("locating the provnet binary")?;
    let log = File::create(node.data_dir.join("node.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--log-json")
        .arg("run")
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--genesis")
        .arg(genesis)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--role", &node.role])
        .args(["--status-every", "0"]);
    for b in bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    match node.role.as_str() {
        "challenger" if node.name.starts_with("false-") => {
            cmd.args([
                "--rate",
                "0",
                "--audit-rate",
                "0",
                "--false-dispute-rate",
                "0.5",
            ]);
        }
        "challenger" => {
            cmd.args(["--rate", &args.request_rate.to_string()]);
            cmd.args(["--deadline-ms", &args.deadline_ms.to_string()]);
            cmd.args(["--audit-rate", &args.audit_rate.to_string()]);
        }
        "inference" => {
            cmd.args(["--claim-rate", &args.claim_rate.to_string()]);
            if node.name.starts_with("cheater-") {
                cmd.args(["--cheat-rate", "0.5"]);
            }
        }
        "validator" => {
            let share = args.rate / (args.validators + args.garbage_validators).max(1) as f64;
            cmd.args(["--rate", &share.to_string()]);
            cmd.args(["--deadline-ms", &args.deadline_ms.to_string()]);
            if node.name.starts_with("garbage-") {
                cmd.args(["--adversary", "ceremony-garbage"]);
            }
        }
        "miner" => {
            cmd.args(["--threads", &node.threads.to_string()]);
        }
        _ => {}
    }
    let child = cmd
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", node.name))?;
    Ok(Proc {
        name: node.name.clone(),
        child,
    })
}

fn wait_ready(p: &mut Proc, dir: &Path, timeout: Duration) -> Result<serde_json::Value> {
    let t = Instant::now();
    loop {
        if let Some(v) = std::fs::read(dir.join("ready.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return Ok(v);
        }
        if let Some(status) = p.child.try_wait()? {
            bail!(
                "{} exited ({status}) before it was ready: see {}",
                p.name,
                dir.join("node.log").display()
            );
        }
        if t.elapsed() > timeout {
            bail!("{} was not ready after {timeout:?}", p.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate_all(procs: &mut [Proc]) {
    for p in procs.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    let t = Instant::now();
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if t.elapsed() > Duration::from_secs(30) => {
                    eprintln!("{} ignored SIGTERM for 30 s: killing it", p.name);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

pub fn run(args: DevnetArgs) -> Result<ExitCode> {
    let dir = args.dir();
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    let manifest = setup(&dir, &args)?;
    say(format!(
        "devnet in {}: 1 challenger, {} validator(s), {} miner(s), epochs of {} s",
        dir.display(),
        args.validators + args.garbage_validators,
        args.miners,
        args.epoch_secs
    ));
    if args.dev_setup {
        say(
            "  (development keys from a single-party setup: never use them on a real network)"
                .into(),
        );
    } else {
        say(format!(
            "  keys from a setup ceremony among the validators when the network starts (phase 1: {})",
            args.ptau.as_deref().unwrap_or(Path::new(DEFAULT_PTAU)).display()
        ));
    }
    if args.setup_only {
        say(format!("wrote {}", dir.join("devnet.json").display()));
        return Ok(ExitCode::SUCCESS);
    }
    let model_id = Model::load(&manifest.model_dir)?.id();

    let mut procs: Vec<Proc> = Vec::new();
    let started = (|| -> Result<()> {
        let first = &manifest.nodes[0];
        procs.push(spawn(first, &manifest.genesis, &args, &[])?);
        let ready = wait_ready(&mut procs[0], &first.data_dir, Duration::from_secs(30))?;
        let bootstrap: Vec<String> = ready["listen_addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for n in &manifest.nodes[1..] {
            procs.push(spawn(n, &manifest.genesis, &args, &bootstrap)?);
        }
        for (p, n) in procs.iter_mut().zip(&manifest.nodes).skip(1) {
            wait_ready(p, &n.data_dir, Duration::from_secs(60))?;
        }
        if args.junk_rate > 0.0 {
            procs.push(spawn_flood(&dir, &manifest.genesis, &args, &bootstrap)?);
        }
        Ok(())
    })();
    if let Err(e) = started {
        terminate_all(&mut procs);
        return Err(e);
    }
    let ceremony = if args.dev_setup {
        None
    } else {
        say("setup ceremony: every node derives the initial parameters, each validator contributes in turn ...".into());
        let slots = (args.validators + args.garbage_validators) as u64;
        let limit =
            Duration::from_secs(60) + Duration::from_millis(3 * slots * args.ceremony_slot_ms);
        match wait_ceremony(&manifest, &model_id, &mut procs, limit) {
            Ok(s) => {
                say(format!(
                    "  finished on every node in {:.1} s: {} of {} slots accepted, vk ids agreed by all {} nodes: {}",
                    s.secs,
                    s.accepted,
                    s.slots,
                    manifest.nodes.len(),
                    if s.agreed { "yes" } else { "NO" }
                ));
                Some(s)
            }
            Err(e) => {
                terminate_all(&mut procs);
                return Err(e);
            }
        }
    };
    say(format!(
        "{} processes up on 127.0.0.1; running for {} s ({} stops early) ...",
        procs.len(),
        args.duration,
        if args.tui { "q" } else { "Ctrl-C" }
    ));

    let mut rss: Vec<serde_json::Value> = Vec::new();
    let interrupted = if args.tui {
        watch(&manifest, Duration::from_secs(args.duration))
    } else {
        wait_or_interrupt(Duration::from_secs(args.duration), |elapsed| {
            rss.push(json!({
                "at_s": elapsed,
                "rss_mb": procs
                    .iter()
                    .map(|p| (p.name.clone(), rss_mb(p.child.id())))
                    .collect::<BTreeMap<_, _>>(),
            }));
            if let Some(s) = read_status(&manifest.nodes[1].data_dir) {
                let v = s.validator.unwrap_or_default();
                let consensus = s
                    .ledger
                    .and_then(|l| l.last_consensus_epoch)
                    .map_or("none yet".into(), |e| e.to_string());
                say(format!(
                "  {elapsed:>3} s  epoch {}  {} peers  {} proofs verified  last consensus epoch {consensus}",
                s.epoch, s.gossip.connected_peers, v.verified
            ));
            }
        })
    };
    let interrupted = match interrupted {
        Ok(i) => i,
        Err(e) => {
            terminate_all(&mut procs);
            return Err(e);
        }
    };
    if interrupted {
        say("interrupted: stopping the devnet".into());
    }
    terminate_all(&mut procs);

    // The raw prove time, nothing else running, under the keys the nodes used.
    let keys_dir = match &ceremony {
        Some(_) => crate::ceremony_net::keys_dir(&manifest.nodes[1].data_dir, &model_id),
        None => manifest.model_dir.clone(),
    };
    let max_threads = *args.miner_threads.iter().max().expect("checked non-empty");
    let raw = raw_prove_ms(&keys_dir, max_threads, 15)?;
    say(format!(
        "raw prove time per segment ({max_threads} thread(s), nothing else running): {}",
        raw.iter()
            .enumerate()
            .map(|(i, ms)| format!("segment {i} {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut report = report(&manifest, &raw)?;
    report["rss"] = json!(rss);
    report["ceremony"] = match &ceremony {
        Some(s) => json!({
            "secs": s.secs,
            "slots": s.slots,
            "accepted": s.accepted,
            "nodes_agree": s.agreed,
            "per_node": s.records,
        }),
        None => json!(null),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
        println!(
            "logs, stores and status files: {}",
            dir.join("nodes").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The ceremony as the nodes recorded it.
struct CeremonyRun {
    secs: f64,
    slots: usize,
    accepted: usize,
    agreed: bool,
    /// name -> done.json
    records: BTreeMap<String, serde_json::Value>,
}

/// Waits until every node has installed the ceremony's keys (or one exits, or `limit`
/// passes), then compares what they recorded.
fn wait_ceremony(
    manifest: &Manifest,
    model_id: &[u8; 32],
    procs: &mut [Proc],
    limit: Duration,
) -> Result<CeremonyRun> {
    let t = Instant::now();
    let dirs: Vec<(String, PathBuf)> = manifest
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                crate::ceremony_net::keys_dir(&n.data_dir, model_id),
            )
        })
        .collect();
    let records = loop {
        let records: BTreeMap<String, serde_json::Value> = dirs
            .iter()
            .filter_map(|(name, d)| Some((name.clone(), crate::ceremony_net::record(d)?)))
            .collect();
        if records.len() == dirs.len() {
            break records;
        }
        for p in procs.iter_mut() {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited ({status}) during the setup ceremony: see its node.log",
                    p.name
                );
            }
        }
        if t.elapsed() > limit {
            let missing: Vec<&str> = dirs
                .iter()
                .filter(|(n, _)| !records.contains_key(n))
                .map(|(n, _)| n.as_str())
                .collect();
            bail!(
                "the setup ceremony did not finish within {limit:?} on: {} (see their node.log)",
                missing.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let first = records.values().next().cloned().unwrap_or_default();
    let agreed = records
        .values()
        .all(|r| r["vk_ids"] == first["vk_ids"] && r["state"] == first["state"]);
    let slots = first["slots"].as_array().cloned().unwrap_or_default();
    Ok(CeremonyRun {
        secs: t.elapsed().as_secs_f64(),
        slots: slots.len(),
        accepted: slots.iter().filter(|s| s[1] == true).count(),
        agreed,
        records,
    })
}

/// Runs the TUI over every node (validators first) until `total` has passed or the
/// operator quits; true when they quit early.
fn watch(manifest: &Manifest, total: Duration) -> Result<bool> {
    let mut nodes: Vec<&DevnetNode> = manifest.nodes.iter().collect();
    nodes.sort_by_key(|n| match n.role.as_str() {
        "validator" => 0,
        "challenger" => 1,
        _ => 2,
    });
    let mut targets = Vec::new();
    for n in nodes {
        let path = n.data_dir.join("admin.json");
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        let addr = v["admin"]
            .as_str()
            .with_context(|| format!("{} names no admin address", path.display()))?;
        targets.push(provnet_tui::Target {
            label: format!("{} ({addr})", n.name),
            addr: addr.to_string(),
        });
    }
    let until = Instant::now() + total;
    provnet_tui::run(
        targets,
        provnet_tui::Options {
            refresh: Duration::from_secs(1),
            until: Some(until),
        },
    )
    .context("running the TUI")?;
    Ok(Instant::now() < until)
}

/// Sleeps until `total` has passed or Ctrl-C, calling `progress` every 10 s.
fn wait_or_interrupt(total: Duration, mut progress: impl FnMut(u64)) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.tick().await;
        let end = tokio::time::sleep(total);
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = &mut end => return Ok(false),
                _ = tokio::signal::ctrl_c() => return Ok(true),
                _ = every.tick() => progress(start.elapsed().as_secs()),
            }
        }
    })
}

/// A process's resident memory in MB, from /proc (None where there is no /proc).
fn rss_mb(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// The junk flood's process (`provnet flood`), bootstrapped like every node.
fn spawn_flood(
    dir: &Path,
    genesis: &Path,
    args: &DevnetArgs,
    bootstrap: &[String],
) -> Result<Proc> {
    let exe = std::env::current_exe().context("locating the provnet binary")?;
    let log = File::create(dir.join("flood.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("flood")
        .arg("--genesis")
        .arg(genesis)
        .args(["--rate", &args.junk_rate.to_string()])
        .args(["--duration", &(args.duration + 60).to_string()]);
    for b in bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the flood")?;
    Ok(Proc {
        name: "flood".into(),
        child,
    })
}

fn read_status(dir: &Path) -> Option<NodeStatus> {
    let bytes = std::fs::read(dir.join("status.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    provnet_validator::engine::percentile(v, q)
}

/// The final report: rankings from the first validator, agreement between validators,
/// and the challenge-to-verified-score latency against the raw prove time.
fn report(manifest: &Manifest, raw_prove_ms: &[f64]) -> Result<serde_json::Value> {
    let validators: Vec<&DevnetNode> = manifest
        .nodes
        .iter()
        .filter(|n| n.role == "validator")
        .collect();
    let statuses: Vec<NodeStatus> = validators
        .iter()
        .map(|n| {
            read_status(&n.data_dir).with_context(|| format!("{} left no status.json", n.name))
        })
        .collect::<Result<_>>()?;
    let names: BTreeMap<String, (String, usize)> = manifest
        .nodes
        .iter()
        .map(|n| (n.public_key.clone(), (n.name.clone(), n.threads)))
        .collect();
    let v0 = statuses[0].validator.clone().unwrap_or_default();
    let ledger0 = statuses[0].ledger.clone().unwrap_or_default();
    let miners: Vec<serde_json::Value> = v0
        .rankings
        .iter()
        .map(|r| {
            let (name, threads) = names.get(&r.miner).cloned().unwrap_or_default();
            json!({
                "miner": name,
                "key": &r.miner[..16],
                "threads": threads,
                "weight": r.weight,
                "consensus": r.consensus,
                "valid": r.valid,
                "invalid": r.invalid + r.copied + r.replayed,
                "late": r.late,
                "latency_ms_p50": r.latency_ms_p50,
                "verified_ms_p50": r.verified_ms_p50,
                "reward_total": r.reward_total,
            })
        })
        .collect();
    // Validators agree when every epoch both ran consensus for paid the same rewards.
    let mut agreement = Vec::new();
    for s in &statuses[1..] {
        let other = s.ledger.clone().unwrap_or_default();
        let common: Vec<(u64, bool)> = ledger0
            .recent
            .iter()
            .filter_map(|a| {
                other
                    .recent
                    .iter()
                    .find(|b| b.epoch == a.epoch)
                    .map(|b| (a.epoch, a == b))
            })
            .collect();
        agreement.push(common);
    }
    let agreed = agreement.iter().all(|c| c.iter().all(|(_, same)| *same));
    let common_epochs: Vec<u64> = agreement
        .first()
        .map(|c| c.iter().map(|(e, _)| *e).collect())
        .unwrap_or_default();

    // Challenge-to-verified-score latency, from the first validator's challenge log.
    let store = Store::open(&validators[0].data_dir.join("db"))?;
    let mut first_verified = Vec::new();
    let mut all_verified = Vec::new();
    let log = store.challenges()?;
    let (mut valid_n, mut late_n, mut other_n) = (0u64, 0u64, 0u64);
    for c in &log {
        for a in &c.answers {
            match a.outcome {
                Outcome::Valid { .. } => valid_n += 1,
                Outcome::Late => late_n += 1,
                _ => other_n += 1,
            }
        }
        let valid: Vec<f64> = c
            .answers
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Valid { .. }))
            .map(|a| a.verified_ms)
            .collect();
        all_verified.extend(&valid);
        if let Some(f) = valid.iter().copied().min_by(f64::total_cmp) {
            first_verified.push(f);
        }
    }
    // Disputes as validator-1's court settled them, against the cheaters' own record of
    // what they corrupted; every account's bonds before and after.
    let court0 = statuses[0].court.clone().unwrap_or_default();
    let mut corrupted: BTreeMap<String, u32> = BTreeMap::new();
    for n in manifest.nodes.iter().filter(|n| n.role == "inference") {
        if let Some(c) = read_status(&n.data_dir).and_then(|s| s.court) {
            corrupted.extend(c.corrupted);
        }
    }
    let name_of = |k: &str| names.get(k).map(|(n, _)| n.clone()).unwrap_or_default();
    let disputes: Vec<serde_json::Value> = court0
        .disputes
        .iter()
        .rev()
        .map(|d| {
            json!({
                "claim": d.claim,
                "claimant": d.claimant,
                "claimant_name": name_of(&d.claimant),
                "challenger": d.challenger,
                "challenger_name": name_of(&d.challenger),
                "segment": d.segment,
                "verdict": d.final_verdict.clone().or_else(|| d.verdict.clone()),
                "final": d.final_verdict.is_some(),
                "stage": d.stage,
                "rounds": d.rounds,
                "corrupted_segment": corrupted.get(&d.claim),
                "ms_to_verdict": d.ms_to_verdict,
                "phases_ms": {
                    "audit": d.audit_ms,
                    "bisection": d.bisect_ms,
                    "leaf": d.leaf_ms,
                    "attestation": d.attest_ms,
                },
            })
        })
        .collect();
    let bank = provnet_validator::court::bank::Bank::open(&store, &BTreeMap::new())?;
    let balances = bank.balances()?;
    let held = bank.held_by()?;
    let bonds: BTreeMap<String, serde_json::Value> = manifest
        .nodes
        .iter()
        .filter(|n| n.role == "inference" || n.role == "challenger")
        .map(|n| {
            let key = crate::identity::hex32("key", &n.public_key).unwrap_or([0; 32]);
            let after = balances.get(&key).copied().unwrap_or(0);
            let bonded = held.get(&key).copied().unwrap_or(0);
            (
                n.public_key.clone(),
                json!({"name": n.name, "before": ACCOUNT_BALANCE, "after": after, "held": bonded}),
            )
        })
        .collect();
    let raw_mean = raw_prove_ms.iter().sum::<f64>() / raw_prove_ms.len().max(1) as f64;
    let p50 = percentile(&mut first_verified, 0.5);
    let answered = (valid_n + late_n + other_n).max(1) as f64;
    Ok(json!({
        "requests_published": read_status(&manifest.nodes[0].data_dir)
            .and_then(|s| s.challenger)
            .map(|c| c.published),
        "challenges_logged": log.len(),
        "answers": {
            "valid": valid_n,
            "late": late_n,
            "other": other_n,
            "late_percent": (late_n as f64 / answered * 1000.0).round() / 10.0,
        },
        "per_validator": statuses.iter().map(|s| json!({
            "verify_shed": s.validator.as_ref().and_then(|v| v.refused.get("verify_shed").copied()).unwrap_or(0),
            "gossip_rejected": s.gossip.received.rejected,
            "gossip_ignored": s.gossip.received.ignored,
        })).collect::<Vec<_>>(),
        "miners": miners,
        "epochs_with_consensus": common_epochs,
        "validators_agree": agreed,
        "rewards": ledger0.recent,
        "claims": court0.claims_total,
        "disputes": disputes,
        "verdicts": court0.verdicts,
        "bonds": bonds,
        "burned": court0.burned,
        "latency": {
            "raw_prove_ms_per_segment": raw_prove_ms,
            "raw_prove_ms_mean": raw_mean,
            "first_verified_ms_p50": p50,
            "first_verified_ms_p95": percentile(&mut first_verified, 0.95),
            "all_verified_ms_p50": percentile(&mut all_verified, 0.5),
            "all_verified_ms_p95": percentile(&mut all_verified, 0.95),
            "target_met": p50.map(|p| p <= raw_mean + 50.0),
        },
    }))
}

fn print_report(r: &serde_json::Value) {
    println!();
    println!("final rankings (validator-1's view; consensus over all validators):");
    println!(
        "  {:<9} {:<16} {:>3} {:>6} {:>9} {:>6} {:>8} {:>5} {:>8} {:>10} {:>12}",
        "miner",
        "key",
        "thr",
        "weight",
        "consensus",
        "valid",
        "invalid",
        "late",
        "p50 ms",
        "verified",
        "rewards"
    );
    for m in r["miners"].as_array().into_iter().flatten() {
        let text = |k: &str| match &m[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            v => v.to_string(),
        };
        println!(
            "  {:<9} {:<16} {:>3} {:>6} {:>9.4} {:>6} {:>8} {:>5} {:>8} {:>10} {:>12}",
            text("miner"),
            text("key"),
            text("threads"),
            text("weight"),
            m["consensus"].as_f64().unwrap_or(0.0),
            text("valid"),
            text("invalid"),
            text("late"),
            fmt_ms(&m["latency_ms_p50"]),
            fmt_ms(&m["verified_ms_p50"]),
            text("reward_total"),
        );
    }
    let epochs: Vec<String> = r["epochs_with_consensus"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    println!(
        "validators agree on consensus: {} (epochs {})",
        if r["validators_agree"] == true {
            "yes"
        } else {
            "NO"
        },
        epochs.join(", ")
    );
    let l = &r["latency"];
    println!(
        "challenge -> verified score: p50 {} ms, p95 {} ms (first valid proof per challenge); raw prove {} ms; target p50 <= prove + 50 ms: {}",
        fmt_ms(&l["first_verified_ms_p50"]),
        fmt_ms(&l["first_verified_ms_p95"]),
        fmt_ms(&l["raw_prove_ms_mean"]),
        match l["target_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "no data",
        }
    );
    let a = &r["answers"];
    println!(
        "validator-1: {} challenges, answers {} valid, {} late ({}%), {} bad; shed unverified per validator: {}",
        r["challenges_logged"],
        a["valid"],
        a["late"],
        a["late_percent"],
        a["other"],
        r["per_validator"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["verify_shed"].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let disputes = r["disputes"].as_array().cloned().unwrap_or_default();
    if r["claims"].as_u64().unwrap_or(0) > 0 || !disputes.is_empty() {
        println!(
            "claims: {}; disputes: {} (validator-1's court)",
            r["claims"],
            disputes.len()
        );
        for d in &disputes {
            let text = |k: &str| match &d[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                v => v.to_string(),
            };
            println!(
                "  claim {} by {:<12} disputed by {:<18} segment {:>3} (corrupted: {:>3}) {:<18} {} in {} ms",
                &text("claim")[..16.min(text("claim").len())],
                text("claimant_name"),
                text("challenger_name"),
                text("segment"),
                text("corrupted_segment"),
                text("verdict"),
                if d["final"] == true { "final" } else { "not final" },
                text("ms_to_verdict"),
            );
        }
        let phase = |k: &str| {
            let mut v: Vec<f64> = disputes
                .iter()
                .filter(|d| d["final"] == true && !d["phases_ms"]["leaf"].is_null())
                .filter_map(|d| d["phases_ms"][k].as_f64())
                .collect();
            percentile(&mut v, 0.5).map_or("-".into(), |x| format!("{x:.0}"))
        };
        println!(
            "  claim to verdict, p50 over disputes decided by a leaf (ms): audit {}, bisection {}, leaf proof {}, attestation {}",
            phase("audit"),
            phase("bisection"),
            phase("leaf"),
            phase("attestation")
        );
        for (_, b) in r["bonds"].as_object().into_iter().flatten() {
            println!(
                "  {:<20} balance {} -> {} (+ {} in bonds still held)",
                b["name"].as_str().unwrap_or(""),
                b["before"],
                b["after"],
                b["held"]
            );
        }
    }
    // Memory over the run, for the first validator and the first miner.
    let series = r["rss"].as_array().cloned().unwrap_or_default();
    for name in ["validator-1", "miner-1"] {
        let mb: Vec<String> = series
            .iter()
            .filter_map(|s| s["rss_mb"][name].as_f64())
            .map(|x| format!("{x:.0}"))
            .collect();
        if !mb.is_empty() {
            println!("{name} RSS (MB, every 10 s): {}", mb.join(" "));
        }
    }
}

fn fmt_ms(v: &serde_json::Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}"))
}
