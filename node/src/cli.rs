//! Command-line definitions and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use provnet_kernels::{import, keys, trace, ImportOptions, Model, ModelSummary};
use serde_json::json;

use crate::{
    bench, bench_dispute, bench_msm, bench_verify, challenge, claim, demo, devnet, disputes_cli,
    genesis, identity, inputs, prove, run,
};

#[derive(Parser, Debug)]
#[command(
    name = "provnet",
    version,
    about = "provnet: a Groth16 prover subnet node"
)]
pub struct Cli {
    /// Log as JSON lines on stderr (filter with RUST_LOG).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an ed25519 key file (mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Import, set up and run provnet models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Prove one segment for a challenge, bound to a miner key.
    Prove(prove::ProveArgs),
    /// Verify a proof for exactly one segment, challenge and miner (exit 0 valid, 1 invalid).
    Verify(prove::VerifyArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the whole prover pipeline end to end on a bundled model.
    Demo(demo::DemoArgs),
    /// Run a node on the gossip network until SIGTERM or Ctrl-C.
    Run(run::RunArgs),
    /// Run a whole subnet on this machine (challenger, validators, miners as separate
    /// processes on 127.0.0.1) and print the final rankings.
    Devnet(devnet::DevnetArgs),
    /// Publish one proof request (as an admitted challenger) and report the verified proofs
    /// that answer it.
    Challenge(challenge::ChallengeArgs),
    /// Claim one inference as a process of its own (a genesis account's key), stand behind
    /// it through any dispute, and report whether it was upheld (exit 0) or overturned (1).
    Claim(claim::ClaimArgs),
    /// Load testing: flood a network with junk from fresh keys (`adversary` builds only).
    #[cfg(feature = "adversary")]
    #[command(hide = true)]
    Flood(crate::flood::FloodArgs),
    /// Network genesis files.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Check a snarkjs .ptau file (phase 1 of a setup ceremony): its power, whether it is
    /// prepared for phase 2, and (with --model) whether it serves every segment.
    Ptau {
        file: PathBuf,
        /// A model directory whose segments the file must serve.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// The phase-2 setup ceremony as transcript files: init, contribute, beacon, verify,
    /// finalize (keys nobody can forge with if one participant was honest).
    #[command(subcommand)]
    Ceremony(crate::ceremony_cli::CeremonyCommand),
    /// Export a segment's key, and a proof, for checkers outside provnet: snarkjs' JSON
    /// files or a Solidity verifier contract.
    #[command(subcommand)]
    Export(crate::export_cli::ExportCommand),
    /// Watch running nodes in the terminal: rankings, rewards, challenges, peers, log.
    Tui(TuiArgs),
    /// A running node's disputes, newest first.
    Disputes(disputes_cli::Target),
    /// One of a running node's disputes.
    #[command(subcommand)]
    Dispute(disputes_cli::DisputeCommand),
}

#[derive(clap::Args, Debug)]
pub struct TuiArgs {
    /// A node's admin endpoint, IP:PORT (its <data-dir>/admin.json names it). Repeatable:
    /// `n` and `p` switch between nodes.
    #[arg(long, value_name = "IP:PORT", required = true)]
    pub connect: Vec<String>,
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 1000)]
    pub refresh_ms: u64,
}

/// Where the log goes: the terminal belongs to the TUI when one runs.
pub enum LogSink {
    Stderr,
    Discard,
    File(PathBuf),
}

#[derive(Subcommand, Debug)]
pub enum GenesisCommand {
    /// Check a genesis file (models, keys, validators, parameters) and print its hash.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Quantize an ONNX model into segments and write a model directory.
    Import {
        onnx: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Fixed-point scale 2^N for activations and weights.
        #[arg(long, default_value_t = provnet_kernels::import::DEFAULT_SCALE_BITS)]
        scale_bits: u32,
        /// Smallest real input value the model must accept.
        #[arg(long, default_value_t = provnet_kernels::import::DEFAULT_INPUT_MIN, allow_hyphen_values = true)]
        input_min: f64,
        /// Largest real input value the model must accept.
        #[arg(long, default_value_t = provnet_kernels::import::DEFAULT_INPUT_MAX, allow_hyphen_values = true)]
        input_max: f64,
        /// Most constraints one segment may have (its keys and proving memory grow with
        /// it): a model with a larger layer is refused, naming it.
        #[arg(long, default_value_t = provnet_kernels::import::DEFAULT_MAX_CONSTRAINTS)]
        max_constraints: usize,
        /// Place cuts by cost: merge consecutive layers into segments of at most
        /// --max-constraints (fewer, larger proofs, no range checks at merged cuts). By
        /// default every non-linear layer is a segment: the finest dispute granularity.
        #[arg(long)]
        merge: bool,
    },
    /// Groth16 setup per segment (single-party: development only).
    Setup { dir: PathBuf },
    /// Run the model natively and print outputs and the trace commitment.
    Run {
        dir: PathBuf,
        #[arg(long)]
        input: PathBuf,
    },
    /// Print a model directory's summary.
    Show { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Per-segment prove/verify times, proof size and constraints (optionally vs ezkl).
    Prove(bench::BenchArgs),
    /// Verification throughput: one proof at a time vs batch verification.
    Verify(bench_verify::VerifyBenchArgs),
    /// G1 multi-scalar multiplication per backend (cpu, cuda) over a range of sizes.
    Msm(bench_msm::MsmBenchArgs),
    /// A dispute's bisection over a synthetic trace: rounds, reveal sizes, times.
    Dispute(bench_dispute::DisputeBenchArgs),
    /// Phase-2 ceremony per segment: initial derivation, contribution, verification,
    /// transcript size.
    Ceremony(crate::ceremony_cli::CeremonyBenchArgs),
}

impl Cli {
    /// Whether the command only prints and exits, so a closed stdout (`provnet model show
    /// m | head`) may end it as it ends other command-line tools. Commands that talk to
    /// the network keep SIGPIPE ignored, so a peer's closed socket is an error, not death.
    pub fn is_filter(&self) -> bool {
        matches!(
            self.command,
            Command::Keygen { .. }
                | Command::Model(_)
                | Command::Prove(_)
                | Command::Verify(_)
                | Command::Bench(_)
                | Command::Ptau { .. }
                | Command::Ceremony(_)
                | Command::Export(_)
                | Command::Genesis(_)
        )
    }

    /// The log level when RUST_LOG is unset: long-running commands say what they do.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Run(_) | Command::Challenge(_) | Command::Claim(_) => "info",
            #[cfg(feature = "adversary")]
            Command::Flood(_) => "error",
            _ => "warn",
        }
    }

    pub fn log_sink(&self) -> LogSink {
        match &self.command {
            Command::Tui(_) => LogSink::Discard,
            Command::Devnet(a) if a.tui => LogSink::File(a.dir().join("devnet.log")),
            _ => LogSink::Stderr,
        }
    }

    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Keygen { out, force } => {
                let key = identity::generate(&out, force)?;
                println!("{}", hex::encode(key.verifying_key().to_bytes()));
                Ok(ExitCode::SUCCESS)
            }
            Command::Model(cmd) => model(cmd),
            Command::Prove(args) => prove::prove(args),
            Command::Verify(args) => prove::verify(args),
            Command::Bench(BenchCommand::Prove(args)) => bench::run(args),
            Command::Bench(BenchCommand::Verify(args)) => bench_verify::run(args),
            Command::Bench(BenchCommand::Msm(args)) => bench_msm::run(args),
            Command::Bench(BenchCommand::Dispute(args)) => bench_dispute::run(args),
            Command::Bench(BenchCommand::Ceremony(args)) => crate::ceremony_cli::bench(args),
            Command::Ceremony(cmd) => crate::ceremony_cli::run(cmd),
            Command::Export(cmd) => crate::export_cli::run(cmd),
            Command::Demo(args) => demo::run(args),
            Command::Run(args) => run::run(args),
            Command::Devnet(args) => devnet::run(args),
            Command::Challenge(args) => challenge::run(args),
            Command::Claim(args) => claim::run(args),
            #[cfg(feature = "adversary")]
            Command::Flood(args) => crate::flood::run(args),
            Command::Ptau { file, model } => ptau(&file, model.as_deref()),
            Command::Disputes(t) => disputes_cli::list(&t),
            Command::Dispute(cmd) => disputes_cli::run(cmd),
            Command::Tui(args) => {
                let targets = args
                    .connect
                    .iter()
                    .map(|a| provnet_tui::Target {
                        label: a.clone(),
                        addr: a.clone(),
                    })
                    .collect();
                provnet_tui::run(
                    targets,
                    provnet_tui::Options {
                        refresh: std::time::Duration::from_millis(args.refresh_ms.max(100)),
                        until: None,
                    },
                )
                .context("running the TUI")?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Genesis(GenesisCommand::Check { file }) => {
                let g = genesis::Genesis::load(&file)?;
                let hash = g.hash();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "hash": hex::encode(hash),
                        "genesis_id": hex::encode(&hash[..8]),
                        "netuid": g.netuid,
                        "models": g.models.iter().map(|m| &m.name).collect::<Vec<_>>(),
                        "validators": g.validators.len(),
                        "epoch_secs": g.epoch_secs,
                    }))?
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn ptau(file: &std::path::Path, model: Option<&std::path::Path>) -> Result<ExitCode> {
    use ark_ec::AffineRepr;
    use provnet_kernels::circuit::CircuitShape;
    let mut p = provnet_kernels::ptau::Ptau::open(file)?;
    // The first powers read and checked (coordinates, curve, subgroup), and tau^0 is the
    // generator: a quick look that the file is what it says.
    let t1 = p.tau_g1(2)?;
    let t2 = p.tau_g2(2)?;
    if t1[0] != ark_bn254::G1Affine::generator() || t2[0] != ark_bn254::G2Affine::generator() {
        anyhow::bail!("{}: tau^0 is not the generator", file.display());
    }
    let mut segments = Vec::new();
    if let Some(dir) = model {
        let m = Model::load(dir)?;
        for seg in &m.segments {
            let domain = CircuitShape::of(seg).domain();
            p.require_domain(domain)
                .with_context(|| format!("segment {}", seg.index))?;
            segments.push(json!({"segment": seg.index, "domain": domain}));
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "file": file.display().to_string(),
            "power": p.power(),
            "ceremony_power": p.ceremony_power(),
            "max_domain": 1u64 << p.power(),
            "prepared_for_phase2": p.prepared(),
            "segments": segments,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

fn model(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Import {
            onnx,
            out,
            scale_bits,
            input_min,
            input_max,
            max_constraints,
            merge,
        } => {
            let opts = ImportOptions {
                scale_bits,
                input_min,
                input_max,
                max_constraints,
                merge,
            };
            let summary = import(&onnx, &out, &opts)
                .with_context(|| format!("importing {}", onnx.display()))?;
            // A table for the operator on stderr; the summary as JSON on stdout.
            eprintln!("segment  layers  constraints  est. prove (CPU)  keys (pk + h table)  ops");
            for s in &summary.segments {
                eprintln!(
                    "{:>7}  {:>6}  {:>11}  {:>13.1} ms  {:>16.1} MB  {}",
                    s.index,
                    s.layers,
                    s.constraints,
                    s.estimated_prove_ms,
                    (s.keys.pk_bytes + s.keys.h_table_bytes) as f64 / 1e6,
                    s.ops.join(" ")
                );
            }
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        ModelCommand::Setup { dir } => {
            let model = Model::load(&dir)?;
            eprintln!("WARNING: {}", keys::DEV_SETUP_WARNING);
            let index = keys::setup(&dir, &model, &mut rand::rngs::OsRng)?;
            println!("{}", serde_json::to_string_pretty(&index)?);
        }
        ModelCommand::Run { dir, input } => {
            let model = Model::load(&dir)?;
            let x = model.quantize(&inputs::read_float_input(&input)?);
            let tr = trace::run(&model, &x)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "output": model.dequantize(tr.output()),
                    "output_quantized": tr.output(),
                    "trace_root": hex::encode(tr.root),
                    "trace_leaves": tr.leaves.iter().map(hex::encode).collect::<Vec<_>>(),
                }))?
            );
        }
        ModelCommand::Show { dir } => {
            let model = Model::load(&dir)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&ModelSummary::of(&model))?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
