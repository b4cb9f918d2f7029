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

#[test]
fn merkle_proofs_verify_every_leaf_of_every_tree_shape_and_nothing_else() {
    for n in 1..=33usize {
        let leaves: Vec<[u8; 32]> = (0..n).map(|i| trace::leaf(i, &[i as i64])).collect();
        let root = trace::merkle_root(&leaves);
        assert_eq!(trace::MerkleTree::new(&leaves).root(), root);
        for (i, leaf) in leaves.iter().enumerate() {
            let p = trace::MerkleProof::new(&leaves, i).expect("in range");
            assert!(p.verify(&root, n, i, leaf), "n {n} leaf {i}");
            // Another position, another leaf, another size, a flipped sibling: refused.
            if n > 1 {
                assert!(!p.verify(&root, n, (i + 1) % n, leaf));
                assert!(!p.verify(&root, n, i, &leaves[(i + 1) % n]));
            }
            if let Some(first) = p.siblings.first() {
                let mut bad = p.clone();
                bad.siblings[0] = {
                    let mut s = *first;
                    s[0] ^= 1;
                    s
                };
                assert!(!bad.verify(&root, n, i, leaf));
                let mut long = p.clone();
                long.siblings.push(*first);
                assert!(!long.verify(&root, n, i, leaf));
            }
        }
        assert!(trace::MerkleProof::new(&leaves, n).is_none());
    }
}

#[test]
fn a_state_hash_covers_every_live_tensor_and_its_order() {
    let (a, b) = ([1i64, 2, 3], [4i64, 5]);
    let both = trace::state_hash(3, &[&a, &b]);
    assert_eq!(trace::state_hash(3, &[&a]), trace::leaf(3, &a));
    assert_ne!(both, trace::state_hash(3, &[&b, &a]));
    assert_ne!(both, trace::state_hash(3, &[&a]));
    assert_ne!(both, trace::state_hash(4, &[&a, &b]));
}
