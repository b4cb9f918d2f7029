//! `provnet prove` and `provnet verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use provnet_kernels::{
    circuit::CircuitShape, gpu::BackendChoice, prove_segment, Model, ModelKeys, ProofContext,
    ProofFile, SegmentVerifier,
};
use serde_json::json;

use crate::{identity, inputs};

#[derive(Args, Debug)]
pub struct ProveArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub segment: usize,
    /// ezkl-style {"input_data": [[...]]}, or the previous segment's proof file.
    #[arg(long)]
    pub input: PathBuf,
    /// Challenge id, 64 hex characters.
    #[arg(long)]
    pub challenge: String,
    /// Challenge nonce, 64 hex characters.
    #[arg(long, default_value = ZERO32)]
    pub nonce: String,
    /// The miner's key file (from `provnet keygen`).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Proving backend: auto (the GPU when usable, else the CPU), cpu, or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub proof: PathBuf,
    #[arg(long)]
    pub challenge: String,
    #[arg(long, default_value = ZERO32)]
    pub nonce: String,
    /// The miner's public key, 64 hex characters.
    #[arg(long)]
    pub miner: String,
    /// Also require the proven input to equal this one (ezkl JSON or previous proof).
    #[arg(long)]
    pub input: Option<PathBuf>,
}

const ZERO32: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn prove(args: ProveArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let key = identity::load(&args.key)?;
    let ctx = ProofContext {
        challenge: identity::hex32("--challenge", &args.challenge)?,
        nonce: identity::hex32("--nonce", &args.nonce)?,
        miner: key.verifying_key().to_bytes(),
    };
    let backend = crate::bench::open_backend(args.backend)?;
    let model = Model::load(&args.model)?;
    let seg = model.segment(args.segment)?;
    let input = inputs::segment_input(&model, &args.model, args.segment, &args.input)?;
    seg.check_input(&input)?;
    let keys = ModelKeys::open(&args.model, &model)?;
    let pk = keys.proving_key(seg.index)?;
    let vk_id = keys.vk_id(seg.index)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    let proof = prove_segment(
        backend.as_ref(),
        &model,
        seg,
        &pk,
        &input,
        &ctx,
        &mut rand::rngs::OsRng,
    )?;
    let prove_ms = t.elapsed().as_secs_f64() * 1e3;
    let file = proof.to_file(&model, seg, &vk_id, &input, &ctx);
    let bytes = file.to_bytes();
    write_atomically(&args.out, &bytes)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "model": model.name,
            "segment": seg.index,
            "ops": seg.ops(),
            "constraints": CircuitShape::of(seg).constraints,
            "challenge": hex::encode(ctx.challenge),
            "miner": hex::encode(ctx.miner),
            "load_ms": round3(load_ms),
            "prove_ms": round3(prove_ms),
            "backend": backend.name(),
            "total_ms": round3(start.elapsed().as_secs_f64() * 1e3),
            "proof_bytes": file.proof.len(),
            "proof_file_bytes": bytes.len(),
            "output": model.dequantize(&proof.output),
            "output_quantized": proof.output,
            "out": args.out,
        }))?
    );
    // The process ends here: the kernel takes back the key, the model and the witness
    // faster than freeing them piece by piece would (a few milliseconds of a proof).
    std::mem::forget((pk, keys, model, proof, file));
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let expected = ProofContext {
        challenge: identity::hex32("--challenge", &args.challenge)?,
        nonce: identity::hex32("--nonce", &args.nonce)?,
        miner: identity::hex32("--miner", &args.miner)?,
    };
    let model = Model::load(&args.model)?;
    let pf = ProofFile::read(&args.proof)?;
    let segment = pf.segment as usize;
    model.segment(segment)?;
    let keys = ModelKeys::open(&args.model, &model)?;
    let (vk, vk_id) = keys.verifying_key(segment)?;
    let verifier = SegmentVerifier::new(segment, vk, vk_id);
    let mut result = verifier.verify(&model, &pf, &expected);
    if let (Ok(()), Some(path)) = (&result, &args.input) {
        let want = inputs::segment_input(&model, &args.model, segment, path)?;
        if want != pf.input {
            result = Err(provnet_kernels::KernelError::Rejected(
                "the proof is for a different input".into(),
            ));
        }
    }
    let ms = round3(start.elapsed().as_secs_f64() * 1e3);
    // Which input the proof is for: checked against the caller's, or only the one the file
    // names (the proof is valid for it, but the file chose it).
    let input_source = match &args.input {
        Some(p) => format!("checked against {}", p.display()),
        None => "as written in the proof file (pass --input to require yours)".to_string(),
    };
    let input_digest = {
        let mut h = blake3::Hasher::new();
        for v in &pf.input {
            h.update(&v.to_le_bytes());
        }
        hex::encode(&h.finalize().as_bytes()[..16])
    };
    match result {
        Ok(()) => {
            if args.input.is_none() {
                eprintln!(
                    "valid for the input the proof file names ({} values, digest {input_digest}): pass --input to check it is yours",
                    pf.input.len()
                );
            }
            println!(
                "{}",
                json!({"valid": true, "segment": segment, "verify_ms": ms,
                       "input": input_source, "input_digest": input_digest,
                       "input_quantized": pf.input,
                       "output": model.dequantize(&pf.output)})
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "{}",
                json!({"valid": false, "segment": segment, "reason": e.to_string()})
            );
            eprintln!("invalid proof: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// Writes a file via a temporary sibling and a rename, so a failure leaves nothing behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let res = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}
