//! `provnet bench verify`: validator verification throughput, one proof at a time against
//! batch verification (one final exponentiation per batch), in the same run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Args;
use provnet_kernels::{
    prove_segment, trace, CpuBackend, Model, ModelKeys, ProofContext, ProofFile, SegmentVerifier,
};
use serde_json::json;

use crate::bench::median;
use crate::inputs;

#[derive(Args, Debug)]
pub struct VerifyBenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Model input, ezkl JSON format.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub segment: usize,
    /// Distinct proofs to make (each for its own challenge, nonce and miner).
    #[arg(long, default_value_t = 64)]
    pub proofs: usize,
    /// Proofs per batch (the distinct proofs, repeated as needed).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Timed rounds of each method (median reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

fn ctx(k: usize) -> ProofContext {
    let b = |salt: u64| {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&(k as u64).to_le_bytes());
        out[8..16].copy_from_slice(&salt.to_le_bytes());
        out
    };
    ProofContext {
        challenge: b(1),
        nonce: b(2),
        miner: b(3),
    }
}

pub fn run(args: VerifyBenchArgs) -> Result<ExitCode> {
    ensure!(
        args.proofs > 0 && args.batch > 0 && args.rounds > 0,
        "counts must be positive"
    );
    let model = Model::load(&args.model)?;
    let keys = ModelKeys::open(&args.model, &model)?;
    let seg = model.segment(args.segment)?;
    let x = model.quantize(&inputs::read_float_input(&args.input)?);
    let input = trace::run(&model, &x)?.tensors[seg.index].clone();
    let pk = keys.proving_key(seg.index)?;
    let (vk, vk_id) = keys.verifying_key(seg.index)?;
    let verifier = SegmentVerifier::new(seg.index, vk, vk_id);
    let mut rng = rand::rngs::OsRng;

    eprintln!(
        "proving {} distinct proofs of segment {}...",
        args.proofs, seg.index
    );
    let files: Vec<ProofFile> = (0..args.proofs)
        .map(|k| {
            let p = prove_segment(&CpuBackend, &model, seg, &pk, &input, &ctx(k), &mut rng)?;
            Ok(p.to_file(&model, seg, &vk_id, &input, &ctx(k)))
        })
        .collect::<provnet_kernels::Result<_>>()?;
    let items: Vec<(&ProofFile, ProofContext)> = (0..args.batch)
        .map(|i| (&files[i % files.len()], ctx(i % files.len())))
        .collect();

    let mut single = Vec::new();
    let mut batch = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        for (pf, c) in &items {
            verifier.verify(&model, pf, c)?;
        }
        single.push(items.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let verdicts = verifier.verify_files(&model, &items, &mut rng);
        batch.push(items.len() as f64 / t.elapsed().as_secs_f64());
        ensure!(
            verdicts.iter().all(|v| v.is_ok()),
            "an honest proof failed in the batch"
        );
    }
    let (single, batch) = (median(single), median(batch));
    let report = json!({
        "segment": seg.index,
        "batch_size": items.len(),
        "threads": rayon::current_num_threads(),
        "one_by_one_proofs_per_s": single.round(),
        "batch_proofs_per_s": batch.round(),
        "ratio": (batch / single * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
