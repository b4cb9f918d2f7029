//! `provnet demo`: the whole prover pipeline on a bundled model, on this machine.
//!
//! Imports an embedded fixture model, runs setup, makes a miner key, runs the model
//! natively (trace commitment), proves every segment for a fresh random challenge (each
//! segment's input is the previous segment's proven output), verifies every proof, and shows
//! that a proof does not verify for another challenge. Until `provnet devnet` exists this is
//! the README's end-to-end command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use provnet_kernels::{
    import, keys, prove_segment, trace, CpuBackend, ImportOptions, Model, ModelKeys, ProofContext,
    SegmentVerifier,
};
use rand::RngCore;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DemoModel {
    DigitsMlp,
    SmallCnn,
    Dense64,
}

impl DemoModel {
    fn files(self) -> (&'static str, &'static [u8], &'static [u8]) {
        match self {
            DemoModel::DigitsMlp => (
                "digits_mlp",
                include_bytes!("../../kernels/fixtures/digits_mlp.onnx"),
                include_bytes!("../../kernels/fixtures/digits_mlp_input.json"),
            ),
            DemoModel::SmallCnn => (
                "small_cnn",
                include_bytes!("../../kernels/fixtures/small_cnn.onnx"),
                include_bytes!("../../kernels/fixtures/small_cnn_input.json"),
            ),
            DemoModel::Dense64 => (
                "dense_64",
                include_bytes!("../../kernels/fixtures/dense_64.onnx"),
                include_bytes!("../../kernels/fixtures/dense_64_input.json"),
            ),
        }
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value = "digits-mlp")]
    pub model: DemoModel,
    /// Where to write the model, keys and proofs (default: a fresh temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let (name, onnx_bytes, input_json) = args.model.files();
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("provnet-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let onnx = dir.join(format!("{name}.onnx"));
    std::fs::write(&onnx, onnx_bytes).with_context(|| format!("writing {}", onnx.display()))?;
    let input_path = dir.join(format!("{name}_input.json"));
    std::fs::write(&input_path, input_json)?;
    let model_dir = dir.join(name);
    if model_dir.exists() {
        bail!("{} exists: pass a fresh --dir", model_dir.display());
    }

    // The bundled models' inputs are pixel intensities in [0, 1], except dense_64's, which
    // are standard normal: the import range fits the data, as an operator's would.
    let opts = match args.model {
        DemoModel::Dense64 => ImportOptions::default(),
        _ => ImportOptions {
            input_min: 0.0,
            input_max: 1.0,
            ..Default::default()
        },
    };
    let summary = import(&onnx, &model_dir, &opts)?;
    println!(
        "imported {name}: {} segment(s), {} constraints in all -> {}",
        summary.segments.len(),
        summary.total_constraints,
        model_dir.display()
    );
    for s in &summary.segments {
        println!(
            "  segment {}: {:?} {:?} -> {:?}, {} constraints",
            s.index, s.ops, s.input_shape, s.output_shape, s.constraints
        );
    }
    let model = Model::load(&model_dir)?;
    let t = Instant::now();
    keys::setup(&model_dir, &model, &mut rand::rngs::OsRng)?;
    println!(
        "setup: {:.0} ms  (WARNING: single-party development setup, not for a real network)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let key = crate::identity::generate(&dir.join("miner.key"), true)?;
    let miner = key.verifying_key().to_bytes();
    println!("miner key: {}", hex::encode(miner));

    let x = model.quantize(&crate::inputs::read_float_input(&input_path)?);
    let tr = trace::run(&model, &x)?;
    println!("native run: trace root {}", hex::encode(tr.root));

    let mut challenge = [0u8; 32];
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ctx = ProofContext {
        challenge,
        nonce,
        miner,
    };
    println!("challenge {}", hex::encode(challenge));
    let store = ModelKeys::open(&model_dir, &model)?;
    let mut input = x;
    for seg in &model.segments {
        let pk = store.proving_key(seg.index)?;
        let (vk, vk_id) = store.verifying_key(seg.index)?;
        let t = Instant::now();
        let proof = prove_segment(
            &CpuBackend,
            &model,
            seg,
            &pk,
            &input,
            &ctx,
            &mut rand::rngs::OsRng,
        )?;
        let prove_ms = t.elapsed().as_secs_f64() * 1e3;
        if proof.output != tr.tensors[seg.index + 1] {
            bail!(
                "segment {}: proven output differs from the native trace",
                seg.index
            );
        }
        let file = proof.to_file(&model, seg, &vk_id, &input, &ctx);
        let path = dir.join(format!("segment-{}.proof", seg.index));
        crate::prove::write_atomically(&path, &file.to_bytes())?;
        let verifier = SegmentVerifier::new(seg.index, vk, vk_id);
        let t = Instant::now();
        verifier.verify(&model, &file, &ctx)?;
        let verify_ms = t.elapsed().as_secs_f64() * 1e3;
        let wrong = ProofContext {
            challenge: [0xee; 32],
            ..ctx
        };
        let refused = verifier.verify(&model, &file, &wrong).is_err();
        println!(
            "  segment {}: proved in {prove_ms:.1} ms, {} bytes, verified in {verify_ms:.2} ms; \
             for another challenge: {}",
            seg.index,
            file.proof.len(),
            if refused {
                "rejected"
            } else {
                "ACCEPTED (bug)"
            }
        );
        if !refused {
            bail!("a proof verified for the wrong challenge");
        }
        input = proof.output;
    }
    let out = model.dequantize(&input);
    println!("model output: {out:.4?}");
    println!("files in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
