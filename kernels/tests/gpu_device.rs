//! The CUDA backend against arkworks on a real GPU: MSMs (G1 and G2) at many sizes and edge
//! cases, the quotient's NTTs, and whole Groth16 proofs checked by the CPU verifier.
//!
//! Needs an NVIDIA GPU, its driver and NVRTC, so every test is ignored by default. On the
//! device machine: `cargo test -p provnet-kernels --features cuda --release --test
//! gpu_device --no-run`, carry the binary, and run it with `--ignored --test-threads 1`.
#![cfg(feature = "cuda")]

mod common;

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::{UniformRand, Zero};
use ark_std::rand::{rngs::StdRng, SeedableRng};
use provnet_kernels::gpu::CudaBackend;
use provnet_kernels::msm::FixedBaseTable;
use provnet_kernels::{
    keys, prove_segment, trace, CpuBackend, ModelKeys, ProofContext, ProverBackend, SegmentVerifier,
};

const NEEDS_GPU: &str = "needs an NVIDIA GPU";

fn gpu() -> CudaBackend {
    CudaBackend::open(0).unwrap_or_else(|e| panic!("{NEEDS_GPU}: {e}"))
}

/// Distinct random bases, cheaply (a few random points and their sums).
fn bases(n: usize, rng: &mut StdRng) -> Vec<G1Affine> {
    let seeds: Vec<G1Projective> = (0..64).map(|_| G1Projective::rand(rng)).collect();
    let mut acc = G1Projective::rand(rng);
    let proj: Vec<G1Projective> = (0..n)
        .map(|i| {
            acc += seeds[i % 64];
            acc
        })
        .collect();
    G1Projective::normalize_batch(&proj)
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn g1_msm_equals_arkworks_from_1_to_2_pow_18() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(10);
    let mut sizes = vec![1usize, 2, 3, 7, 100, 1000, 4097];
    sizes.extend((10..=18).map(|k| 1usize << k));
    for n in sizes {
        let b = bases(n, &mut rng);
        for (kind, s) in [
            (
                "uniform",
                (0..n).map(|_| Fr::rand(&mut rng)).collect::<Vec<_>>(),
            ),
            ("edges", common::edge_scalars(n, &mut rng)),
        ] {
            let want = G1Projective::msm(&b, &s).unwrap();
            assert_eq!(g.msm_g1(&b, &s).unwrap(), want, "n = {n}, {kind}");
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn g1_msm_edge_cases() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(11);
    for n in [1usize, 40, 5000] {
        // Identity points, repeated points, zero scalars, +-1, r-1, (r+-1)/2, small negatives.
        let b = common::edge_g1_bases(n, &mut rng);
        let s = common::edge_scalars(n, &mut rng);
        assert_eq!(
            g.msm_g1(&b, &s).unwrap(),
            G1Projective::msm(&b, &s).unwrap(),
            "n = {n}"
        );
        let zeros = vec![Fr::zero(); n];
        assert!(g.msm_g1(&b, &zeros).unwrap().is_zero());
        let same = vec![b[1]; n];
        assert_eq!(
            g.msm_g1(&same, &s).unwrap(),
            G1Projective::msm(&same, &s).unwrap()
        );
    }
    assert!(g.msm_g1(&[], &[]).unwrap().is_zero());
    assert!(g.msm_g1(&bases(3, &mut rng), &[Fr::from(1u64)]).is_err());
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn g2_msm_equals_arkworks() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(12);
    for n in [1usize, 5, 300, 1 << 12, 1 << 14] {
        let b: Vec<G2Affine> = {
            let p: Vec<G2Projective> = (0..n).map(|_| G2Projective::rand(&mut rng)).collect();
            G2Projective::normalize_batch(&p)
        };
        let s = common::edge_scalars(n, &mut rng);
        assert_eq!(
            g.msm_g2(&b, &s).unwrap(),
            G2Projective::msm(&b, &s).unwrap(),
            "n = {n}"
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn fixed_base_path_and_resident_bases_agree() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(13);
    let b = bases(3000, &mut rng);
    let table = FixedBaseTable::new(&b, 8);
    for len in [3000usize, 1234] {
        let s: Vec<Fr> = (0..len).map(|_| Fr::rand(&mut rng)).collect();
        let want = G1Projective::msm(&b[..len], &s).unwrap();
        // Twice: the second call uses the bases already on the device.
        assert_eq!(g.msm_g1_fixed(&table, &s).unwrap(), want);
        assert_eq!(g.msm_g1_fixed(&table, &s).unwrap(), want);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn quotient_equals_the_cpu_ffts() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(14);
    for log_n in 1..=18u32 {
        let n = 1usize << log_n;
        let v = |rng: &mut StdRng| -> Vec<Fr> { (0..n).map(|_| Fr::rand(rng)).collect() };
        let (a, b, c) = (v(&mut rng), v(&mut rng), v(&mut rng));
        let want = CpuBackend
            .quotient(a.clone(), b.clone(), c.clone())
            .unwrap();
        assert_eq!(g.quotient(a, b, c).unwrap(), want, "n = 2^{log_n}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn gpu_proofs_verify_with_the_cpu_verifier() {
    let g = gpu();
    let ctx = ProofContext {
        challenge: [4; 32],
        nonce: [5; 32],
        miner: [6; 32],
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(15);
    let tmp = tempfile::tempdir().unwrap();
    for name in ["dense_256", "digits_mlp"] {
        let (dir, model, _) = common::import_fixture(tmp.path(), name);
        keys::setup(&dir, &model, &mut rng).unwrap();
        let keys = ModelKeys::open(&dir, &model).unwrap();
        let x = model.quantize(&common::read_floats(
            &format!("{name}_input.json"),
            "input_data",
        ));
        let tr = trace::run(&model, &x).unwrap();
        for seg in &model.segments {
            let pk = keys.proving_key(seg.index).unwrap();
            let (vk, vk_id) = keys.verifying_key(seg.index).unwrap();
            let input = &tr.tensors[seg.index];
            let p = prove_segment(&g, &model, seg, &pk, input, &ctx, &mut rng).unwrap();
            let file = p.to_file(&model, seg, &vk_id, input, &ctx);
            SegmentVerifier::new(seg.index, vk, vk_id)
                .verify(&model, &file, &ctx)
                .unwrap_or_else(|e| panic!("{name} segment {}: {e}", seg.index));
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run through the device tool"]
fn batched_msms_and_batched_proofs() {
    let g = gpu();
    let mut rng = StdRng::seed_from_u64(16);
    let n = 1 << 14;
    let b = bases(n, &mut rng);
    let sets: Vec<Vec<Fr>> = (0..8).map(|_| common::edge_scalars(n, &mut rng)).collect();
    let refs: Vec<&[Fr]> = sets.iter().map(|s| s.as_slice()).collect();
    let got = g
        .msm_g1_many(provnet_kernels::raw::Points::Slice(&b), &refs)
        .unwrap();
    for (k, s) in sets.iter().enumerate() {
        assert_eq!(got[k], G1Projective::msm(&b, s).unwrap(), "set {k}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut crng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
    let (dir, model, _) = common::import_fixture(tmp.path(), "dense_256");
    keys::setup(&dir, &model, &mut crng).unwrap();
    let keys = ModelKeys::open(&dir, &model).unwrap();
    let x = model.quantize(&common::read_floats("dense_256_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[0];
    let pk = keys.proving_key(0).unwrap();
    let (vk, vk_id) = keys.verifying_key(0).unwrap();
    let verifier = SegmentVerifier::new(0, vk, vk_id);
    let ctxs: Vec<ProofContext> = (0..16u8)
        .map(|k| ProofContext {
            challenge: [k; 32],
            nonce: [1; 32],
            miner: [2; 32],
        })
        .collect();
    let jobs: Vec<(&[i64], &ProofContext)> =
        ctxs.iter().map(|c| (tr.tensors[0].as_slice(), c)).collect();
    let proofs =
        provnet_kernels::prove_segment_many(&g, &model, seg, &pk, &jobs, &mut crng).unwrap();
    for (p, (input, ctx)) in proofs.iter().zip(&jobs) {
        verifier
            .verify(&model, &p.to_file(&model, seg, &vk_id, input, ctx), ctx)
            .unwrap();
    }
}
