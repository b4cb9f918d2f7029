//! Batch verification agrees with one-by-one verification: honest batches pass, and every
//! bad proof in a batch is found and named, whatever else is in the batch.

mod common;

use ark_std::rand::SeedableRng;
use provnet_kernels::{
    keys, prove_segment, trace, CpuBackend, KernelError, ModelKeys, ProofContext, ProofFile,
    SegmentVerifier,
};
use rand_chacha::ChaCha20Rng;

fn ctx(k: u8) -> ProofContext {
    ProofContext {
        challenge: [k; 32],
        nonce: [k.wrapping_add(100); 32],
        miner: [k.wrapping_add(200); 32],
    }
}

#[test]
fn batches_pass_when_all_proofs_are_good_and_name_each_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (dir, model, _) = common::import_fixture(tmp.path(), "dense_16");
    keys::setup(&dir, &model, &mut rng).unwrap();
    let keys = ModelKeys::open(&dir, &model).unwrap();
    let seg = &model.segments[0];
    let pk = keys.proving_key(0).unwrap();
    let (vk, vk_id) = keys.verifying_key(0).unwrap();
    let verifier = SegmentVerifier::new(0, vk, vk_id);
    let x = model.quantize(&common::read_floats("dense_16_input.json", "input_data"));
    let input = &trace::run(&model, &x).unwrap().tensors[0];

    let n = 9u8;
    let files: Vec<ProofFile> = (0..n)
        .map(|k| {
            let p = prove_segment(&CpuBackend, &model, seg, &pk, input, &ctx(k), &mut rng).unwrap();
            p.to_file(&model, seg, &vk_id, input, &ctx(k))
        })
        .collect();

    let honest: Vec<(&ProofFile, ProofContext)> = files
        .iter()
        .enumerate()
        .map(|(k, f)| (f, ctx(k as u8)))
        .collect();
    let verdicts = verifier.verify_files(&model, &honest, &mut rng);
    assert!(verdicts.iter().all(|v| v.is_ok()), "{verdicts:?}");
    let pairs: Vec<_> = honest
        .iter()
        .map(|(f, c)| verifier.check_claims(&model, f, c).unwrap())
        .collect();
    verifier.verify_batch(&pairs, &mut rng).unwrap();
    verifier.verify_batch(&[], &mut rng).unwrap();

    // File 2 carries file 3's proof under its own claims: only the pairing can tell.
    // File 5 carries file 6's proof too. File 7 is checked against another miner.
    let mut swapped = files.clone();
    swapped[2].proof = files[3].proof.clone();
    swapped[5].proof = files[6].proof.clone();
    let mut items: Vec<(&ProofFile, ProofContext)> = swapped
        .iter()
        .enumerate()
        .map(|(k, f)| (f, ctx(k as u8)))
        .collect();
    items[7].1.miner = [0; 32];
    let verdicts = verifier.verify_files(&model, &items, &mut rng);
    for (k, v) in verdicts.iter().enumerate() {
        match (k, v) {
            (2 | 5, Err(KernelError::Rejected(why))) => assert!(why.contains("pairing"), "{why}"),
            (7, Err(KernelError::Rejected(why))) => assert!(why.contains("miner"), "{why}"),
            (2 | 5 | 7, ok) => panic!("file {k} should be rejected, got {ok:?}"),
            (_, v) => assert!(v.is_ok(), "file {k}: {v:?}"),
        }
    }

    // The batch check alone refuses a batch with one bad pair among good ones.
    let mut bad_pairs = pairs.clone();
    bad_pairs[4].0 = pairs[1].0.clone();
    assert!(verifier.verify_batch(&bad_pairs, &mut rng).is_err());
    // And a batch whose bad pair has the wrong number of inputs is an error, not a panic.
    bad_pairs[4].1.pop();
    assert!(verifier.verify_batch(&bad_pairs, &mut rng).is_err());
}
