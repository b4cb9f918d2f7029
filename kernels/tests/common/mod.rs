//! Shared helpers for the kernels integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ark_bn254::{Fr, G1Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInteger, PrimeField, UniformRand, Zero};
use ark_std::rand::{rngs::StdRng, Rng};
use provnet_kernels::{import, ImportOptions, Model, ModelSummary};

pub const MODELS: [&str; 19] = [
    "dense_16",
    "dense_64",
    "dense_256",
    "digits_mlp",
    "small_cnn",
    "cnn_bn_pool",
    "data_moves",
    "cnn_maxpool",
    "residual_mlp",
    "gated_mlp",
    "linear_attention",
    "prenorm_ffn",
    "attention",
    "transformer_block",
    "two_head_classifier",
    "smooth_mlp",
    "decomposed_ln",
    "gelu_ffn",
    "gelu20_ffn",
];

/// A fixture file. A test binary carried to another machine (the GPU device tests) finds
/// them under `kernels/fixtures` in the working directory when the build's path is absent.
pub fn fixture(name: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = if built.is_dir() {
        built
    } else {
        PathBuf::from("kernels/fixtures")
    };
    dir.join(name)
}

/// Imports a fixture model into `tmp/name` with default options.
pub fn import_fixture(tmp: &Path, name: &str) -> (PathBuf, Model, ModelSummary) {
    import_fixture_with(tmp, name, name, &ImportOptions::default())
}

/// [`import_fixture`] into `tmp/dir` with `opts`.
#[allow(dead_code)]
pub fn import_fixture_with(
    tmp: &Path,
    name: &str,
    dir: &str,
    opts: &ImportOptions,
) -> (PathBuf, Model, ModelSummary) {
    let dir = tmp.join(dir);
    let summary = import(&fixture(&format!("{name}.onnx")), &dir, opts).expect("fixture imports");
    let model = Model::load(&dir).expect("model loads");
    (dir, model, summary)
}

/// `{"input_data": [[...]]}` or `{"output_data": [[...]]}` flattened.
pub fn read_floats(name: &str, key: &str) -> Vec<f64> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(name)).expect("fixture exists"))
            .expect("fixture is JSON");
    v[key][0]
        .as_array()
        .expect("nested array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Scalars of the kinds our witnesses hold, and the edges of the digit logic.
pub fn edge_scalars(n: usize, rng: &mut StdRng) -> Vec<Fr> {
    let minus = |k: u64| -Fr::from(k);
    let half = Fr::from_bigint({
        let mut h = Fr::MODULUS;
        h.div2();
        h
    })
    .unwrap();
    (0..n)
        .map(|i| match i % 13 {
            0 => Fr::zero(),
            1 => Fr::from(1u64),
            2 => minus(1),
            3 => Fr::from(rng.gen_range(2u64..256)),
            4 => minus(rng.gen_range(2u64..256)),
            5 => Fr::from(rng.gen::<u32>() as u64),
            6 => minus(rng.gen::<u64>()),
            7 => half,
            8 => half + Fr::from(1u64),
            9 => minus(2),
            10 => Fr::from(1u64 << 63) * Fr::from(4u64),
            _ => Fr::rand(rng),
        })
        .collect()
}

pub fn edge_g1_bases(n: usize, rng: &mut StdRng) -> Vec<G1Affine> {
    let distinct: Vec<G1Affine> = (0..n.min(64)).map(|_| G1Affine::rand(rng)).collect();
    (0..n)
        .map(|i| match i % 11 {
            0 => G1Affine::zero(),
            // Repeated points: same-bucket additions of equal and opposite points.
            1 | 2 => distinct[0],
            _ => distinct[i % distinct.len()],
        })
        .collect()
}
