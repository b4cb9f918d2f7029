//! Honest proofs verify for every segment of every fixture model; proofs checked against
//! another challenge, nonce, miner, output, proof byte or segment do not.

mod common;

use ark_std::rand::SeedableRng;
use provnet_kernels::{
    import, keys, prove_segment, trace, CpuBackend, ImportOptions, KernelError, Model, ModelKeys,
    ProofContext, ProofFile, SegmentVerifier,
};
use rand_chacha::ChaCha20Rng;

const CTX: ProofContext = ProofContext {
    challenge: [1; 32],
    nonce: [2; 32],
    miner: [3; 32],
};

struct Proven {
    model: Model,
    keys: ModelKeys,
    files: Vec<ProofFile>,
}

fn prove_all(tmp: &std::path::Path, name: &str, rng: &mut ChaCha20Rng) -> Proven {
    prove_all_with(tmp, name, &ImportOptions::default(), rng)
}

fn prove_all_with(
    tmp: &std::path::Path,
    name: &str,
    opts: &ImportOptions,
    rng: &mut ChaCha20Rng,
) -> Proven {
    let sub = format!("{name}-{}-{}", opts.merge, opts.max_constraints);
    let (dir, model, _) = common::import_fixture_with(tmp, name, &sub, opts);
    keys::setup(&dir, &model, rng).unwrap();
    let keys = ModelKeys::open(&dir, &model).unwrap();
    let x = model.quantize(&common::read_floats(
        &format!("{name}_input.json"),
        "input_data",
    ));
    let tr = trace::run(&model, &x).unwrap();
    let mut files = Vec::new();
    for seg in &model.segments {
        let pk = keys.proving_key(seg.index).unwrap();
        let (_, vk_id) = keys.verifying_key(seg.index).unwrap();
        assert_eq!(keys.vk_id(seg.index).unwrap(), vk_id);
        let input = &tr.tensors[seg.index];
        let p = prove_segment(&CpuBackend, &model, seg, &pk, input, &CTX, rng).unwrap();
        assert_eq!(
            p.output,
            tr.tensors[seg.index + 1],
            "{name} seg {}",
            seg.index
        );
        let file = p.to_file(&model, seg, &vk_id, input, &CTX);
        assert_eq!(file.proof.len(), 128);
        // Round trip through CBOR, as the CLI does.
        files.push(ProofFile::from_bytes(&file.to_bytes()).unwrap());
    }
    Proven { model, keys, files }
}

fn verifier(p: &Proven, segment: usize) -> SegmentVerifier {
    let (vk, id) = p.keys.verifying_key(segment).unwrap();
    SegmentVerifier::new(segment, vk, id)
}

fn rejected(r: provnet_kernels::Result<()>) -> String {
    match r {
        Err(KernelError::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn every_segment_of_every_model_proves_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for name in common::MODELS {
        let p = prove_all(tmp.path(), name, &mut rng);
        for (i, f) in p.files.iter().enumerate() {
            verifier(&p, i).verify(&p.model, f, &CTX).unwrap();
        }
    }
}

#[test]
fn merged_segments_prove_verify_and_chain() {
    // transformer_block with cuts placed by cost: a few multi-layer segments, each proof
    // 128 bytes, verifying, chaining to the same output as one layer per segment.
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let opts = ImportOptions {
        max_constraints: 24_000,
        merge: true,
        ..Default::default()
    };
    let p = prove_all_with(tmp.path(), "transformer_block", &opts, &mut rng);
    assert!(p.model.segments.len() > 1 && p.model.segments.len() < 13);
    assert!(p.model.segments.iter().any(|s| s.layers.len() > 1));
    for (i, f) in p.files.iter().enumerate() {
        verifier(&p, i).verify(&p.model, f, &CTX).unwrap();
    }
    let one = prove_all(tmp.path(), "transformer_block", &mut rng);
    assert_eq!(
        p.files.last().unwrap().output,
        one.files.last().unwrap().output
    );
    // A merged segment's proof does not verify as another's.
    assert!(verifier(&p, 0).verify(&p.model, &p.files[1], &CTX).is_err());
}

#[test]
fn proofs_are_bound_to_challenge_nonce_miner_output_and_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let p = prove_all(tmp.path(), "digits_mlp", &mut rng);
    let v0 = verifier(&p, 0);
    let f = &p.files[0];

    let other = |c: ProofContext| rejected(v0.verify(&p.model, f, &c));
    assert!(other(ProofContext {
        challenge: [9; 32],
        ..CTX
    })
    .contains("challenge"));
    assert!(other(ProofContext {
        miner: [9; 32],
        ..CTX
    })
    .contains("miner"));
    assert!(other(ProofContext {
        nonce: [9; 32],
        ..CTX
    })
    .contains("nonce"));

    // Rewriting the file's claims does not help: the binding is recomputed from what the
    // verifier expects, so only the pairing check is left to fail.
    for ctx in [
        ProofContext {
            challenge: [9; 32],
            ..CTX
        },
        ProofContext {
            miner: [9; 32],
            ..CTX
        },
        ProofContext {
            nonce: [9; 32],
            ..CTX
        },
    ] {
        let mut forged = f.clone();
        forged.challenge = ctx.challenge.to_vec();
        forged.nonce = ctx.nonce.to_vec();
        forged.miner = ctx.miner.to_vec();
        let reason = rejected(v0.verify(&p.model, &forged, &ctx));
        assert!(reason.contains("public inputs"), "{reason}");
        let bind = provnet_kernels::binding(&p.model.id(), 0, &ctx);
        let seg = &p.model.segments[0];
        let inputs =
            provnet_kernels::circuit::public_inputs(seg, &forged.input, &forged.output, bind);
        let proof = ark_serialize::CanonicalDeserialize::deserialize_compressed(f.proof.as_slice())
            .unwrap();
        assert!(rejected(v0.verify_raw(&proof, &inputs)).contains("pairing"));
    }

    // A tampered output, alone or with consistent public inputs.
    let mut forged = f.clone();
    forged.output[3] += 1;
    assert!(rejected(v0.verify(&p.model, &forged, &CTX)).contains("public inputs"));
    let seg = &p.model.segments[0];
    let bind = provnet_kernels::binding(&p.model.id(), 0, &CTX);
    let inputs = provnet_kernels::circuit::public_inputs(seg, &forged.input, &forged.output, bind);
    forged.public_inputs = inputs
        .iter()
        .map(|x| serde_bytes::ByteBuf::from(provnet_kernels::proof::fr_bytes(x)))
        .collect();
    assert!(rejected(v0.verify(&p.model, &forged, &CTX)).contains("pairing"));

    // Every single tampered proof byte is caught (malformed point or failed pairing).
    for i in 0..f.proof.len() {
        let mut forged = f.clone();
        forged.proof[i] ^= 0x01;
        rejected(v0.verify(&p.model, &forged, &CTX));
    }

    // Segment 0's proof checked as segment 1, however the file is relabelled.
    let v1 = verifier(&p, 1);
    assert!(rejected(v1.verify(&p.model, f, &CTX)).contains("segment"));
    let mut forged = f.clone();
    forged.segment = 1;
    assert!(rejected(v1.verify(&p.model, &forged, &CTX)).contains("verifying key"));
    forged.vk_id = v1.vk_id.to_vec();
    rejected(v1.verify(&p.model, &forged, &CTX));
    let proof =
        ark_serialize::CanonicalDeserialize::deserialize_compressed(f.proof.as_slice()).unwrap();
    let seg1 = &p.model.segments[1];
    let bind1 = provnet_kernels::binding(&p.model.id(), 1, &CTX);
    let x1 = &p.files[1].input;
    let inputs = provnet_kernels::circuit::public_inputs(seg1, x1, &p.files[1].output, bind1);
    rejected(v1.verify_raw(&proof, &inputs));
}

#[test]
fn missing_and_corrupt_keys_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (dir, model, _) = common::import_fixture(tmp.path(), "dense_16");
    assert!(matches!(
        ModelKeys::open(&dir, &model),
        Err(KernelError::MissingKeys { .. })
    ));
    keys::setup(&dir, &model, &mut rng).unwrap();
    let keys = ModelKeys::open(&dir, &model).unwrap();
    // The first load checks both files' hashes and records them as checked.
    keys.proving_key(0).unwrap();
    let checked: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys/checked.json")).unwrap()).unwrap();
    for f in ["segment-0.pk", "segment-0.htable"] {
        assert!(checked["files"][f]["blake3"].is_string(), "{checked}");
    }
    // A file changed since is hashed again, and refused. (Its modification time is moved
    // on explicitly: a rewrite inside the file system's timestamp granularity keeps it.)
    let pk_path = dir.join("keys/segment-0.pk");
    let good = std::fs::read(&pk_path).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let rewrite = |b: &[u8], secs: u64| {
        std::fs::write(&pk_path, b).unwrap();
        let f = std::fs::File::options().write(true).open(&pk_path).unwrap();
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
        f.set_modified(t).unwrap();
    };
    rewrite(&bytes, 10);
    let Err(err) = keys.proving_key(0) else {
        panic!("a corrupt proving key loaded");
    };
    let err = err.to_string();
    assert!(err.contains("pinned hash"), "{err}");
    // The right bytes back: it loads again.
    rewrite(&good, 20);
    keys.proving_key(0).unwrap();
    // A truncated file whose hash still matched would be caught by its own framing.
    let Err(err) = provnet_kernels::keys::pk_from_file(&dir.join("keys/segment-0.vk")) else {
        panic!("a verifying key read as a proving key");
    };
    assert!(err.contains("not a proving key file"), "{err}");
    std::fs::remove_file(dir.join("keys/segment-0.vk")).unwrap();
    assert!(matches!(
        keys.verifying_key(0),
        Err(KernelError::MissingKeys { .. })
    ));
}

#[test]
fn a_batch_of_proofs_for_one_segment_each_verifies_under_its_own_context() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, _) = common::import_fixture(tmp.path(), "digits_mlp");
    keys::setup(&dir, &model, &mut rng).unwrap();
    let keys = ModelKeys::open(&dir, &model).unwrap();
    let x = model.quantize(&common::read_floats("digits_mlp_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[1];
    let pk = keys.proving_key(1).unwrap();
    let (vk, vk_id) = keys.verifying_key(1).unwrap();
    let verifier = SegmentVerifier::new(1, vk, vk_id);
    let ctxs: Vec<ProofContext> = (0..3u8)
        .map(|k| ProofContext {
            challenge: [k; 32],
            nonce: [k + 10; 32],
            miner: [3; 32],
        })
        .collect();
    // Two different inputs in one batch: the trace's, and the trace's with one value moved.
    let mut other = tr.tensors[1].clone();
    other[0] = if seg.input().contains(other[0] as i128 + 1) {
        other[0] + 1
    } else {
        other[0] - 1
    };
    let inputs = [&tr.tensors[1], &other, &tr.tensors[1]];
    let jobs: Vec<(&[i64], &ProofContext)> = inputs
        .iter()
        .zip(&ctxs)
        .map(|(i, c)| (i.as_slice(), c))
        .collect();
    let proofs =
        provnet_kernels::prove_segment_many(&CpuBackend, &model, seg, &pk, &jobs, &mut rng)
            .unwrap();
    assert_eq!(proofs.len(), 3);
    for (k, (p, (input, ctx))) in proofs.iter().zip(&jobs).enumerate() {
        assert_eq!(p.output, seg.eval(input), "proof {k}");
        let file = p.to_file(&model, seg, &vk_id, input, ctx);
        verifier.verify(&model, &file, ctx).unwrap();
        // Bound to its own context: not another's.
        let wrong = &ctxs[(k + 1) % 3];
        assert!(verifier.verify(&model, &file, wrong).is_err(), "proof {k}");
    }
    // A bad input anywhere in the batch is refused before any proving.
    let short: Vec<i64> = tr.tensors[1][1..].to_vec();
    let bad = [
        (tr.tensors[1].as_slice(), &ctxs[0]),
        (short.as_slice(), &ctxs[1]),
    ];
    assert!(
        provnet_kernels::prove_segment_many(&CpuBackend, &model, seg, &pk, &bad, &mut rng).is_err()
    );
}

#[test]
fn the_constraint_budget_is_enforced_and_the_summary_sizes_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let onnx = common::fixture("residual_mlp.onnx");
    // Segments of 2,563, 4,031, 2,592 and 808 constraints. At 4,000 the second is cut into
    // parts (each checks the layer's 72 inputs again); at 2,000 no part holding the input
    // fits, so it is refused, named, and nothing is written.
    let refused = tmp.path().join("refused");
    let tight = ImportOptions {
        max_constraints: 2000,
        ..Default::default()
    };
    match import(&onnx, &refused, &tight) {
        Err(KernelError::Unsupported { node, reason, .. }) => {
            assert_eq!(node, "/blocks.1/act/Relu");
            assert!(
                reason.contains("layer 1") && reason.contains("4031 constraints"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!refused.exists());

    let opts = ImportOptions {
        max_constraints: 4031,
        ..Default::default()
    };
    let dir = tmp.path().join("fits");
    let summary = import(&onnx, &dir, &opts).unwrap();
    let model = Model::load(&dir).unwrap();
    let index = keys::setup(&dir, &model, &mut rng).unwrap();
    // The key sizes the summary gives before setup are the files setup writes (less their
    // headers).
    for seg in &model.segments {
        let entry = &index.segments[seg.index];
        let said = summary.segments[seg.index].keys;
        let size = |f: &str| std::fs::metadata(dir.join("keys").join(f)).unwrap().len() as usize;
        let (pk, h) = (size(&entry.pk_file), size(&entry.h_table_file));
        assert!(
            (said.pk_bytes..said.pk_bytes + 4096).contains(&pk),
            "segment {}: pk {pk} vs {}",
            seg.index,
            said.pk_bytes
        );
        assert!(
            (said.h_table_bytes..said.h_table_bytes + 256).contains(&h),
            "segment {}: h table {h} vs {}",
            seg.index,
            said.h_table_bytes
        );
    }
}

#[test]
fn a_layer_over_the_budget_is_cut_into_parts_that_compute_it_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    // transformer_block's layers (one segment each) are 1,927 to 8,164 constraints; at
    // 5,000 the five over it are cut into parts, attention's products and the LayerNorm
    // bounds among the carried input included; gelu_ffn's erf layer (13,821) at 8,000;
    // residual_mlp's ReLU layer (4,031) at 4,000.
    for (name, budget) in [
        ("transformer_block", 5000),
        ("gelu_ffn", 8000),
        ("residual_mlp", 4000),
    ] {
        let (_, whole, whole_summary) = common::import_fixture_with(
            tmp.path(),
            name,
            &format!("{name}-whole"),
            &Default::default(),
        );
        let opts = ImportOptions {
            max_constraints: budget,
            ..Default::default()
        };
        let (_, cut, summary) =
            common::import_fixture_with(tmp.path(), name, &format!("{name}-cut"), &opts);
        assert!(
            summary.segments.len() > whole_summary.segments.len(),
            "{name}"
        );
        for seg in &summary.segments {
            assert!(seg.constraints <= budget, "{name} segment {}", seg.index);
        }
        // The same values at the model's output: the parts compute the layer's rows exactly.
        for k in 0..4 {
            let x = if k == 0 {
                whole.quantize(&common::read_floats(
                    &format!("{name}_input.json"),
                    "input_data",
                ))
            } else {
                trace::random_state(&whole, 0, &mut rng).unwrap()
            };
            let (a, b) = (
                trace::run(&whole, &x).unwrap(),
                trace::run(&cut, &x).unwrap(),
            );
            assert_eq!(a.output(), b.output(), "{name} input {k}");
            assert_eq!(
                a.tensors.len() + cut.segments.len() - whole.segments.len(),
                b.tensors.len()
            );
        }
    }
    // Each part is an ordinary segment: it proves, verifies and chains.
    let p = prove_all_with(
        tmp.path(),
        "gelu_ffn",
        &ImportOptions {
            max_constraints: 8000,
            ..Default::default()
        },
        &mut rng,
    );
    assert_eq!(p.model.segments.len(), 6);
    for (k, file) in p.files.iter().enumerate() {
        verifier(&p, k).verify(&p.model, file, &CTX).unwrap();
        if let Some(next) = p.files.get(k + 1) {
            assert_eq!(file.output, next.input, "segment {k}");
        }
    }
    // Too small for even one row beside the layer's input: refused, naming the layer.
    let refused = tmp.path().join("refused");
    let tight = ImportOptions {
        max_constraints: 3000,
        ..Default::default()
    };
    match import(&common::fixture("transformer_block.onnx"), &refused, &tight) {
        Err(KernelError::Unsupported { node, reason, .. }) => {
            assert_eq!(node, "/attn/MatMul");
            assert!(
                reason.contains("layer 2") && reason.contains("cut into parts"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!refused.exists());
}
