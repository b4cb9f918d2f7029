//! Circuit structure: pinned constraint counts, one code path for setup and proving, and
//! readable reports of the first failing constraint.

mod common;

use ark_bn254::Fr;
use provnet_kernels::circuit::{self, Assignment, CircuitShape};
use provnet_kernels::gadgets::Gadget;
use provnet_kernels::import::estimated_prove_ms;
use provnet_kernels::r1cs::Mode;
use provnet_kernels::{trace, ImportOptions, KernelError, Segment};

/// Constraints per segment at the default scale (2^13). A change here changes proving cost:
/// update it only on purpose.
const PINNED: [(&str, &[usize]); 19] = [
    ("dense_16", &[800]),
    ("dense_64", &[3327]),
    ("dense_256", &[13825]),
    ("digits_mlp", &[2232, 1063]),
    // Its Gemm's weights are all under 1/2: one more bit of weight scale (10 constraints).
    ("small_cnn", &[5805, 2954]),
    // Normalisation, BatchNorm and pooling folded: nothing but the convolutions and Gemm.
    ("cnn_bn_pool", &[10003, 10475, 3497]),
    // Transpose, Slice, Gather, (Un)squeeze and Flatten before its first Gemm: all free.
    ("data_moves", &[571, 190]),
    // Each MaxPool round is a layer (max(u, v) = v + relu(u - v): ReLU rows for the
    // differences, the v carried without one): 2x2 takes two, 3x3 four; the maxima fold
    // into the next layer.
    (
        "cnn_maxpool",
        &[10085, 8853, 8908, 6264, 4299, 2161, 1376, 803],
    ),
    // Two residual blocks: the 24-wide stream is carried (requantized) across each block's
    // ReLU cut, and the Adds fold into the next layer.
    ("residual_mlp", &[2563, 4031, 2592, 808]),
    // relu(gate) and up carried to the cut, then 16 products (one per element, shared by
    // the five outputs).
    ("gated_mlp", &[1247, 902]),
    // q, k^T and v stored (x copied), then 128 products of q k^T, then 128 of p v.
    ("linear_attention", &[3599, 3290, 3682]),
    // Each LayerNorm: the centred values stored (a cut), then one reciprocal square root
    // per token (a cut); the norm's scale and shift are products folded into what follows.
    // The rows after a LayerNorm are as wide as its bound (`Norm`) allows, not its box.
    ("prenorm_ffn", &[1542, 1763, 4116, 2532, 1256, 1948]),
    // q, k^T and v stored; the scores' two max rounds (4 per row); exp; the row sums'
    // reciprocals (exp carried free); then softmax times v and W_o.
    ("attention", &[3611, 4092, 2327, 5780, 1784, 2048, 3205]),
    // LN1 (two cuts), q k^T v stored, softmax (max rounds over 5: three, exp,
    // reciprocal), P V stored, W_o + residual + LN2 (two cuts), FFN.
    (
        "transformer_block",
        &[
            1927, 2204, 7233, 5204, 2848, 2479, 8164, 2224, 2739, 6124, 2785, 5768, 3765,
        ],
    ),
    // Heads split by Reshape + Transpose: the same cuts as one head, over [2, 5, 5] scores;
    // the classifier reads the first token through a last LayerNorm.
    (
        "two_head_classifier",
        &[
            1927, 2204, 7083, 7358, 4297, 3556, 14791, 3081, 4111, 2631, 355, 360,
        ],
    ),
    // GELU (tanh form): x^3 by two products, then tanh as sigmoid's softmax pair (a max
    // round, exp, reciprocal); SiLU: sigmoid, then x times it.
    (
        "smooth_mlp",
        &[
            1230, 1431, 3707, 9829, 2359, 1604, 4404, 9190, 2440, 1685, 956,
        ],
    ),
    // ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div: the same cuts as LayerNormalization
    // (the centred values stored, then the reciprocal square root).
    ("decomposed_ln", &[1540, 1216, 2116]),
    // LayerNorm (two cuts), then the erf gadget on fc1's outputs over sqrt 2 (x carried),
    // then x (1 + erf) / 2 multiplied out in place (one product per element, no cut),
    // folded into fc2 and the residual.
    ("gelu_ffn", &[1542, 1763, 14333, 4296]),
    // Opset 20's one Gelu node lowers to the same cuts.
    ("gelu20_ffn", &[1542, 1763, 14749, 4264]),
];

/// The constraints a segment should have, counted from its parts: the matmul is free, so
/// every constraint is an input bit check, an accumulator bit check, a ReLU, a product, a
/// gadget's own, a packing word (a last layer not all ReLU) or the binding square. Values
/// between merged layers are neither checked again nor packed.
fn expected_constraints(seg: &Segment) -> usize {
    let in_bits: usize = seg.input_ranges().iter().map(|r| r.bits as usize).sum();
    let words = seg.n_out().div_ceil(circuit::per_word(seg.output().bits));
    let last = seg.layers.len() - 1;
    let mut total = in_bits + 1;
    for (l, layer) in seg.layers.iter().enumerate() {
        let q_bits = layer.row_q_bits();
        // Rows that copy an input (a carried tensor) are not decomposed.
        let acc: usize = q_bits
            .iter()
            .enumerate()
            .filter(|(i, _)| layer.copy_of(*i).is_none())
            .map(|(_, m)| layer.row_acc_bits(*m) as usize)
            .sum();
        assert!(acc <= layer.n_out() * layer.acc_bits() as usize);
        // A gadget row's ReLU and the gadget's own constraints.
        let gadgets: usize = (0..layer.gadget_rows)
            .map(|i| {
                let g = layer.gadget_at(i).expect("a gadget row");
                1 + g
                    .cost(layer.act_scale, q_bits[i], layer.gadget_floor as i128)
                    .0
            })
            .sum();
        let packing = if l == last && !layer.all_relu() {
            words
        } else {
            0
        };
        total += acc + layer.relu_rows + layer.product_pairs().len() + gadgets + packing;
    }
    total
}

#[test]
fn constraint_counts_are_pinned_and_match_the_builder() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, pinned) in PINNED {
        let (_, model, summary) = common::import_fixture(tmp.path(), name);
        let counts: Vec<usize> = summary.segments.iter().map(|s| s.constraints).collect();
        assert_eq!(counts, pinned, "{name}");
        for seg in &model.segments {
            let shape = CircuitShape::of(seg);
            let cs = circuit::synthesize(seg, Mode::Setup, Fr::from(0u64), None);
            assert_eq!(
                cs.num_constraints(),
                shape.constraints,
                "{name} seg {}",
                seg.index
            );
            assert_eq!(cs.num_instance(), shape.public_inputs);
            assert_eq!(cs.num_witness(), shape.witnesses);
            assert_eq!(shape.constraints, expected_constraints(seg), "{name}");
        }
    }
}

#[test]
fn merged_layers_compute_the_same_outputs_with_fewer_constraints_and_refuse_a_lie() {
    // `merge` places cuts by cost: consecutive layers share a segment up to the budget.
    // The same layers in the same order, the same values at the cuts that remain (so the
    // same output), every segment within the budget, fewer constraints in all (no range
    // checks or words at merged cuts), the builder's count as predicted, honest witnesses
    // satisfying every constraint and a lie at the output refused.
    let tmp = tempfile::tempdir().unwrap();
    for (name, budget) in [
        ("transformer_block", 1 << 20),
        ("transformer_block", 20_000),
        ("deep_mlp", 4_000),
        ("cnn_maxpool", 1 << 20),
        ("gelu_ffn", 1 << 20),
    ] {
        let (_, one, _) = common::import_fixture_with(
            tmp.path(),
            name,
            &format!("{name}-one-{budget}"),
            &ImportOptions::default(),
        );
        let opts = ImportOptions {
            max_constraints: budget,
            merge: true,
            ..Default::default()
        };
        let dir = format!("{name}-{budget}");
        let (_, merged, summary) = common::import_fixture_with(tmp.path(), name, &dir, &opts);
        assert!(
            merged.segments.len() < one.segments.len(),
            "{name} {budget}"
        );
        let flat: Vec<_> = merged.segments.iter().flat_map(|s| &s.layers).collect();
        let singles: Vec<_> = one.segments.iter().map(|s| s.first()).collect();
        assert_eq!(flat, singles, "{name}: the same layers");
        let unmerged: usize = one
            .segments
            .iter()
            .map(|s| CircuitShape::of(s).constraints)
            .sum();
        assert!(summary.total_constraints < unmerged, "{name} {budget}");
        // The cuts minimise the estimated prove time: no worse than one layer per segment,
        // nor than every layer in one segment (where that fits the budget).
        let est = |segs: &[Segment]| -> f64 {
            segs.iter()
                .map(|s| estimated_prove_ms(&CircuitShape::of(s)))
                .sum()
        };
        let chosen = est(&merged.segments);
        assert!(chosen <= est(&one.segments), "{name} {budget}");
        let all = Segment {
            index: 0,
            layers: one.segments.iter().map(|s| s.first().clone()).collect(),
        };
        if CircuitShape::of(&all).constraints <= budget {
            assert!(
                chosen <= est(std::slice::from_ref(&all)) + 1e-9,
                "{name} {budget}"
            );
        }
        eprintln!(
            "{name} at {budget}: {} segments, {} constraints (one layer each: {} in {})",
            merged.segments.len(),
            summary.total_constraints,
            unmerged,
            one.segments.len()
        );
        let x = one.quantize(&common::read_floats(
            &format!("{name}_input.json"),
            "input_data",
        ));
        let t1 = trace::run(&one, &x).unwrap();
        let tm = trace::run(&merged, &x).unwrap();
        assert_eq!(t1.output(), tm.output(), "{name}");
        for seg in &merged.segments {
            let shape = CircuitShape::of(seg);
            assert!(shape.constraints <= budget, "{name} seg {}", seg.index);
            assert_eq!(shape.constraints, expected_constraints(seg));
            let setup = circuit::synthesize(seg, Mode::Setup, Fr::from(0u64), None);
            assert_eq!(setup.num_constraints(), shape.constraints);
            assert_eq!(setup.num_witness(), shape.witnesses);
            assert_eq!(setup.num_instance(), shape.public_inputs);
            let input = &tm.tensors[seg.index];
            let a = Assignment {
                input,
                claimed_output: None,
            };
            let cs = circuit::synthesize(seg, Mode::Check, Fr::from(4u64), Some(a));
            assert_eq!(cs.first_inconsistent(), None, "{name} seg {}", seg.index);
            assert!(cs.first_unsatisfied().is_none(), "{name} seg {}", seg.index);
            let mut lie = tm.tensors[seg.index + 1].clone();
            let k = lie.len() / 2;
            lie[k] += if seg.output().contains(lie[k] as i128 + 1) {
                1
            } else {
                -1
            };
            refusal(seg, input, &lie, Mode::Check);
        }
    }
}

#[test]
fn a_data_fitted_input_range_shrinks_the_circuit() {
    // digits_mlp's inputs are pixel intensities in [0, 1]: an unsigned 14-bit range instead
    // of the default signed 17 bits, which brings segment 0 under a 2^11 FFT domain.
    let tmp = tempfile::tempdir().unwrap();
    let opts = provnet_kernels::ImportOptions {
        input_min: 0.0,
        input_max: 1.0,
        ..Default::default()
    };
    let dir = tmp.path().join("digits");
    let summary =
        provnet_kernels::import(&common::fixture("digits_mlp.onnx"), &dir, &opts).unwrap();
    let counts: Vec<(usize, usize)> = summary
        .segments
        .iter()
        .map(|s| (s.constraints, s.public_inputs))
        .collect();
    assert_eq!(counts, [(1948, 8), (936, 5)]);
    assert_eq!(summary.input_range, [0, 16383]);
    // Rows of the QAP: constraints, plus one per public input and one for the constant.
    let (c, p) = counts[0];
    assert_eq!((c + p + 1).next_power_of_two(), 2048);
}

#[test]
fn setup_and_prove_paths_agree_and_honest_witnesses_satisfy() {
    let tmp = tempfile::tempdir().unwrap();
    for name in common::MODELS {
        let (_, model, _) = common::import_fixture(tmp.path(), name);
        let x = model.quantize(&common::read_floats(
            &format!("{name}_input.json"),
            "input_data",
        ));
        let tr = trace::run(&model, &x).unwrap();
        for seg in &model.segments {
            let a = Assignment {
                input: &tr.tensors[seg.index],
                claimed_output: None,
            };
            let cs = circuit::synthesize(seg, Mode::Check, Fr::from(42u64), Some(a));
            assert_eq!(cs.first_inconsistent(), None, "{name} seg {}", seg.index);
            assert!(cs.first_unsatisfied().is_none(), "{name} seg {}", seg.index);
            let setup = circuit::synthesize(seg, Mode::Setup, Fr::from(0u64), None);
            assert_eq!(setup.constraints.len(), cs.constraints.len());
            for (i, (p, q)) in setup.constraints.iter().zip(&cs.constraints).enumerate() {
                for k in 0..3 {
                    let vars = |t: &[(provnet_kernels::r1cs::Var, Fr)]| {
                        t.iter().map(|(v, c)| (*v, *c)).collect::<Vec<_>>()
                    };
                    assert_eq!(vars(&p[k]), vars(&q[k]), "{name} constraint {i}");
                }
            }
        }
    }
}

#[test]
fn a_false_claim_is_reported_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "digits_mlp");
    let x = model.quantize(&common::read_floats("digits_mlp_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[1];
    let mut lie = tr.tensors[2].clone();
    lie[7] += 1;
    let a = Assignment {
        input: &tr.tensors[1],
        claimed_output: Some(&lie),
    };
    let cs = circuit::synthesize(seg, Mode::Prove, Fr::from(1u64), Some(a));
    match cs.first_unsatisfied() {
        Some(KernelError::Unsatisfied { label, index, .. }) => {
            assert_eq!(label, "public output word 0 packs outputs");
            let words = seg.n_out().div_ceil(circuit::per_word(seg.output().bits));
            assert_eq!(index, cs.num_constraints() - 1 - words);
        }
        other => panic!("expected an unsatisfied constraint, got {other:?}"),
    }
}

/// The label of the first constraint `seg` fails when its output is claimed to be `lie`
/// (checked in `mode`); panics when the lie is satisfied.
fn refusal(seg: &Segment, input: &[i64], lie: &[i64], mode: Mode) -> String {
    let a = Assignment {
        input,
        claimed_output: Some(lie),
    };
    let cs = circuit::synthesize(seg, mode, Fr::from(1u64), Some(a));
    match cs.first_unsatisfied() {
        Some(KernelError::Unsatisfied { label, .. }) => label,
        other => panic!("segment {}: a lie passed: {other:?}", seg.index),
    }
}

#[test]
fn a_residual_segment_refuses_a_lie_on_a_relu_row_and_on_a_carried_row() {
    // residual_mlp's segment 1 outputs [relu(fc1(h1)) (48), h1 (24)]: ReLU rows and
    // rows carried without one, in one segment.
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "residual_mlp");
    let x = model.quantize(&common::read_floats(
        "residual_mlp_input.json",
        "input_data",
    ));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[1];
    assert!(seg.first().relu_rows == 48 && seg.n_out() == 72);
    for (row, delta) in [(0usize, 1i64), (47, -1), (48, 1), (71, -1)] {
        let mut lie = tr.tensors[2].clone();
        lie[row] += delta;
        if !seg.output().contains(lie[row] as i128) {
            continue;
        }
        let label = refusal(seg, &tr.tensors[1], &lie, Mode::Prove);
        assert!(label.contains("packs outputs"), "row {row}: {label}");
    }
    let honest = Assignment {
        input: &tr.tensors[1],
        claimed_output: None,
    };
    let cs = circuit::synthesize(seg, Mode::Prove, Fr::from(1u64), Some(honest));
    assert!(cs.first_unsatisfied().is_none());
}

#[test]
fn a_copied_value_costs_nothing_and_a_lie_about_it_is_refused() {
    // cnn_maxpool's first MaxPool round carries half of each window's cells as they are:
    // rows that copy an input, with no decomposition of their own.
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "cnn_maxpool");
    let x = model.quantize(&common::read_floats("cnn_maxpool_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[1];
    let copies: Vec<usize> = (0..seg.n_out())
        .filter(|i| seg.first().copy_of(*i).is_some())
        .collect();
    assert!(!copies.is_empty());
    for &i in &copies {
        let j = seg.first().copy_of(i).unwrap();
        assert_eq!(tr.tensors[2][i], tr.tensors[1][j]);
    }
    for (i, delta) in [(copies[0], 1i64), (*copies.last().unwrap(), -1)] {
        let mut lie = tr.tensors[2].clone();
        lie[i] += delta;
        let label = refusal(seg, &tr.tensors[1], &lie, Mode::Prove);
        assert!(label.contains("packs outputs"), "row {i}: {label}");
    }
}

#[test]
fn products_and_reciprocal_square_roots_agree_with_native_evaluation_and_refuse_a_lie() {
    // gated_mlp's second segment and linear_attention's last two multiply activations;
    // prenorm_ffn's 1 and 4 take LayerNorm's reciprocal square roots, 2 and 5 multiply by
    // them; attention's 3 is the softmax's exp, 4 its reciprocal sums, 5 and 6 products;
    // smooth_mlp's 1 to 5 are GELU's cube and its tanh's max round, exp and reciprocal.
    // Over random inputs anywhere in each segment's input range, the honest witness
    // satisfies every constraint (so the circuit computes exactly what the native
    // evaluation does); an output off by one does not.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(15);
    let tmp = tempfile::tempdir().unwrap();
    for (name, segments) in [
        ("gated_mlp", &[1usize][..]),
        ("linear_attention", &[1, 2]),
        ("prenorm_ffn", &[1, 2, 4, 5]),
        ("attention", &[3, 4, 5, 6]),
        ("smooth_mlp", &[1, 2, 3, 4, 5]),
        ("gelu_ffn", &[2, 3]),
    ] {
        let (_, model, _) = common::import_fixture(tmp.path(), name);
        for &k in segments {
            let seg = &model.segments[k];
            assert!(
                !seg.first().product_pairs().is_empty() || seg.first().gadget_rows > 0,
                "{name} seg {k}"
            );
            for _ in 0..8 {
                // Anywhere in each value's own range; after a LayerNorm, a state the model
                // reaches from a random input (most points of that box are not one: `Norm`).
                let x: Vec<i64> = if seg.first().norms.is_empty() {
                    seg.input_bounds()
                        .into_iter()
                        .map(|(lo, hi)| rng.gen_range(lo as i64..=hi as i64))
                        .collect()
                } else {
                    trace::random_state(&model, k, &mut rng).unwrap()
                };
                let honest = Assignment {
                    input: &x,
                    claimed_output: None,
                };
                let cs = circuit::synthesize(seg, Mode::Check, Fr::from(3u64), Some(honest));
                let bad = cs.first_unsatisfied();
                assert!(bad.is_none(), "{name} seg {k}: {bad:?}");
                let honest_y = seg.eval(&x);
                let i = rng.gen_range(0..honest_y.len());
                // Off by one in the last place, and just past the gadget's documented
                // worst-case error (1 unit for the inverse powers, 4 for exp, 2 for erf).
                let past = match seg.first().gadget_at(i) {
                    Some(Gadget::Exp) => 5,
                    Some(Gadget::Erf) => 3,
                    _ => 2,
                };
                for delta in [1i64, past] {
                    let mut lie = honest_y.clone();
                    let down = lie[i] - delta >= seg.output().lo() as i64;
                    lie[i] += if down { -delta } else { delta };
                    let label = refusal(seg, &x, &lie, Mode::Check);
                    // A claimed gadget output is the gadget's own witness. (An exp of a value
                    // below -16 ln 2 is 0 whatever the claim: the packing refuses anything
                    // else.)
                    let check = match seg.first().gadget_at(i) {
                        Some(Gadget::Rsqrt) => "rsqrt",
                        Some(Gadget::Recip) => "recip",
                        Some(Gadget::Exp) if !label.contains("packs outputs") => "exp",
                        Some(Gadget::Erf) => "erf y = sign |y|",
                        _ => "packs outputs",
                    };
                    assert!(
                        label.contains(check),
                        "{name} seg {k} row {i} by {delta}: {label}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_reciprocal_square_root_off_by_one_fails_its_own_check() {
    // A prover claiming y + 1 (or y - 1) as LayerNorm's 1/sqrt(var) packs it consistently,
    // so the packing holds: the gadget's inequalities are what refuse it.
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "prenorm_ffn");
    let x = model.quantize(&common::read_floats("prenorm_ffn_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let seg = &model.segments[1];
    assert_eq!(seg.first().gadget, Some(Gadget::Rsqrt));
    assert_eq!(seg.first().gadget_rows, 4, "one per token");
    for (row, delta, check) in [
        (0usize, 1i64, "rsqrt y^2 q <= C"),
        (3, -1, "rsqrt (y + 1)^2 q > C"),
    ] {
        let mut lie = tr.tensors[2].clone();
        lie[row] += delta;
        let label = refusal(seg, &tr.tensors[1], &lie, Mode::Check);
        assert!(label.contains(check), "row {row}: {label}");
    }
    // Exact integer semantics at s = 13: y = floor(sqrt(2^39 / max(q, 1))), from q - 1.
    assert_eq!(model.scale_bits, 13);
    for (q1, want) in [(-5i128, 741455i128), (0, 741455), (3, 370727), (8191, 8192)] {
        assert_eq!(Gadget::Rsqrt.eval(13, q1, 1), want, "q - 1 = {q1}");
    }
}

#[test]
fn an_erf_output_off_by_one_or_past_its_tolerance_fails_its_own_check() {
    // gelu_ffn's segment 2 ends in the erf gadget. A claimed erf off by one unit, or by
    // three (just past the gadget's documented two units), is packed consistently, so the
    // gadget's own last constraint (y = sign |y|) is what refuses it; so it is for a value
    // in every part of the gadget: negative, inside a piece, and saturated (|q| >= 4).
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "gelu_ffn");
    let seg = &model.segments[2];
    assert_eq!(seg.first().gadget, Some(Gadget::Erf));
    let s = seg.first().act_scale;
    let n = seg.first().gadget_rows;
    assert_eq!(n, 64, "one per hidden unit and token");
    let x = model.quantize(&common::read_floats("gelu_ffn_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let input = &tr.tensors[2];
    let honest = seg.eval(input);
    let q = |i: usize| {
        let acc = seg.first().accumulate(i, input);
        (acc + (1i128 << (seg.first().shift - 1))) >> seg.first().shift
    };
    let q_max = (0..n).map(q).map(i128::abs).max().unwrap();
    assert!(
        q_max > 0 && (0..n).any(|i| q(i) < 0),
        "negative and positive inputs"
    );
    for (i, y) in honest.iter().take(n).enumerate() {
        assert_eq!(*y as i128, Gadget::Erf.eval(s, q(i), 0), "row {i}");
        let want = libm::erf(q(i) as f64 / (1u64 << s) as f64) * (1u64 << s) as f64;
        assert!((*y as f64 - want).abs() <= 2.0, "row {i}");
    }
    for (i, delta) in [(0usize, 1i64), (n / 2, -1), (n - 1, 3), (7, -3)] {
        let mut lie = honest.clone();
        lie[i] += delta;
        let label = refusal(seg, input, &lie, Mode::Check);
        assert_eq!(label, format!("output[{i}]: erf y = sign |y|"), "row {i}");
    }
    // Saturated inputs (|q| >= 4). After gelu_ffn's LayerNorm no state the model reaches
    // saturates (|q| stays under 2.5, and the fc1 rows' norm bound under 8; `Norm`), so the same layer
    // with no LayerNorm before it (its rows as wide as its input box) takes random inputs
    // anywhere in that box, and some saturate.
    use rand::{Rng, SeedableRng};
    let mut open = seg.clone();
    open.layers[0].norms.clear();
    let widest = |seg: &Segment| (0..n).map(|i| seg.first().row_q_bits()[i]).max().unwrap();
    assert!(
        widest(seg) + 4 <= widest(&open),
        "the norm bound narrows the erf rows: {} against {}",
        widest(seg),
        widest(&open)
    );
    let seg = &open;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(21);
    let (far, row) = (0..64)
        .find_map(|_| {
            let x: Vec<i64> = seg
                .input_bounds()
                .into_iter()
                .map(|(lo, hi)| rng.gen_range(lo as i64..=hi as i64))
                .collect();
            let q = |i: usize| {
                (seg.first().accumulate(i, &x) + (1i128 << (seg.first().shift - 1)))
                    >> seg.first().shift
            };
            let row = (0..n).find(|i| q(*i).abs() >= 4 << s)?;
            Some((x, row))
        })
        .expect("some input saturates a row");
    let y = seg.eval(&far);
    assert_eq!(y[row].abs(), 1 << s, "saturated");
    let a = Assignment {
        input: &far,
        claimed_output: None,
    };
    let cs = circuit::synthesize(seg, Mode::Check, Fr::from(3u64), Some(a));
    assert!(cs.first_unsatisfied().is_none());
    let mut lie = y.clone();
    lie[row] -= y[row].signum();
    let label = refusal(seg, &far, &lie, Mode::Check);
    assert_eq!(label, format!("output[{row}]: erf y = sign |y|"));
}

#[test]
fn packing_is_dense_and_public_inputs_match_the_circuit() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "dense_64");
    let seg = &model.segments[0];
    let x = model.quantize(&common::read_floats("dense_64_input.json", "input_data"));
    let y = seg.eval(&x);
    let bind = Fr::from(5u64);
    let a = Assignment {
        input: &x,
        claimed_output: None,
    };
    let cs = circuit::synthesize(seg, Mode::Prove, bind, Some(a));
    assert_eq!(cs.instance, circuit::public_inputs(seg, &x, &y, bind));
    // 64 inputs of 18 bits -> 14 per word -> 5 words; plus output words and the binding.
    assert_eq!(
        circuit::per_word(seg.input().bits),
        (252 / seg.input().bits) as usize
    );
    assert_eq!(cs.instance.len(), CircuitShape::of(seg).public_inputs);
    assert!(
        cs.instance.len() <= 12,
        "{} public inputs",
        cs.instance.len()
    );
}

/// The first segment of `model` whose first layer holds a LayerNorm bound.
fn normed(model: &provnet_kernels::Model) -> &Segment {
    model
        .segments
        .iter()
        .find(|s| !s.first().norms.is_empty())
        .expect("a segment after a LayerNorm")
}

#[test]
fn a_state_that_breaks_its_layernorm_bound_is_refused_and_cannot_be_proven() {
    // After gelu_ffn's LayerNorm, the centred values and their inverse standard deviation
    // bound the fc1 rows jointly (`Norm`); a state with both at the corners of their ranges
    // is in range value by value, but no run reaches it, and the rows sized by that bound
    // cannot hold it: check_input refuses it with a clear error, and no witness satisfies
    // the circuit (the row's width decomposition is what fails).
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = common::import_fixture(tmp.path(), "gelu_ffn");
    let seg = normed(&model);
    let x = model.quantize(&common::read_floats("gelu_ffn_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let honest = &tr.tensors[seg.index];
    seg.check_input(honest).expect("a state the model reaches");
    let layer = seg.first();
    let bounds = layer.input_bounds();
    let mut far = honest.clone();
    for norm in &layer.norms {
        far[norm.inv as usize] = bounds[norm.inv as usize].1 as i64;
    }
    // Each member at the end of its range that row 0's coefficient on it favours.
    for (a, b, c) in layer.row_products(0) {
        for norm in &layer.norms {
            let member = if *a == norm.inv { *b } else { *a };
            if (*a == norm.inv || *b == norm.inv) && member != norm.inv {
                let (lo, hi) = bounds[member as usize];
                far[member as usize] = if *c > 0 { hi } else { lo } as i64;
            }
        }
    }
    assert_eq!(layer.check_norms(&far), Err(0));
    let err = seg.check_input(&far).unwrap_err().to_string();
    assert!(
        err.contains("not a state the model reaches") && err.contains("row 0"),
        "{err}"
    );
    let a = Assignment {
        input: &far,
        claimed_output: None,
    };
    let cs = circuit::synthesize(seg, Mode::Check, Fr::from(3u64), Some(a));
    let bad = cs.first_unsatisfied().expect("unsatisfiable").to_string();
    assert!(bad.contains("output[0]"), "{bad}");
}

#[test]
fn a_model_file_whose_layernorm_bounds_disagree_with_its_layers_is_refused() {
    // The bounds size the rows after a LayerNorm: a file claiming a tighter one (a larger
    // variance weight) or none at all must not load.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, _) = common::import_fixture(tmp.path(), "gelu_ffn");
    let k = normed(&model).index;
    let path = dir.join(provnet_kernels::model::MODEL_FILE);
    for (what, want) in [
        ("tighter", "LayerNorm bounds disagree"),
        ("none", "disagree"),
    ] {
        let mut m = model.clone();
        let layer = &mut m.segments[k].layers[0];
        match what {
            "tighter" => layer.norms[0].members[0].1 *= 4,
            _ => layer.norms.clear(),
        }
        std::fs::write(&path, m.to_bytes()).unwrap();
        let err = provnet_kernels::Model::load(&dir).unwrap_err().to_string();
        assert!(err.contains(want), "{what}: {err}");
    }
    std::fs::write(&path, model.to_bytes()).unwrap();
    provnet_kernels::Model::load(&dir).expect("the honest file loads");
}

#[test]
fn spiky_inputs_through_every_layernorm_fixture_stay_inside_their_bounds() {
    // The LayerNorm bounds narrow the rows after each LayerNorm by about ten bits; they
    // must hold for every input, not just typical ones: constant tokens (variance 0, the
    // inverse at its floor), one-hot spikes, the corners of the input range, alternating
    // signs, and random points. Each run passes every segment's check, and the honest
    // witness satisfies every segment's circuit.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(44);
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "prenorm_ffn",
        "gelu_ffn",
        "decomposed_ln",
        "transformer_block",
        "two_head_classifier",
    ] {
        let (_, model, _) = common::import_fixture(tmp.path(), name);
        assert!(
            model.segments.iter().any(|s| !s.first().norms.is_empty()),
            "{name} has a LayerNorm bound"
        );
        let (lo, hi) = model.segments[0].input_bounds()[0];
        let (lo, hi) = (lo as i64, hi as i64);
        let n = model.segments[0].n_in();
        let width = *model.segments[0].in_shape().last().unwrap();
        let mut inputs: Vec<Vec<i64>> = vec![
            vec![0; n],
            vec![hi; n],
            vec![lo; n],
            (0..n).map(|i| if i % 2 == 0 { hi } else { lo }).collect(),
            (0..n)
                .map(|i| if i % width == 0 { hi } else { 0 })
                .collect(),
            (0..n)
                .map(|i| if i % width == 1 { lo } else { hi })
                .collect(),
            (0..n)
                .map(|i| if (i / width) % 2 == 0 { 1 } else { lo })
                .collect(),
        ];
        for _ in 0..4 {
            inputs.push((0..n).map(|_| rng.gen_range(lo..=hi)).collect());
        }
        for x in &inputs {
            let tr = trace::run(&model, x).unwrap_or_else(|e| panic!("{name}: {e}"));
            for seg in &model.segments {
                let a = Assignment {
                    input: &tr.tensors[seg.index],
                    claimed_output: None,
                };
                let cs = circuit::synthesize(seg, Mode::Check, Fr::from(3u64), Some(a));
                let bad = cs.first_unsatisfied();
                assert!(bad.is_none(), "{name} seg {}: {bad:?}", seg.index);
            }
        }
    }
}

#[test]
fn a_cut_layers_done_rows_pass_as_verbatim_words_and_a_lie_on_one_is_refused() {
    // gelu_ffn's erf layer (13,821 constraints) cut at 8,000 into three parts: the middle
    // one carries the rows the first did as whole words, tied word for word (no witnesses,
    // no range checks); the last outputs the layer's own range, so it checks them again.
    // Every part's shape still matches what the builder makes.
    let tmp = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        max_constraints: 8000,
        ..Default::default()
    };
    let (_, model, _) = common::import_fixture_with(tmp.path(), "gelu_ffn", "cut", &opts);
    let x = model.quantize(&common::read_floats("gelu_ffn_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let (mut tied, mut lies) = (0, 0);
    for seg in &model.segments {
        let shape = CircuitShape::of(seg);
        let cs = circuit::synthesize(seg, Mode::Setup, Fr::from(0u64), None);
        assert_eq!(cs.num_constraints(), shape.constraints, "seg {}", seg.index);
        assert_eq!(cs.num_witness(), shape.witnesses, "seg {}", seg.index);
        assert_eq!(cs.num_instance(), shape.public_inputs, "seg {}", seg.index);
        let words = circuit::verbatim_words(seg);
        if words.is_empty() {
            continue;
        }
        tied += 1;
        let (input, output) = (&tr.tensors[seg.index], &tr.tensors[seg.index + 1]);
        let honest = Assignment {
            input,
            claimed_output: None,
        };
        let cs = circuit::synthesize(seg, Mode::Check, Fr::from(3u64), Some(honest));
        assert!(cs.first_unsatisfied().is_none(), "seg {}", seg.index);
        // A value inside a tied word, first and last of it, moved by one.
        let per = circuit::per_word(seg.output().bits);
        let (_, out_word) = words[words.len() / 2];
        for row in [out_word * per, out_word * per + per - 1] {
            for delta in [1i64, -1] {
                let mut lie = output.clone();
                lie[row] += delta;
                if !seg.output().contains(lie[row] as i128) {
                    continue;
                }
                lies += 1;
                let label = refusal(seg, input, &lie, Mode::Check);
                assert!(
                    label.contains("verbatim word"),
                    "seg {} row {row}: {label}",
                    seg.index
                );
            }
        }
    }
    assert_eq!(tied, 1, "segments with verbatim words");
    assert!(lies >= 2, "{lies} lies tried");
}
