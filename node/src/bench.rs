//! `provnet bench prove`: per-segment proving and verification figures, and the ezkl
//! baseline on the same ONNX and input, in the same run.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::{
    circuit::CircuitShape,
    gpu::{self, BackendChoice},
    prove_segment, prove_segment_many, trace, Model, ModelKeys, ProofContext, SegmentVerifier,
};
use serde_json::{json, Value};

use crate::inputs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Model input, ezkl JSON format.
    #[arg(long)]
    pub input: PathBuf,
    /// In-process proofs per segment (median reported).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Verifications per segment (median reported).
    #[arg(long, default_value_t = 200)]
    pub verify_runs: usize,
    /// Whole `provnet prove` processes per segment (median reported); 0 to skip.
    #[arg(long, default_value_t = 5)]
    pub process_runs: usize,
    /// Run the ezkl baseline on this ONNX file with the same input.
    #[arg(long)]
    pub ezkl_onnx: Option<PathBuf>,
    /// Path of ezkl_baseline.py (needs `pip install ezkl==23.0.5 onnx numpy`).
    #[arg(long, default_value = "../shared/bench/ezkl_baseline.py")]
    pub ezkl_script: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub ezkl_runs: usize,
    /// In-process proving backends, compared in the same run: cpu, cuda, auto
    /// (comma-separated). Every proof is checked by the CPU verifier.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub backend: Vec<BackendChoice>,
    /// Also prove this many challenges of each segment at once (one batch per MSM) on each
    /// backend and report proofs per second; 0 to skip.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
}

/// Opens each backend a command was given (`--backend a,b`), or says which one cannot be
/// opened and why.
pub(crate) fn open_backends(
    choices: &[BackendChoice],
) -> Result<Vec<std::sync::Arc<dyn provnet_kernels::ProverBackend>>> {
    if choices.is_empty() {
        bail!("--backend: name at least one");
    }
    choices.iter().map(|b| open_backend(*b)).collect()
}

/// The backend `--backend b` asks for, or an error naming the flag and the reason.
pub(crate) fn open_backend(
    b: BackendChoice,
) -> Result<std::sync::Arc<dyn provnet_kernels::ProverBackend>> {
    gpu::select(b).map_err(|why| anyhow::anyhow!("--backend {b}: {why}"))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let model = Model::load(&args.model)?;
    let keys = ModelKeys::open(&args.model, &model)?;
    let x = model.quantize(&inputs::read_float_input(&args.input)?);
    let tr = trace::run(&model, &x)?;
    let backends = open_backends(&args.backend)?;
    let ctx = ProofContext {
        challenge: [7; 32],
        nonce: [9; 32],
        miner: [5; 32],
    };
    let tmp = tempdir()?;
    let key_file = tmp.join("bench.key");
    crate::identity::generate(&key_file, false)?;
    // Whole processes first: once this process has run rayon work, its idle workers spin for
    // a while and would steal the child's cores.
    let mut process = Vec::new();
    for seg in &model.segments {
        process.push(process_prove(&args, seg.index, &key_file, &tmp)?);
    }
    let mut rows = Vec::new();
    println!(
        "{:<8} {:>11} {:>7} {:>10} {:>10} {:>10} {:>11} {:>7}",
        "segment",
        "constraints",
        "domain",
        "pk_load_ms",
        "prove_ms",
        "verify_ms",
        "process_ms",
        "bytes"
    );
    for seg in &model.segments {
        let shape = CircuitShape::of(seg);
        let t = Instant::now();
        let pk = keys.proving_key(seg.index)?;
        let pk_load_ms = ms(t);
        let (vk, vk_id) = keys.verifying_key(seg.index)?;
        let input = &tr.tensors[seg.index];
        let mut rng = rand::rngs::OsRng;
        let verifier = SegmentVerifier::new(seg.index, vk, vk_id);
        let mut per_backend = Vec::new();
        let mut file = None;
        for backend in &backends {
            let mut times = Vec::new();
            for _ in 0..args.runs.max(1) {
                let t = Instant::now();
                let p = prove_segment(backend.as_ref(), &model, seg, &pk, input, &ctx, &mut rng)?;
                times.push(ms(t));
                let f = p.to_file(&model, seg, &vk_id, input, &ctx);
                verifier.verify(&model, &f, &ctx).with_context(|| {
                    format!(
                        "a {} proof of segment {} did not verify",
                        backend.name(),
                        seg.index
                    )
                })?;
                file = Some(f);
            }
            per_backend.push((backend.name(), median(times)));
        }
        let file = file.context("at least one run")?;
        let prove_ms = per_backend[0].1;
        let mut verify_ms = Vec::new();
        for _ in 0..args.verify_runs.max(1) {
            let t = Instant::now();
            verifier.verify(&model, &file, &ctx)?;
            verify_ms.push(ms(t));
        }
        let process_ms = process[seg.index];
        let row = json!({
            "segment": seg.index,
            "ops": seg.ops(),
            "constraints": shape.constraints,
            "domain": (shape.constraints + shape.public_inputs + 1).next_power_of_two(),
            "pk_load_ms": pk_load_ms,
            "backend": per_backend[0].0,
            "prove_ms_median": prove_ms,
            "prove_ms_median_by_backend": per_backend.iter().map(|(b, t)| json!({"backend": b, "prove_ms_median": t})).collect::<Vec<_>>(),
            "verify_ms_median": median(verify_ms),
            "process_prove_ms_median": process_ms,
            "proof_bytes": file.proof.len(),
        });
        println!(
            "{:<8} {:>11} {:>7} {:>10.2} {:>10.2} {:>10.3} {:>11.1} {:>7}",
            seg.index,
            shape.constraints,
            row["domain"],
            pk_load_ms,
            row["prove_ms_median"].as_f64().unwrap_or(f64::NAN),
            row["verify_ms_median"].as_f64().unwrap_or(f64::NAN),
            process_ms.unwrap_or(f64::NAN),
            file.proof.len()
        );
        for (name, t) in per_backend.iter().skip(1) {
            println!(
                "{:<8} on {name}: prove {t:.2} ms ({:.2}x the {})",
                seg.index,
                prove_ms / t,
                per_backend[0].0
            );
        }
        rows.push(row);
    }
    let mut batch_rows = Vec::new();
    if args.batch > 0 {
        for seg in &model.segments {
            let pk = keys.proving_key(seg.index)?;
            let (vk, vk_id) = keys.verifying_key(seg.index)?;
            let verifier = SegmentVerifier::new(seg.index, vk, vk_id);
            let input = &tr.tensors[seg.index];
            let ctxs: Vec<ProofContext> = (0..args.batch)
                .map(|k| ProofContext {
                    challenge: *blake3::hash(&k.to_le_bytes()).as_bytes(),
                    ..ctx
                })
                .collect();
            let jobs: Vec<(&[i64], &ProofContext)> =
                ctxs.iter().map(|c| (input.as_slice(), c)).collect();
            let mut first = None;
            for backend in &backends {
                let mut rng = rand::rngs::OsRng;
                let mut times = Vec::new();
                for _ in 0..args.runs.clamp(1, 3) {
                    let t = Instant::now();
                    let proofs =
                        prove_segment_many(backend.as_ref(), &model, seg, &pk, &jobs, &mut rng)?;
                    times.push(ms(t));
                    for (p, (i, c)) in proofs.iter().zip(&jobs) {
                        verifier.verify(&model, &p.to_file(&model, seg, &vk_id, i, c), c)?;
                    }
                }
                let per_s = args.batch as f64 / (median(times) / 1e3);
                let ratio = per_s / *first.get_or_insert(per_s);
                println!(
                    "segment {} batch {} on {}: {per_s:.1} proofs/s ({ratio:.2}x the {})",
                    seg.index,
                    args.batch,
                    backend.name(),
                    backends[0].name()
                );
                batch_rows.push(json!({"segment": seg.index, "batch": args.batch,
                    "backend": backend.name(), "proofs_per_s": per_s, "vs_first": ratio}));
            }
        }
    }
    let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_f64()).sum::<f64>();
    let (prove_total, process_total) = (sum("prove_ms_median"), sum("process_prove_ms_median"));
    let verify_max = rows
        .iter()
        .filter_map(|r| r["verify_ms_median"].as_f64())
        .fold(0.0, f64::max);
    if args.process_runs == 0 {
        println!("total: prove {prove_total:.2} ms in-process (processes not timed)");
    } else {
        println!("total: prove {prove_total:.2} ms in-process, {process_total:.1} ms as processes");
    }
    let mut report = json!({
        "model": model.name,
        "threads": rayon_threads(),
        "segments": rows,
        "prove_ms_total": prove_total,
        "process_prove_ms_total": (args.process_runs > 0).then_some(process_total),
        "verify_ms_max": verify_max,
    });
    if !batch_rows.is_empty() {
        report["batched"] = json!(batch_rows);
    }
    if let Some(onnx) = &args.ezkl_onnx {
        let ezkl = ezkl_baseline(&args, onnx)?;
        let ezkl_prove_ms = ezkl["prove_s_median"].as_f64().unwrap_or(f64::NAN) * 1e3;
        let ezkl_verify_ms = ezkl["verify_s_median"].as_f64().unwrap_or(f64::NAN) * 1e3;
        println!(
            "ezkl: prove {ezkl_prove_ms:.1} ms, verify {ezkl_verify_ms:.1} ms, proof {} bytes",
            ezkl["proof_bytes"]
        );
        let in_process = ezkl_prove_ms / prove_total;
        let process = (args.process_runs > 0).then(|| ezkl_prove_ms / process_total);
        let as_processes = process.map_or(String::new(), |x| format!(", {x:.1}x as processes"));
        println!(
            "speedup vs ezkl: {in_process:.1}x in-process{as_processes}; verify {:.1}x",
            ezkl_verify_ms / verify_max
        );
        report["ezkl"] = ezkl;
        report["speedup_in_process"] = json!(in_process);
        report["speedup_process"] = json!(process);
    }
    println!("{report}");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(ExitCode::SUCCESS)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("provnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Median wall time of whole `provnet prove` processes for one segment, chaining inputs
/// through proof files exactly as an operator would.
fn process_prove(
    args: &BenchArgs,
    segment: usize,
    key: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<Option<f64>> {
    if args.process_runs == 0 {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("locating the provnet binary")?;
    let input = if segment == 0 {
        args.input.clone()
    } else {
        tmp.join(format!("seg{}.proof", segment - 1))
    };
    let out = tmp.join(format!("seg{segment}.proof"));
    let mut times = Vec::new();
    for _ in 0..args.process_runs {
        let t = Instant::now();
        let status = Command::new(&exe)
            .args(["prove", "--segment", &segment.to_string(), "--challenge"])
            .arg("07".repeat(32))
            .arg("--model")
            .arg(&args.model)
            .arg("--input")
            .arg(&input)
            .arg("--key")
            .arg(key)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running provnet prove")?;
        times.push(ms(t));
        if !status.success() {
            bail!("provnet prove failed for segment {segment}");
        }
    }
    Ok(Some(median(times)))
}

fn ezkl_baseline(args: &BenchArgs, onnx: &std::path::Path) -> Result<Value> {
    let out = Command::new("python3")
        .arg(&args.ezkl_script)
        .arg(onnx)
        .arg(&args.input)
        .args(["--runs", &args.ezkl_runs.to_string()])
        .output()
        .context("running python3 for the ezkl baseline")?;
    if !out.status.success() {
        bail!(
            "ezkl baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("ezkl baseline printed no JSON")?;
    serde_json::from_str(line).context("ezkl baseline JSON")
}
