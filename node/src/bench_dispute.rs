//! `provnet bench dispute`: the bisection of a dispute over a synthetic trace of `--cuts`
//! cuts, in process: per round, the cuts asked for, each side's reveal (its size on the
//! wire, and the time to build it from the side's Merkle tree) and the referee's time to
//! check it. The network adds one gossip hop per round on top; the leaf's proof is a
//! segment proof like any other (`provnet bench prove`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use provnet_kernels::trace::{self, MerkleTree};
use provnet_validator::court::bank::Bank;
use provnet_validator::court::{self, Court, CourtConfig, CourtParams, Owed, SegmentRunner, Stage};
use provnet_validator::Store;
use provnet_wire::{Claim, DisputeOpen, Message};
use serde_json::json;

#[derive(Args, Debug)]
pub struct DisputeBenchArgs {
    /// Cuts in the trace (segments + 1).
    #[arg(long, default_value_t = 100_000)]
    pub cuts: u32,
    /// Pieces a range is cut into per round.
    #[arg(long, default_value_t = 128)]
    pub arity: u32,
    /// The first corrupted cut (default: two thirds of the way).
    #[arg(long)]
    pub bad_cut: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

struct NoRunner;

impl SegmentRunner for NoRunner {
    fn run(&self, _: &[u8; 32], _: u32, _: &[i64]) -> Option<Vec<i64>> {
        None
    }
}

pub fn run(args: DisputeBenchArgs) -> Result<ExitCode> {
    if args.cuts < 3 || args.cuts > provnet_wire::dispute::MAX_CUTS {
        bail!("--cuts must be 3 to {}", provnet_wire::dispute::MAX_CUTS);
    }
    let bad = args
        .bad_cut
        .unwrap_or(args.cuts / 3 * 2)
        .clamp(1, args.cuts - 1);
    let t = Instant::now();
    let state =
        |k: u32, lie: bool| trace::leaf(k as usize, &[i64::from(k), i64::from(lie && k >= bad)]);
    let honest: Vec<[u8; 32]> = (0..args.cuts).map(|k| state(k, false)).collect();
    let liar: Vec<[u8; 32]> = (0..args.cuts).map(|k| state(k, true)).collect();
    let (honest, liar) = (MerkleTree::new(&honest), MerkleTree::new(&liar));
    let trees_ms = t.elapsed().as_secs_f64() * 1e3 / 2.0;

    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path()).context("a scratch store")?;
    let (claimant, challenger, model) = ([1u8; 32], [2u8; 32], [7u8; 32]);
    let bank = Bank::open(
        &store,
        &BTreeMap::from([(claimant, 1_000), (challenger, 1_000)]),
    )?;
    let cfg = CourtConfig {
        params: CourtParams {
            arity: args.arity,
            ..CourtParams::default()
        },
        stake: BTreeMap::from([([9u8; 32], 1)]),
        me: [9; 32],
        referee: true,
        models: BTreeMap::from([(model, args.cuts)]),
    };
    let mut court = Court::open(&store, cfg, Box::new(bank))?;
    let claim = Claim {
        model_id: model,
        input: vec![0, 0],
        output: vec![i64::from(args.cuts - 1), 1],
        cuts: args.cuts,
        trace_root: liar.root(),
        bond: 100,
        nonce: [0; 16],
    };
    let mut now = 1_000_000u64;
    let claim_id = court
        .on_claim(&claimant, &claim, now)?
        .map_err(|e| anyhow::anyhow!("claim: {e}"))?;
    let open = DisputeOpen {
        claim_id,
        trace_root: honest.root(),
        bond: 100,
    };
    let id = court
        .on_dispute(&challenger, &open, now)?
        .map_err(|e| anyhow::anyhow!("dispute: {e}"))?;
    let mut rounds = Vec::new();
    while let Stage::Bisect { round, lo, hi, .. } = court.disputes()[&id].stage.clone() {
        let mut sides = Vec::new();
        for (who, tree) in [(claimant, &liar), (challenger, &honest)] {
            let Some(Owed { points, full, .. }) = court.owed(&who).pop() else {
                bail!("round {round}: nothing owed");
            };
            let t = Instant::now();
            let r = court::reveal(id, round, &points, full, tree).context("a reveal")?;
            let build_ms = t.elapsed().as_secs_f64() * 1e3;
            let bytes = Message::DisputeReveal(r.clone()).encode()?.len();
            now += 1;
            let t = Instant::now();
            court
                .on_reveal(&who, &r, now)?
                .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
            let check_ms = t.elapsed().as_secs_f64() * 1e3;
            sides.push(json!({"points": points.len(), "bytes": bytes, "build_ms": build_ms, "check_ms": check_ms}));
        }
        rounds.push(json!({"round": round, "lo": lo, "hi": hi, "sides": sides}));
    }
    let leaf = match court.disputes()[&id].stage {
        Stage::Leaf { segment, .. } => segment,
        _ => bail!("the bisection ended without a leaf"),
    };
    let _ = court.tick(now, &NoRunner)?;
    let report = json!({
        "cuts": args.cuts,
        "arity": args.arity,
        "first_bad_cut": bad,
        "leaf_segment": leaf,
        "right": leaf + 1 == bad,
        "rounds": rounds,
        "tree_build_ms": trees_ms,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "bisection over {} cuts, arity {}: {} round(s) to segment {leaf} (first bad cut {bad}: {}); each side's Merkle tree took {trees_ms:.1} ms",
            args.cuts,
            args.arity,
            rounds.len(),
            if leaf + 1 == bad { "right" } else { "WRONG" }
        );
        for r in &rounds {
            for (side, s) in ["claimant", "challenger"]
                .iter()
                .zip(r["sides"].as_array().into_iter().flatten())
            {
                println!(
                    "  round {} [{}..{}] {side:<10} {} hashes, {} bytes, built in {:.3} ms, checked in {:.3} ms",
                    r["round"], r["lo"], r["hi"], s["points"], s["bytes"],
                    s["build_ms"].as_f64().unwrap_or(0.0),
                    s["check_ms"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    Ok(if leaf + 1 == bad {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
