//! `provnet export ...`: a segment's verifying key, and a proof with its public inputs, in
//! forms others check without provnet: snarkjs' JSON files and a Solidity verifier.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use provnet_kernels::circuit::{pack, per_word};
use provnet_kernels::export::{self, ContractInfo};
use provnet_kernels::{Model, ModelKeys, ProofFile, Segment, SegmentVerifier};
use serde_json::json;

use crate::prove::write_atomically;

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// snarkjs' verification_key.json, proof.json and public.json: check with
    /// `snarkjs groth16 verify verification_key.json public.json proof.json`. The proof is
    /// verified here first, its public inputs recomputed from its claimed input, output and
    /// binding; one that does not verify is not exported. Without --proof, only the key
    /// of --segment is written.
    Snarkjs {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        proof: Option<PathBuf>,
        /// The segment whose key to write when there is no --proof.
        #[arg(long)]
        segment: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// A Solidity verifier contract for one segment (snarkjs' template shape:
    /// `verifyProof(_pA, _pB, _pC, _pubSignals)`), taking the segment's public inputs in
    /// circuit order: packed input words, packed output words, the binding.
    Solidity {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        segment: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: ExportCommand) -> Result<ExitCode> {
    match cmd {
        ExportCommand::Snarkjs {
            model,
            proof,
            segment,
            out,
        } => snarkjs(&model, proof.as_deref(), segment, &out),
        ExportCommand::Solidity {
            model,
            segment,
            out,
        } => solidity(&model, segment, &out),
    }
}

/// What the public inputs of a segment are, word by word.
fn layout(seg: &Segment) -> String {
    let words = |n: usize, r| pack(&vec![0; n], r).len();
    let (wi, wo) = (
        words(seg.n_in(), seg.input()),
        words(seg.n_out(), seg.output()),
    );
    format!(
        "[0, {wi}) the input ({} values of {} bits, {} per word, offset from {}), \
         [{wi}, {}) the output ({} values of {} bits, {} per word, offset from {}), \
         [{}] the binding (blake3 of model, segment, challenge, nonce and miner)",
        seg.n_in(),
        seg.input().bits,
        per_word(seg.input().bits),
        seg.input().lo(),
        wi + wo,
        seg.n_out(),
        seg.output().bits,
        per_word(seg.output().bits),
        seg.output().lo(),
        wi + wo,
    )
}

/// Where the keys come from, in one line.
fn provenance(keys: &ModelKeys) -> String {
    let ceremony = &keys.index.ceremony;
    if keys.index.warning.contains("DEVELOPMENT") {
        format!("DEVELOPMENT SETUP ONLY ({ceremony}): whoever ran it can forge proofs")
    } else {
        format!("from a setup ceremony: {ceremony}")
    }
}

fn warn_if_development(keys: &ModelKeys) {
    if keys.index.warning.contains("DEVELOPMENT") {
        eprintln!(
            "WARNING: these keys come from a single-party development setup; a verifier \
             built on them accepts whatever proofs its maker forges. Export keys from \
             `provnet ceremony finalize` for anything others rely on."
        );
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v)?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

fn snarkjs(
    model_dir: &Path,
    proof: Option<&Path>,
    segment: Option<usize>,
    out: &Path,
) -> Result<ExitCode> {
    let model = Model::load(model_dir)?;
    let keys = ModelKeys::open(model_dir, &model)?;
    let pf = proof.map(ProofFile::read).transpose()?;
    let segment = match (&pf, segment) {
        (Some(pf), Some(s)) if s != pf.segment as usize => {
            bail!("--segment {s} but the proof is for segment {}", pf.segment)
        }
        (Some(pf), _) => pf.segment as usize,
        (None, Some(s)) => s,
        (None, None) => bail!("give --proof, or --segment for the key alone"),
    };
    model.segment(segment)?;
    let (vk, vk_id) = keys.verifying_key(segment)?;
    warn_if_development(&keys);
    // Everything is checked before anything is written.
    let checked = match &pf {
        Some(pf) => {
            let verifier = SegmentVerifier::new(segment, vk.clone(), vk_id);
            let (proof, inputs) = verifier
                .check_claims(&model, pf, &pf.context())
                .context("refusing to export this proof")?;
            verifier
                .verify_raw(&proof, &inputs)
                .context("refusing to export a proof that does not verify")?;
            Some((proof, inputs))
        }
        None => None,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let vk_path = out.join("verification_key.json");
    write_json(&vk_path, &export::snarkjs_vk(&vk))?;
    let mut written = vec![vk_path.display().to_string()];
    if let Some((proof, inputs)) = &checked {
        let (p, q) = (out.join("proof.json"), out.join("public.json"));
        write_json(&p, &export::snarkjs_proof(proof))?;
        write_json(&q, &export::snarkjs_public(inputs))?;
        written.extend([p.display().to_string(), q.display().to_string()]);
    }
    let seg = model.segment(segment)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "segment": segment,
            "vk_id": hex::encode(vk_id),
            "public_inputs": vk.gamma_abc_g1.len() - 1,
            "layout": layout(seg),
            "keys": provenance(&keys),
            "written": written,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

fn solidity(model_dir: &Path, segment: usize, out: &Path) -> Result<ExitCode> {
    let model = Model::load(model_dir)?;
    let keys = ModelKeys::open(model_dir, &model)?;
    let seg = model.segment(segment)?;
    let (vk, vk_id) = keys.verifying_key(segment)?;
    warn_if_development(&keys);
    let (model_id, vk_hex, layout, provenance) = (
        hex::encode(model.id()),
        hex::encode(vk_id),
        layout(seg),
        provenance(&keys),
    );
    let source = export::solidity(
        &vk,
        &ContractInfo {
            model_name: &model.name,
            model_id: &model_id,
            segment,
            vk_id: &vk_hex,
            layout: &layout,
            provenance: &provenance,
        },
    );
    write_atomically(out, source.as_bytes())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "segment": segment,
            "vk_id": vk_hex,
            "public_inputs": vk.gamma_abc_g1.len() - 1,
            "layout": layout,
            "contract": "Groth16Verifier",
            "function": format!(
                "verifyProof(uint256[2],uint256[2][2],uint256[2],uint256[{}])",
                vk.gamma_abc_g1.len() - 1
            ),
            "written": out.display().to_string(),
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
