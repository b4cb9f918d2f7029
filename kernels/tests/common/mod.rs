//! Shared helpers for the kernels integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use provnet_kernels::{import, ImportOptions, Model, ModelSummary};

pub const MODELS: [&str; 5] = [
    "dense_16",
    "dense_64",
    "dense_256",
    "digits_mlp",
    "small_cnn",
];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Imports a fixture model into `tmp/name` with default options.
pub fn import_fixture(tmp: &Path, name: &str) -> (PathBuf, Model, ModelSummary) {
    let dir = tmp.join(name);
    let summary = import(
        &fixture(&format!("{name}.onnx")),
        &dir,
        &ImportOptions::default(),
    )
    .expect("fixture imports");
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
