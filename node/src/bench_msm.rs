//! `provnet bench msm`: G1 multi-scalar multiplication at 2^a..2^b points on each backend
//! in the same run, with the ratio to the first. Scalars are uniform, or drawn like our
//! circuits' witnesses (mostly bits and small signed integers) to show what the
//! small-witness paths buy.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ark_bn254::{Fr, G1Affine, G1Projective};
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::UniformRand;
use ark_std::rand::{rngs::StdRng, Rng, SeedableRng};
use clap::{Args, ValueEnum};
use provnet_kernels::gpu::BackendChoice;
use rayon::prelude::*;
use serde_json::json;

use crate::bench::median;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScalarKind {
    /// Uniform in Fr.
    Random,
    /// Like a segment witness: 60% bits, 30% signed 8-bit, 10% uniform.
    Witness,
}

#[derive(Args, Debug)]
pub struct MsmBenchArgs {
    /// Backends to time, comma-separated; ratios are against the first.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub backend: Vec<BackendChoice>,
    /// log2 of the point count: one value (20) or an inclusive range (16..22).
    #[arg(long, default_value = "12..16")]
    pub log_n: String,
    #[arg(long, value_enum, default_value = "random")]
    pub scalars: ScalarKind,
    /// Timed runs per size and backend (median reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

fn parse_range(s: &str) -> Result<(u32, u32)> {
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a.trim().parse::<u32>()?, b.trim().parse::<u32>()?),
        None => {
            let v = s.trim().parse::<u32>()?;
            (v, v)
        }
    };
    if a > b || b > 26 {
        bail!("--log-n {s}: expected a..b with a <= b <= 26");
    }
    Ok((a, b))
}

/// 2^log_n distinct points, cheaply: 64 random starting points, each followed by a walk of
/// random-step additions, normalised together.
fn bases(log_n: u32, rng: &mut StdRng) -> Vec<G1Affine> {
    let n = 1usize << log_n;
    let lanes = 64.min(n);
    let starts: Vec<(G1Projective, G1Projective)> = (0..lanes)
        .map(|_| (G1Projective::rand(rng), G1Projective::rand(rng)))
        .collect();
    let per = n.div_ceil(lanes);
    let proj: Vec<G1Projective> = starts
        .par_iter()
        .flat_map_iter(|(p, step)| {
            let (mut p, step) = (*p, *step);
            (0..per).map(move |_| {
                p += step;
                p
            })
        })
        .take_any(n)
        .collect();
    G1Projective::normalize_batch(&proj)
}

fn scalars(n: usize, kind: ScalarKind, rng: &mut StdRng) -> Vec<Fr> {
    (0..n)
        .map(|_| match kind {
            ScalarKind::Random => Fr::rand(rng),
            ScalarKind::Witness => match rng.gen_range(0..10) {
                0..=5 => Fr::from(rng.gen_range(0u64..2)),
                6..=8 => Fr::from(rng.gen_range(-128i64..128)),
                _ => Fr::rand(rng),
            },
        })
        .collect()
}

pub fn run(args: MsmBenchArgs) -> Result<ExitCode> {
    let (lo, hi) = parse_range(&args.log_n).with_context(|| format!("--log-n {}", args.log_n))?;
    let backends = crate::bench::open_backends(&args.backend)?;
    let mut rng = StdRng::seed_from_u64(0x6d736d);
    let mut rows = Vec::new();
    println!(
        "{:<6} {:<8} {:>12} {:>10}",
        "log_n", "backend", "median_ms", "ratio"
    );
    for log_n in lo..=hi {
        let b = bases(log_n, &mut rng);
        let s = scalars(b.len(), args.scalars, &mut rng);
        let reference = G1Projective::msm(&b, &s).map_err(|n| anyhow!("MSM lengths {n}"))?;
        let mut first_ms = None;
        for backend in &backends {
            // Warm-up (uploads bases, compiles kernels) and a check against arkworks.
            let got = backend.msm_g1(&b, &s)?;
            if got.into_affine() != reference.into_affine() {
                bail!(
                    "{} MSM of 2^{log_n} points differs from arkworks",
                    backend.name()
                );
            }
            let mut times = Vec::new();
            for _ in 0..args.runs.max(1) {
                let t = Instant::now();
                let _ = std::hint::black_box(backend.msm_g1(&b, &s)?);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let m = median(times);
            let ratio = first_ms.get_or_insert(m).to_owned() / m;
            println!("{log_n:<6} {:<8} {m:>12.3} {ratio:>9.2}x", backend.name());
            rows.push(
                json!({"log_n": log_n, "backend": backend.name(), "median_ms": m,
                             "speedup_vs_first": ratio}),
            );
        }
    }
    println!(
        "{}",
        json!({"bench": "msm_g1", "scalars": format!("{:?}", args.scalars).to_lowercase(),
               "threads": rayon::current_num_threads(), "rows": rows})
    );
    Ok(ExitCode::SUCCESS)
}
