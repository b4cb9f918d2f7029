//! Native execution and the trace commitment.

mod common;

use provnet_kernels::trace;

#[test]
fn trace_commits_to_every_boundary_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "small_cnn");
    let x = model.quantize(&common::read_floats("small_cnn_input.json", "input_data"));
    let a = trace::run(&model, &x).unwrap();
    assert_eq!(a.tensors.len(), model.segments.len() + 1);
    assert_eq!(a.leaves.len(), a.tensors.len());
    assert_eq!(
        a,
        trace::run(&model, &x).unwrap(),
        "execution is deterministic"
    );
    let mut y = x.clone();
    y[10] += 1;
    let b = trace::run(&model, &y).unwrap();
    assert_ne!(a.root, b.root);
    assert_ne!(a.leaves[0], b.leaves[0]);
    // A leaf commits to its position as well as its contents.
    assert_ne!(trace::leaf(0, &a.tensors[1]), trace::leaf(1, &a.tensors[1]));
    assert_eq!(trace::merkle_root(&a.leaves), a.root);
}

#[test]
fn out_of_range_or_short_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "dense_16");
    let err = trace::run(&model, &[0; 15]).unwrap_err().to_string();
    assert!(err.contains("takes 16 values"), "{err}");
    let mut x = vec![0i64; 16];
    x[3] = 1 << 40;
    let err = trace::run(&model, &x).unwrap_err().to_string();
    assert!(err.contains("input[3]"), "{err}");
}
