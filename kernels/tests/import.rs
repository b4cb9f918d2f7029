//! ONNX import: supported graphs lower correctly; bad files and unsupported ops are clear
//! errors that leave nothing behind.

mod common;

use prost::Message;
use provnet_kernels::onnx_proto::*;
use provnet_kernels::{import, onnx, ImportOptions, KernelError, Model};

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: DT_FLOAT,
        float_data: data.to_vec(),
        name: name.into(),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: DT_FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            dim_value: Some(*d),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

/// x[1,2] -> MatMul(W[2,2]) -> Add(B) -> <op> -> y
fn tiny(op: &str) -> Vec<u8> {
    chain(vec![node(op, "act", &["h"], "y")], vec![])
}

/// x[1,2] -> MatMul(W[2,2]) -> Add(B) -> h, then `more` (ending in y), with `inits` too.
fn chain(more: Vec<NodeProto>, inits: Vec<TensorProto>) -> Vec<u8> {
    let mut nodes = vec![
        node("MatMul", "mm", &["x", "W"], "m"),
        node("Add", "bias", &["m", "B"], "h"),
    ];
    nodes.extend(more);
    let mut initializer = vec![
        tensor("W", &[2, 2], &[1.0, -2.0, 0.5, 0.25]),
        tensor("B", &[2], &[0.1, -0.1]),
    ];
    initializer.extend(inits);
    ModelProto {
        ir_version: 8,
        graph: Some(GraphProto {
            node: nodes,
            name: "tiny".into(),
            initializer,
            input: vec![value("x", &[1, 2])],
            output: vec![value("y", &[1, 2])],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
    }
    .encode_to_vec()
}

#[test]
fn affine_ops_by_constants_fold_into_a_layer_or_become_one() {
    // Before the ReLU, Mul and Sub fold into the layer; after it, Div and Add have no layer
    // to fold into, so they become a layer of their own.
    let more = vec![
        node("Mul", "scale", &["h", "two"], "a"),
        node("Sub", "shift", &["a", "one"], "b"),
        node("Relu", "act", &["b"], "r"),
        node("Div", "halve", &["r", "two"], "c"),
        node("Add", "offset", &["one", "c"], "y"),
    ];
    let consts = vec![
        tensor("two", &[1], &[2.0]),
        tensor("one", &[1, 2], &[1.0, 1.0]),
    ];
    let fm = onnx::parse(&chain(more, consts), "folds").unwrap();
    assert_eq!(fm.layers.len(), 2);
    assert_eq!(fm.layers[0].ops, ["MatMul", "Add", "Mul", "Sub", "Relu"]);
    assert_eq!(fm.layers[1].ops, ["Div", "Add"]);
    // h = x W + B = [2.1, -1.6] at x = [1, 2]; relu(2h - 1) = [3.2, 0]; / 2 + 1 = [2.6, 1].
    let y = fm.eval(&[1.0, 2.0]);
    assert!(
        (y[0] - 2.6).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6,
        "{y:?}"
    );

    // What is not affine, or not one activation, is refused with the node's name.
    for (op, inputs, says) in [
        ("Div", ["two", "h"], "not affine"),
        ("Div", ["h", "h"], "activation divided by an activation"),
        ("Div", ["h", "zero"], "constant 0"),
    ] {
        let bad = chain(
            vec![node(op, "bad", &inputs, "y")],
            vec![
                tensor("two", &[1], &[2.0]),
                tensor("zero", &[2], &[1.0, 0.0]),
            ],
        );
        match onnx::parse(&bad, "bad").unwrap_err() {
            KernelError::Unsupported { node, reason, .. } => {
                assert_eq!(node, "bad");
                assert!(reason.contains(says), "{op}: {reason}");
            }
            other => panic!("{op}: {other:?}"),
        }
    }
}

#[test]
fn a_cnn_as_pytorch_exports_it_folds_normalisation_batchnorm_and_pooling() {
    let fm = onnx::load(&common::fixture("cnn_bn_pool.onnx")).unwrap();
    let ops: Vec<Vec<&str>> = fm
        .layers
        .iter()
        .map(|l| l.ops.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        ops,
        [
            &["Sub", "Div", "Conv", "BatchNormalization", "Relu"][..],
            &["AveragePool", "Conv", "BatchNormalization", "Relu"],
            &["GlobalAveragePool", "Flatten", "Gemm"],
        ]
    );
    // The pooled activations never appear: the second layer reads the first's 4x8x8.
    assert_eq!(fm.layers[1].in_shape, [4, 8, 8]);
    assert_eq!(fm.layers[2].in_shape, [8, 4, 4]);
}

#[test]
fn max_pooling_becomes_relu_layers_and_its_maxima_fold_into_the_next_layer() {
    let fm = onnx::load(&common::fixture("cnn_maxpool.onnx")).unwrap();
    let ops: Vec<String> = fm.layers.iter().map(|l| l.ops.join("+")).collect();
    assert_eq!(
        ops,
        [
            "Conv+Relu",
            "MaxPool", // 2x2 of non-negative values: two rounds
            "MaxPool",
            "MaxPool+Conv+MaxPool", // the maxima fold into conv2; the 3x3 pool's first round
            "MaxPool",
            "MaxPool",
            "MaxPool",
            "MaxPool+Flatten+Gemm",
        ]
    );
    assert!(fm.layers[1..7].iter().all(|l| l.relu_rows > 0));
    // Exact in floats: max(u, v) = v + relu(u - v) on the fixture's input.
    let x = common::read_floats("cnn_maxpool_input.json", "input_data");
    let want = common::read_floats("cnn_maxpool_expected.json", "output_data");
    for (a, b) in fm.eval(&x).iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn data_movement_before_a_layer_folds_into_its_weights() {
    // Transpose, a stepped Slice, two Gathers, Unsqueeze, Squeeze and Flatten: the first
    // Gemm reads the model's input directly (the float reference matches onnxruntime in
    // the fidelity tests).
    let fm = onnx::load(&common::fixture("data_moves.onnx")).unwrap();
    assert_eq!(fm.layers.len(), 2);
    assert_eq!(
        fm.layers[0].ops,
        [
            "Transpose",
            "Slice",
            "Gather",
            "Unsqueeze",
            "Squeeze",
            "Gather",
            "Flatten",
            "Gemm",
            "Relu"
        ]
    );
    assert_eq!(fm.layers[0].in_shape, [2, 3, 4]);
    // Each of its 5 outputs reads 4 of the 24 inputs: the ones the moves kept.
    for row in &fm.layers[0].rows {
        assert!(row.len() <= 4, "{row:?}");
    }
}

#[test]
fn a_tensor_read_after_a_cut_is_carried_across_it_in_the_state() {
    // y = relu(h) + x - relu(h) / 2: the input x is still read after the ReLU, so the
    // ReLU's layer outputs [relu(h), x] and the residual sum is the next layer.
    let more = vec![
        node("Relu", "act", &["h"], "r"),
        node("Add", "residual", &["r", "x"], "s"),
        node("Div", "halve", &["r", "two"], "t"),
        node("Sub", "minus", &["s", "t"], "y"),
    ];
    let fm = onnx::parse(&chain(more, vec![tensor("two", &[1], &[2.0])]), "dag").unwrap();
    assert_eq!(fm.layers.len(), 2);
    let names =
        |l: &onnx::FloatLayer| -> Vec<String> { l.state.iter().map(|(n, _)| n.clone()).collect() };
    assert_eq!(names(&fm.layers[0]), ["r", "x"]);
    assert_eq!(fm.layers[0].relu_rows, 2);
    assert_eq!(fm.layers[0].out_shape, [4]);
    assert_eq!(fm.layers[1].in_shape, [4]);
    assert_eq!(fm.layers[1].ops, ["Add", "Div", "Sub"]);
    assert_eq!(names(&fm.layers[1]), ["y"]);
    assert_eq!(fm.layers[1].relu_rows, 0);
    // h = [2.1, -1.6] at x = [1, 2]; relu(h) = [2.1, 0]; y = relu(h) / 2 + x = [2.05, 2].
    let y = fm.eval(&[1.0, 2.0]);
    assert!(
        (y[0] - 2.05).abs() < 1e-6 && (y[1] - 2.0).abs() < 1e-6,
        "{y:?}"
    );

    // A node reading what no earlier node computed is refused with its name.
    let bad = chain(
        vec![
            node("Add", "early", &["h", "later"], "y"),
            node("Relu", "late", &["h"], "later"),
        ],
        vec![],
    );
    match onnx::parse(&bad, "bad").unwrap_err() {
        KernelError::Unsupported { node, reason, .. } => {
            assert_eq!(node, "early");
            assert!(reason.contains("not computed before"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn residual_blocks_carry_their_stream_across_every_relu_cut() {
    let fm = onnx::load(&common::fixture("residual_mlp.onnx")).unwrap();
    let states: Vec<Vec<(&str, usize)>> = fm
        .layers
        .iter()
        .map(|l| {
            l.state
                .iter()
                .map(|(n, d)| (n.as_str(), d.iter().product()))
                .collect()
        })
        .collect();
    assert_eq!(
        states,
        [
            vec![("blocks.0/r", 48), ("h0", 24)],
            vec![("blocks.1/r", 48), ("h1", 24)],
            vec![("hr", 24)],
            vec![("y", 5)],
        ]
    );
    let relu: Vec<usize> = fm.layers.iter().map(|l| l.relu_rows).collect();
    assert_eq!(relu, [48, 48, 24, 0]);
    // The Constant node is read as a constant; the residual Add folds into the next layer.
    assert_eq!(fm.layers[1].ops, ["Gemm", "Mul", "Add", "Gemm", "Relu"]);
    assert_eq!(fm.layers[1].in_shape, [72]);
}

#[test]
fn attention_products_read_stored_values_so_their_operands_end_a_layer() {
    // q and k^T are affine maps of x: the first product needs them stored, so a layer
    // (without ReLU) ends before it, carrying x (copied) and v too. Its result, divided
    // by sqrt(d), is a product's operand again: stored at the next cut.
    let fm = onnx::load(&common::fixture("linear_attention.onnx")).unwrap();
    let states: Vec<Vec<&str>> = fm
        .layers
        .iter()
        .map(|l| l.state.iter().map(|(n, _)| n.as_str()).collect())
        .collect();
    assert_eq!(
        states,
        [
            vec!["x", "v", "/MatMul/lhs", "/MatMul/rhs"],
            vec!["x", "/MatMul_1/lhs", "/MatMul_1/rhs"],
            vec!["y"],
        ]
    );
    assert!(fm.layers.iter().all(|l| l.relu_rows == 0));
    let products: Vec<usize> = fm
        .layers
        .iter()
        .map(|l| l.products.iter().map(Vec::len).sum())
        .collect();
    // Q K^T: 16 scores of 8 products; P V then W_o: 32 outputs, each 8 x 4 products.
    assert_eq!(products, [0, 128, 32 * 32]);
    // A product is recorded where its operands are stored and where it is computed.
    assert_eq!(fm.layers[1].ops, ["MatMul", "Div", "MatMul"]);
    // A product of an activation and what it cannot read is refused, naming the node.
    let bad = chain(vec![node("Div", "ratio", &["h", "h"], "y")], vec![]);
    match onnx::parse(&bad, "bad").unwrap_err() {
        KernelError::Unsupported { node, reason, .. } => {
            assert_eq!(node, "ratio");
            assert!(reason.contains("divisor is a Sqrt"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reductions_over_constant_axes_are_affine() {
    // h = [2.1, -1.6] at x = [1, 2]. Unsqueeze to [1, 1, 2], then ReduceSum over the last
    // axis (keepdims) and ReduceMean over both (axes as an input, as from opset 18).
    let mut sum = node("ReduceSum", "sum", &["u"], "s");
    sum.attribute.push(AttributeProto {
        name: "axes".into(),
        ints: vec![-1],
        ..Default::default()
    });
    let more = vec![
        node("Unsqueeze", "unsq", &["h", "ax1"], "u"),
        sum,
        node("Add", "join", &["u", "s"], "t"),
        node("ReduceMean", "mean", &["t", "both"], "y"),
    ];
    let ints = |name: &str, v: &[i64]| TensorProto {
        dims: vec![v.len() as i64],
        data_type: DT_INT64,
        int64_data: v.to_vec(),
        name: name.into(),
        ..Default::default()
    };
    let fm = onnx::parse(
        &chain(more, vec![ints("ax1", &[1]), ints("both", &[1, 2])]),
        "r",
    )
    .unwrap();
    assert_eq!(fm.output_shape, [1, 1]);
    // s = 0.5 (broadcast over the last axis), t = [2.6, -1.1], y = 0.75.
    let y = fm.eval(&[1.0, 2.0]);
    assert!((y[0] - 0.75).abs() < 1e-9, "{y:?}");
    let bad = chain(
        vec![node("ReduceSum", "bad", &["h", "batch"], "y")],
        vec![ints("batch", &[0])],
    );
    match onnx::parse(&bad, "bad").unwrap_err() {
        KernelError::Unsupported { node, reason, .. } => {
            assert_eq!(node, "bad");
            assert!(reason.contains("batch"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concat_and_split_move_data_for_free() {
    // t = Concat(h, c, relu(h)) = [2.1, -1.6, 0.5, -0.5, 2.1, 0] at x = [1, 2]; Split into
    // a (4) and b (2); y = b + sum(a) = [2.6, 0.5].
    let attr = |name: &str, v: &[i64]| AttributeProto {
        name: name.into(),
        i: v[0],
        ints: v.to_vec(),
        ..Default::default()
    };
    let mut cat = node("Concat", "cat", &["h", "c", "r"], "t");
    cat.attribute.push(attr("axis", &[1]));
    let mut split = node("Split", "split", &["t"], "a");
    split.output.push("b".into());
    split.attribute.push(attr("axis", &[-1]));
    split.attribute.push(attr("split", &[4, 2]));
    let more = vec![
        node("Relu", "act", &["h"], "r"),
        cat,
        split,
        node("ReduceSum", "sum", &["a"], "s"),
        node("Add", "y", &["b", "s"], "y"),
    ];
    let fm = onnx::parse(
        &chain(more, vec![tensor("c", &[1, 2], &[0.5, -0.5])]),
        "cat",
    )
    .unwrap();
    let y = fm.eval(&[1.0, 2.0]);
    assert!(
        (y[0] - 2.6).abs() < 1e-6 && (y[1] - 0.5).abs() < 1e-6,
        "{y:?}"
    );
    // Parts that do not add up are refused.
    let mut bad = node("Split", "bad", &["h"], "y");
    bad.output.push("z".into());
    bad.attribute.push(attr("split", &[1, 2]));
    bad.attribute.push(attr("axis", &[1]));
    match onnx::parse(&chain(vec![bad], vec![]), "bad").unwrap_err() {
        KernelError::Unsupported { node, reason, .. } => {
            assert_eq!(node, "bad");
            assert!(reason.contains("do not split"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hand_built_graph_lowers_and_evaluates_exactly() {
    let fm = onnx::parse(&tiny("Relu"), "tiny").unwrap();
    assert_eq!(fm.layers.len(), 1);
    assert_eq!(fm.layers[0].ops, ["MatMul", "Add", "Relu"]);
    // y = relu(x W + B) with x = [1, 2]: [1*1 + 2*0.5 + 0.1, 1*-2 + 2*0.25 - 0.1] = [2.1, 0]
    let y = fm.eval(&[1.0, 2.0]);
    assert!((y[0] - 2.1).abs() < 1e-6 && y[1] == 0.0, "{y:?}");
}

#[test]
fn unsupported_op_names_the_node_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx_path = tmp.path().join("sin.onnx");
    std::fs::write(&onnx_path, tiny("Sin")).unwrap();
    let out = tmp.path().join("out");
    let err = import(&onnx_path, &out, &ImportOptions::default()).unwrap_err();
    match &err {
        KernelError::Unsupported { node, op, .. } => {
            assert_eq!((node.as_str(), op.as_str()), ("act", "Sin"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("Sin"));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(common::fixture("dense_64.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"this is not an onnx file at all \xff\xfe".to_vec(),
        ),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = tmp.path().join(format!("{name}.onnx"));
        std::fs::write(&path, bytes).unwrap();
        let out = tmp.path().join(format!("{name}-out"));
        let err = import(&path, &out, &ImportOptions::default()).unwrap_err();
        assert!(
            matches!(err, KernelError::OnnxDecode(_) | KernelError::Graph(_)),
            "{name}: {err:?}"
        );
        assert!(!out.exists(), "{name}: output left behind");
    }
    let err = import(
        &tmp.path().join("missing.onnx"),
        &tmp.path().join("x"),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::Io { .. }));
}

#[test]
fn existing_output_and_corrupt_model_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, _) = common::import_fixture(tmp.path(), "dense_16");
    let again = import(
        &common::fixture("dense_16.onnx"),
        &dir,
        &ImportOptions::default(),
    );
    assert!(again.unwrap_err().to_string().contains("already exists"));
    let path = dir.join("model.cbor");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&path, bytes).unwrap();
    let err = Model::load(&dir).unwrap_err().to_string();
    assert!(err.contains("corrupt model file"), "{err}");
    let err = Model::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("provnet model import"), "{err}");
}

#[test]
fn conv_lowers_to_sparse_rows_that_match_onnxruntime() {
    let fm = onnx::load(&common::fixture("small_cnn.onnx")).unwrap();
    assert_eq!(fm.layers.len(), 2);
    assert_eq!(fm.layers[0].ops, ["Conv", "Relu"]);
    assert_eq!(fm.layers[1].ops, ["Flatten", "Gemm"]);
    assert_eq!(fm.layers[0].out_shape, [4, 6, 6]);
    assert!(fm.layers[0].rows.iter().all(|r| r.len() == 9));
}

#[test]
fn bad_scale_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        scale_bits: 0,
        ..Default::default()
    };
    let err = import(
        &common::fixture("dense_16.onnx"),
        &tmp.path().join("o"),
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--scale-bits"));
}
