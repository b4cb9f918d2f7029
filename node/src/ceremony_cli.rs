//! `provnet ceremony ...`: the phase-2 setup ceremony as files, for operators who pass a
//! transcript from hand to hand (`init`, `contribute`, `beacon`, `verify`, `finalize`), and
//! `provnet bench ceremony`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use provnet_kernels::ceremony::{self, Transcript};
use provnet_kernels::ptau::Ptau;
use provnet_kernels::{keys, Model};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum CeremonyCommand {
    /// Derive a model's initial phase-2 parameters from the model and a prepared .ptau
    /// (anyone can: nothing in them is secret) and write the first transcript.
    Init {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        ptau: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a contribution: fresh randomness for every segment, from the operating system
    /// mixed with --entropy, used once and forgotten. (Run `verify` on the input first to
    /// know what you build on.)
    Contribute {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A name for the record (at most 128 bytes).
        #[arg(long, default_value = "")]
        name: String,
        /// Extra entropy text mixed into the operating system's randomness.
        #[arg(long, default_value = "")]
        entropy: String,
    },
    /// End the ceremony with a public random value (e.g. a future block hash, as hex),
    /// hashed 2^N times: the last step, which anyone can recompute.
    Beacon {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        beacon: String,
        #[arg(long, default_value_t = 10)]
        iterations_exp: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a transcript from scratch against the model and the .ptau: every
    /// contribution in order and the current parameters (exit 0 only if all verify).
    Verify {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        ptau: PathBuf,
        transcript: PathBuf,
    },
    /// Verify a transcript (against the .ptau given, or the one named at init) and install
    /// its keys in the model directory, with the h tables the prover precomputes.
    Finalize {
        #[arg(long)]
        model: PathBuf,
        /// The .ptau to verify against (default: the path recorded at init).
        #[arg(long)]
        ptau: Option<PathBuf>,
        transcript: PathBuf,
    },
}

/// What the key index says of keys from a ceremony.
pub const CEREMONY_TRUST: &str = "Keys from a multi-party setup ceremony (phase 1: the .ptau \
file; phase 2: the transcript's contributions). Proofs cannot be forged unless every phase-1 \
contributor and every phase-2 contributor kept or leaked their randomness: one honest \
participant in each phase is enough. Re-check with `provnet ceremony verify`.";

pub fn run(cmd: CeremonyCommand) -> Result<ExitCode> {
    match cmd {
        CeremonyCommand::Init { model, ptau, out } => {
            let m = Model::load(&model)?;
            let start = Instant::now();
            let t = initial(&m, &ptau)?;
            t.write(&out)?;
            eprintln!(
                "initial parameters for {} segments in {:.1} s",
                t.segments.len(),
                start.elapsed().as_secs_f64()
            );
            print_json(&json!({
                "transcript": out.display().to_string(),
                "model_id": hex::encode(t.model_id),
                "circuit_hash": hex::encode(t.cs_hash),
                "segments": t.segments.len(),
                "bytes": std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
            }))
        }
        CeremonyCommand::Contribute {
            input,
            out,
            name,
            entropy,
        } => {
            let t = Transcript::read(&input)?;
            let start = Instant::now();
            let next = ceremony::contribute(&t, &name, entropy.as_bytes())?;
            let ms = start.elapsed().as_millis();
            next.write(&out)?;
            let c = next.contributions.last().expect("just added");
            eprintln!(
                "contribution {} added in {ms} ms; publish its hash so others can check it \
                 is in the final transcript",
                next.contributions.len() - 1
            );
            print_json(&json!({
                "transcript": out.display().to_string(),
                "contribution": next.contributions.len() - 1,
                "name": c.name,
                "contribution_hash": hex::encode(c.hash()),
                "ms": ms,
            }))
        }
        CeremonyCommand::Beacon {
            input,
            beacon,
            iterations_exp,
            out,
        } => {
            let value =
                hex::decode(beacon.trim_start_matches("0x")).context("--beacon is a hex string")?;
            let t = Transcript::read(&input)?;
            let next = ceremony::beacon(&t, &value, iterations_exp)?;
            next.write(&out)?;
            let c = next.contributions.last().expect("just added");
            print_json(&json!({
                "transcript": out.display().to_string(),
                "contribution": next.contributions.len() - 1,
                "beacon": hex::encode(&value),
                "iterations_exp": iterations_exp,
                "contribution_hash": hex::encode(c.hash()),
            }))
        }
        CeremonyCommand::Verify {
            model,
            ptau,
            transcript,
        } => {
            let start = Instant::now();
            let (_, t, verified) = load_and_verify(&model, &transcript, Some(ptau))?;
            match verified {
                Ok(v) => {
                    eprintln!(
                        "transcript verified in {:.1} s",
                        start.elapsed().as_secs_f64()
                    );
                    print_json(&report(&t, &v))
                }
                Err(e) => {
                    eprintln!("REFUSED: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        CeremonyCommand::Finalize {
            model,
            ptau,
            transcript,
        } => {
            let (m, t, verified) = load_and_verify(&model, &transcript, ptau)?;
            let v = verified.context("the transcript does not verify: no keys installed")?;
            if !v.beacon {
                eprintln!(
                    "note: the ceremony did not end with a beacon; the last contributor chose \
                     its final randomness after seeing all others"
                );
            }
            let index = install(&model, &m, t, &v)?;
            print_json(&json!({
                "installed": model.join(keys::KEYS_DIR).display().to_string(),
                "ceremony": index.ceremony,
                "vk_ids": index.segments.iter().map(|s| &s.vk_id).collect::<Vec<_>>(),
            }))
        }
    }
}

fn print_json(v: &serde_json::Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// The model and the transcript, and whether the transcript verifies from scratch
/// against them and the .ptau (`ptau`, else the path recorded at init).
fn load_and_verify(
    model: &Path,
    transcript: &Path,
    ptau: Option<PathBuf>,
) -> Result<(
    Model,
    Transcript,
    provnet_kernels::Result<ceremony::Verified>,
)> {
    let m = Model::load(model)?;
    let t = Transcript::read(transcript)?;
    let ptau = ptau.unwrap_or_else(|| PathBuf::from(&t.ptau_hint));
    let verified = ceremony::verify(&initial(&m, &ptau)?, &t);
    Ok((m, t, verified))
}

/// The initial parameters, from the model and the .ptau.
pub fn initial(model: &Model, ptau: &Path) -> Result<Transcript> {
    let mut p = Ptau::open(ptau)?;
    Ok(ceremony::initial(
        model,
        &mut p,
        &ptau.display().to_string(),
    )?)
}

fn report(t: &Transcript, v: &ceremony::Verified) -> serde_json::Value {
    json!({
        "model_id": hex::encode(t.model_id),
        "circuit_hash": hex::encode(t.cs_hash),
        "transcript_hash": hex::encode(t.hash()),
        "contributions": v.contributions.iter().map(|(name, h)| json!({
            "name": name, "hash": hex::encode(h),
        })).collect::<Vec<_>>(),
        "ends_with_beacon": v.beacon,
        "vk_ids": v.vk_ids.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

/// Installs a verified transcript's keys: the key index names the ceremony.
pub fn install(
    dir: &Path,
    model: &Model,
    t: Transcript,
    v: &ceremony::Verified,
) -> Result<keys::KeyIndex> {
    let who = v
        .contributions
        .iter()
        .map(|(name, h)| format!("{name} {}", hex::encode(&h[..8])))
        .collect::<Vec<_>>()
        .join(", ");
    let beacon = t.final_beacon().map_or("no beacon".to_string(), |b| {
        format!(
            "beacon {} hashed 2^{}",
            hex::encode(&b.value),
            b.iterations_exp
        )
    });
    let what = format!(
        "multi-party ceremony: transcript {}, {} contributions ({who}), {beacon}",
        hex::encode(t.hash()),
        v.contributions.len()
    );
    let keys = t.segments.into_iter().map(|pk| (pk, 0)).collect();
    Ok(keys::install(dir, model, keys, &what, CEREMONY_TRUST)?)
}

#[derive(clap::Args, Debug)]
pub struct CeremonyBenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub ptau: PathBuf,
}

/// Per segment: initial derivation, one contribution, its step verification; the whole
/// transcript's size and a from-scratch verification.
pub fn bench(args: CeremonyBenchArgs) -> Result<ExitCode> {
    let m = Model::load(&args.model)?;
    let mut p = Ptau::open(&args.ptau)?;
    let start = Instant::now();
    let t0 = ceremony::initial(&m, &mut p, "")?;
    let init_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let t1 = ceremony::contribute(&t0, "bench", b"")?;
    let contribute_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    ceremony::verify_step(&t0, &t1)?;
    let step_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    ceremony::verify(&t0, &t1)?;
    let verify_ms = start.elapsed().as_secs_f64() * 1e3;
    let bytes = t1.to_bytes().len();
    let step = t1.last_step().expect("one contribution").to_bytes();
    let start = Instant::now();
    t0.accept(&step)?;
    let accept_ms = start.elapsed().as_secs_f64() * 1e3;
    // Per segment, on one-segment transcripts of each.
    let mut per = Vec::new();
    println!("segment  constraints  domain  contribute ms  verify step ms  bytes");
    for (k, pk) in t0.segments.iter().enumerate() {
        let one = Transcript {
            model_id: t0.model_id,
            cs_hash: t0.cs_hash,
            ptau_hint: String::new(),
            segments: vec![pk.clone()],
            contributions: Vec::new(),
        };
        let start = Instant::now();
        let next = ceremony::contribute(&one, "bench", b"")?;
        let c = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        ceremony::verify_step(&one, &next)?;
        let s = start.elapsed().as_secs_f64() * 1e3;
        let shape = provnet_kernels::circuit::CircuitShape::of(&m.segments[k]);
        let b = next.to_bytes().len();
        println!(
            "{k:>7}  {:>11}  {:>6}  {c:>13.1}  {s:>14.1}  {b}",
            shape.constraints,
            shape.domain()
        );
        per.push(json!({"segment": k, "constraints": shape.constraints,
            "domain": shape.domain(), "contribute_ms": c, "verify_step_ms": s, "bytes": b}));
    }
    println!(
        "whole model: init {init_ms:.0} ms, contribute {contribute_ms:.0} ms, verify step \
         {step_ms:.0} ms, verify from scratch {verify_ms:.0} ms, transcript {bytes} bytes; \
         a network step {} bytes, parsed, applied and verified in {accept_ms:.0} ms",
        step.len()
    );
    print_json(&json!({
        "segments": per,
        "init_ms": init_ms,
        "contribute_ms": contribute_ms,
        "verify_step_ms": step_ms,
        "verify_ms": verify_ms,
        "transcript_bytes": bytes,
        "step_bytes": step.len(),
        "accept_step_ms": accept_ms,
    }))
}
