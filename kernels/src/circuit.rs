//! The R1CS circuit of one segment.
//!
//! Public inputs: the segment input packed into words, the output packed into words, and the
//! binding value. Witness and constraints:
//!
//! * each input value x_j is a witness with a `b_in`-bit decomposition of x_j - lo (exact range
//!   check; `b_in` constraints, the lowest bit being a linear combination, not a variable);
//! * constant weights fold into linear combinations, so the matrix product costs nothing: the
//!   offset accumulator z_i = sum_j w_ij x_j + b_i + 2^(s-1) + 2^(m+s) is decomposed into
//!   k = s + m + 1 bits (k constraints). Its low s bits are the rounding remainder, its high
//!   m + 1 bits are q_i + 2^m, and the top bit is the sign of q_i;
//!   A product of two inputs (attention, a gate) adds c * p to accumulators, where
//!   p = x_a * x_b is one witness and one constraint per distinct pair;
//! * a row that copies an input (a tensor carried across the cut) is that input's linear
//!   combination: its range check bounds it, so it costs nothing;
//! * ReLU costs one constraint: y_i = top_bit * (q_i's low m bits);
//! * one constraint per packed word ties the public words to the values;
//! * binding * binding = binding_sq puts the binding into a constraint (an unconstrained
//!   Groth16 public input would be malleable).
//!
//! * a segment of several layers (cuts placed by cost) chains them: each later layer reads
//!   the combinations the layer before computed (decomposed, ReLU'd, gadget or copied
//!   values, each bounded by its own check), with no range check and no public word.
//!
//! Constraints per layer: pairs + sum_i k_i (copies excluded) + ReLU rows + gadgets; per
//! segment, those of its layers plus sum_j b_j (each input's range bits), its last layer's
//! output words (none when every row has a ReLU) and 1.

use std::collections::HashMap;

use ark_bn254::Fr;
use ark_ff::{AdditiveGroup, Field, One, Zero};

use crate::gadgets::{self, Gadget};
use crate::model::{Layer, Range, Segment};
use crate::r1cs::{Label, Lc, Mode, R1cs, Var};

/// Bits of payload per packed public word (below the 254-bit BN254 scalar field).
pub const PACK_BITS: u32 = 252;

/// Values that fit one public word for a range of `bits` bits.
pub fn per_word(bits: u32) -> usize {
    (PACK_BITS / bits.max(1)) as usize
}

/// Sizes of a segment's circuit, computed without building it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitShape {
    pub constraints: usize,
    /// Public inputs, not counting the constant one.
    pub public_inputs: usize,
    pub witnesses: usize,
}

impl CircuitShape {
    pub fn of(seg: &Segment) -> CircuitShape {
        if let [layer] = seg.layers.as_slice() {
            return Self::alone(layer);
        }
        let last = seg.layers.len() - 1;
        seg.layers
            .iter()
            .enumerate()
            .fold(Self::head(seg.first()), |shape, (l, layer)| {
                let (mid, end) = Self::parts(layer);
                shape.plus(if l == last { end } else { mid })
            })
    }

    /// A segment of `layer` alone: its head and its rows as the last layer, less what its
    /// verbatim words (see [`verbatim_words`]) save: their values' witnesses and range
    /// checks (each output word's one constraint stays, as the tie to its input word).
    pub fn alone(layer: &Layer) -> CircuitShape {
        let shape = Self::head(layer).plus(Self::parts(layer).1);
        let words = layer_verbatim_words(layer);
        if words.is_empty() {
            return shape;
        }
        let per = per_word(layer.input.bits);
        let ranges = layer.input_ranges();
        let bits: usize = words
            .iter()
            .flat_map(|(e, _)| &ranges[e * per..(e + 1) * per])
            .map(|r| r.bits as usize)
            .sum();
        let values = words.len() * per;
        CircuitShape {
            constraints: shape.constraints - bits,
            public_inputs: shape.public_inputs,
            witnesses: shape.witnesses - (values - words.len()) - (bits - values),
        }
    }

    /// This shape with `part`'s counts added.
    pub fn plus(self, part: CircuitShape) -> CircuitShape {
        CircuitShape {
            constraints: self.constraints + part.constraints,
            public_inputs: self.public_inputs + part.public_inputs,
            witnesses: self.witnesses + part.witnesses,
        }
    }

    /// What a segment starting with `first` spends before its layers: each input's range
    /// check (its own range's bits), the input words and the binding. Values between
    /// layers are not checked again: the layer computing them bounds them.
    pub fn head(first: &Layer) -> CircuitShape {
        let n_in = first.n_in();
        let in_bits: usize = first
            .in_ranges
            .iter()
            .map(|(n, r)| *n as usize * r.bits as usize)
            .sum();
        let words_in = n_in.div_ceil(per_word(first.input.bits));
        CircuitShape {
            constraints: in_bits + 1,
            public_inputs: words_in + 1,
            witnesses: (n_in - words_in) + (in_bits - n_in) + 1,
        }
    }

    /// The constraints of row `i` of `layer` (magnitude bits `m`) before products and
    /// packing: its accumulator's decomposition (none for a copy), its ReLU, its gadget.
    pub fn row_constraints(layer: &Layer, i: usize, m: u32) -> usize {
        let k = if layer.copy_of(i).is_none() {
            layer.row_acc_bits(m) as usize
        } else {
            0
        };
        let gadget = layer.gadget_at(i).map_or(0, |g| {
            1 + g.cost(layer.act_scale, m, layer.gadget_floor as i128).0
        });
        k + gadget + usize::from(layer.relu(i))
    }

    /// What `layer` adds to a segment: inside it, and as its last layer (whose outputs are
    /// then packed into public words). Its rows are sized once for both.
    pub fn parts(layer: &Layer) -> (CircuitShape, CircuitShape) {
        let n_out = layer.n_out();
        // Rows copied from the input are not decomposed.
        let (mut k, mut decomposed) = (0, 0);
        // Gadget rows: a ReLU and the gadget's constraints (`Gadget::cost`).
        let (mut gadget_c, mut gadget_w) = (0, 0);
        for (i, m) in layer.row_q_bits().into_iter().enumerate() {
            if layer.copy_of(i).is_none() {
                k += layer.row_acc_bits(m) as usize;
                decomposed += 1;
            }
            if let Some(g) = layer.gadget_at(i) {
                // The row's ReLU, then the gadget's own.
                let (c, w) = g.cost(layer.act_scale, m, layer.gadget_floor as i128);
                gadget_c += 1 + c;
                gadget_w += 1 + w;
            }
        }
        let pairs = layer.product_pairs().len();
        let shape = |(relu_c, relu_w, pack_c): (usize, usize, usize), public_inputs| CircuitShape {
            constraints: pairs + k + relu_c + gadget_c + pack_c,
            public_inputs,
            witnesses: pairs + (k - decomposed) + relu_w + gadget_w,
        };
        // Inside: one constraint and one witness per ReLU row. Last and all ReLU: one
        // constraint and one witness per output, less the word starts, which are defined
        // from the public words. Last otherwise: one packing constraint per word too.
        let words = n_out.div_ceil(per_word(layer.output.bits));
        let relu = layer.relu_rows;
        let end = if layer.all_relu() {
            (n_out, n_out - words, 0)
        } else {
            (relu, relu, words)
        };
        (shape((relu, relu, 0), 0), shape(end, words))
    }

    /// The FFT domain of the circuit: constraints plus public inputs (and the constant
    /// one), rounded up to a power of two.
    pub fn domain(&self) -> usize {
        (self.constraints + self.public_inputs + 1).next_power_of_two()
    }
}

/// The public words a one-layer segment copies from its input to its output unchanged:
/// (input word, output word) pairs, where every value of the input word is read by one row
/// only, a copy, into the same place of one output word, and the input and output pack
/// alike (same range, so same width and offset). Such a word costs one constraint, tying
/// the two words; its values are neither unpacked nor range-checked. That is sound because
/// the verifier packs the claimed input and output itself and checks every value is within
/// the packing range, where packing is one-to-one: equal words are equal values. (A layer
/// cut into parts carries the rows done so far this way, see [`crate::split`].)
pub fn verbatim_words(seg: &Segment) -> Vec<(usize, usize)> {
    match seg.layers.as_slice() {
        [layer] => layer_verbatim_words(layer),
        _ => Vec::new(),
    }
}

fn layer_verbatim_words(l: &Layer) -> Vec<(usize, usize)> {
    if l.input != l.output || l.all_relu() {
        return Vec::new();
    }
    let (n_in, n_out, per) = (l.n_in(), l.n_out(), per_word(l.input.bits));
    // How many times each input is read, and the row copying it.
    let mut reads = vec![0u32; n_in];
    let mut copy_at = vec![usize::MAX; n_in];
    for i in 0..n_out {
        for (j, _) in &l.rows[i] {
            reads[*j as usize] += 1;
        }
        for (a, b, _) in l.row_products(i) {
            reads[*a as usize] += 1;
            reads[*b as usize] += 1;
        }
        if let Some(j) = l.copy_of(i) {
            copy_at[j] = i;
        }
    }
    (0..n_in / per)
        .filter_map(|e| {
            let (j0, i0) = (e * per, copy_at[e * per]);
            let aligned = i0 != usize::MAX && i0 % per == 0 && i0 + per <= n_out;
            (aligned && (0..per).all(|t| reads[j0 + t] == 1 && copy_at[j0 + t] == i0 + t))
                .then_some((e, i0 / per))
        })
        .collect()
}

/// Field element of a signed integer.
pub fn fr_i128(v: i128) -> Fr {
    if v >= 0 {
        Fr::from(v as u128)
    } else {
        -Fr::from(v.unsigned_abs())
    }
}

fn pow2_table(n: usize) -> Vec<Fr> {
    let mut t = Vec::with_capacity(n);
    let mut p = Fr::one();
    for _ in 0..n {
        t.push(p);
        p.double_in_place();
    }
    t
}

fn bit(v: u128, t: u32) -> Fr {
    if (v >> t) & 1 == 1 {
        Fr::one()
    } else {
        Fr::zero()
    }
}

/// Packs in-range values into public words: word e = sum_t (v - lo) * 2^(bits * t).
pub fn pack(values: &[i64], range: Range) -> Vec<Fr> {
    let pow2 = pow2_table(PACK_BITS as usize + 1);
    let lo = range.lo();
    values
        .chunks(per_word(range.bits))
        .map(|chunk| {
            chunk.iter().enumerate().fold(Fr::zero(), |acc, (t, v)| {
                acc + fr_i128(*v as i128 - lo) * pow2[t * range.bits as usize]
            })
        })
        .collect()
}

/// The public inputs of a segment proof, in circuit order.
pub fn public_inputs(seg: &Segment, input: &[i64], output: &[i64], binding: Fr) -> Vec<Fr> {
    let mut v = pack(input, seg.input());
    v.extend(pack(output, seg.output()));
    v.push(binding);
    v
}

/// What the prover knows: the segment input and, for tests that tamper with the statement,
/// an output to claim instead of the true one.
#[derive(Clone, Copy, Debug)]
pub struct Assignment<'a> {
    pub input: &'a [i64],
    pub claimed_output: Option<&'a [i64]>,
}

/// Builds the segment circuit. `assignment` is required in `Prove` and `Check` modes (and must
/// be in range: callers check with [`Segment::check_input`]).
pub fn synthesize(seg: &Segment, mode: Mode, binding: Fr, assignment: Option<Assignment>) -> R1cs {
    let mut cs = R1cs::new(mode);
    let pow2 = pow2_table(PACK_BITS as usize + 1);
    let values = cs.wants_values();
    let x: &[i64] = assignment.map(|a| a.input).unwrap_or(&[]);
    // Every layer's input, natively (when proving), then the segment output.
    let mut inputs: Vec<Vec<i64>> = Vec::new();
    if values {
        inputs.push(x.to_vec());
        inputs.extend(seg.layer_values(x));
    }
    let truth: &[i64] = inputs.last().map(Vec::as_slice).unwrap_or(&[]);
    let claimed: &[i64] = assignment.and_then(|a| a.claimed_output).unwrap_or(truth);

    // Public inputs.
    let words_in = if values {
        pack(x, seg.input())
    } else {
        Vec::new()
    };
    let words_out = if values {
        pack(claimed, seg.output())
    } else {
        Vec::new()
    };
    let n_words_in = seg.n_in().div_ceil(per_word(seg.input().bits));
    let n_words_out = seg.n_out().div_ceil(per_word(seg.output().bits));
    let pin: Vec<Var> = (0..n_words_in)
        .map(|e| cs.instance(|| words_in[e]))
        .collect();
    let pout: Vec<Var> = (0..n_words_out)
        .map(|e| cs.instance(|| words_out[e]))
        .collect();
    let bind = cs.instance(|| binding);

    let first = seg.first();
    // Input word -> output word, for the words copied verbatim, and the reverse.
    let verbatim: HashMap<usize, usize> = verbatim_words(seg).into_iter().collect();
    let tied: HashMap<usize, Var> = verbatim.iter().map(|(e, o)| (*o, pin[*e])).collect();
    let mut xs = input_values(&mut cs, first, x, (&pin, &verbatim), &pow2);
    input_range_checks(&mut cs, first, x, (&xs, &verbatim), &pow2);
    let layer_input = |l: usize| inputs.get(l).map(Vec::as_slice).unwrap_or(&[]);
    let (last, inner) = seg.layers.split_last().expect("a segment has a layer");
    for (l, layer) in inner.iter().enumerate() {
        // The layer's outputs feed the next layer as they are (no range check, no public
        // word): shifted back from `output - lo` to values.
        let outs = layer_circuit(&mut cs, layer, (layer_input(l), &xs), None, &pow2);
        let lo = fr_i128(layer.output.lo());
        xs = outs
            .into_iter()
            .map(|mut lc| {
                cs.add(&mut lc, Var::One, lo);
                lc
            })
            .collect();
    }
    let lx = layer_input(inner.len());
    let outs = layer_circuit(&mut cs, last, (lx, &xs), Some((&pout, claimed)), &pow2);
    if !last.all_relu() {
        pack_words(
            &mut cs,
            (&pout, &tied),
            last.n_out(),
            last.output,
            &pow2,
            "pack output",
            |_, i| outs[i].clone(),
        );
    }

    let sq = cs.witness(|| binding.square());
    let (a, b, c) = (cs.var(bind), cs.var(bind), cs.var(sq));
    cs.enforce(
        a,
        b,
        c,
        Label {
            what: "binding * binding = binding_sq",
            i: 0,
            j: 0,
        },
    );
    cs
}

/// One layer's rows from its inputs `xs` (and their values `x`, when proving): products,
/// accumulator decompositions, requantization, ReLU and gadgets. Returns each output less
/// the layer's output range lo. `last`: the segment's public output words and the claimed
/// output, for its last layer (an all-ReLU one defines its outputs through the words).
fn layer_circuit(
    cs: &mut R1cs,
    seg: &Layer,
    (x, xs): (&[i64], &[Lc]),
    last: Option<(&[Var], &[i64])>,
    pow2: &[Fr],
) -> Vec<Lc> {
    let values = cs.wants_values();
    let accs: Vec<i128> = if values {
        (0..seg.n_out()).map(|i| seg.accumulate(i, x)).collect()
    } else {
        Vec::new()
    };
    let truth: Vec<i64> = accs
        .iter()
        .enumerate()
        .map(|(i, a)| seg.finish(i, *a))
        .collect();
    let claimed: &[i64] = last.map(|(_, c)| c).unwrap_or(&truth);
    let products = products(cs, seg, x, xs);

    // Outputs: accumulator decomposition, requantization, ReLU. A last layer all ReLU
    // defines its outputs through the public words (see `word_values`), so they need no
    // packing constraint; otherwise each output word gets one.
    let ys = match last {
        Some((pout, _)) if seg.all_relu() => word_values(
            cs,
            (pout, &HashMap::new()),
            seg.n_out(),
            seg.output,
            pow2,
            |i| fr_i128(truth[i] as i128),
        ),
        _ => (0..seg.relu_rows)
            .map(|i| {
                let y = cs.witness(|| fr_i128(truth[i] as i128));
                cs.var(y)
            })
            .collect(),
    };
    seg.row_q_bits()
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if let Some(j) = seg.copy_of(i) {
                // x_j - lo_out: x_j is range-checked as an input (or bounded by the layer
                // before), and the output range holds the input range (q_bits covers this
                // row).
                let mut lc = xs[j].clone();
                cs.add(&mut lc, Var::One, fr_i128(-seg.output.lo()));
                return lc;
            }
            let acc = accs.get(i).copied();
            if let Some(g) = seg.gadget_at(i) {
                // The row's value v (q - 1 for an inverse power, q for exp and erf), its
                // ReLU, then the gadget. y is what the prover claims (the truth unless a
                // test tampers with it).
                let v = acc
                    .map(|a| (a + (1i128 << (seg.shift - 1))) >> seg.shift)
                    .unwrap_or(0);
                let rv = cs.witness(|| fr_i128(v.max(0)));
                let r_lc = cs.var(rv);
                let row = Row {
                    xs,
                    products: &products,
                    relu_out: Some(&r_lc),
                    acc,
                };
                let (r_lc, v_lc, sign) = gadget_input(cs, seg, (i, m), row, pow2);
                let y = claimed.get(i).map(|v| *v as i128).unwrap_or(0);
                let y_lc = match g {
                    Gadget::Rsqrt | Gadget::Recip => {
                        inverse_row(cs, seg, (g, i, m), r_lc, (v.max(0), y), pow2)
                    }
                    Gadget::Exp => exp_row(cs, seg, (i, m), (r_lc, v_lc), (v, y), pow2),
                    Gadget::Erf => erf_row(cs, seg, (i, m), (r_lc, v_lc, sign), (v, y), pow2),
                };
                let mut out = y_lc;
                cs.add(&mut out, Var::One, fr_i128(-seg.output.lo()));
                return out;
            }
            let row = Row {
                xs,
                products: &products,
                relu_out: ys.get(i),
                acc,
            };
            output_row(cs, seg, (i, m), row, pow2)
        })
        .collect()
}

/// The values packed into public words, as linear combinations. Every value is a witness
/// except the first of each word, which is defined from the word itself:
/// v_0 = word + lo - sum_{t>=1} (v_t - lo) 2^(bits t). That makes the packing hold by
/// construction (no constraint per word); the range checks on every value, v_0 included,
/// keep the decomposition unique.
fn word_values(
    cs: &mut R1cs,
    (words, skip): (&[Var], &HashMap<usize, usize>),
    count: usize,
    range: Range,
    pow2: &[Fr],
    value: impl Fn(usize) -> Fr,
) -> Vec<Lc> {
    let per = per_word(range.bits);
    let lo = fr_i128(range.lo());
    let skipped = |j: usize| skip.contains_key(&(j / per));
    let vars: Vec<Option<Var>> = (0..count)
        .map(|j| (j % per != 0 && !skipped(j)).then(|| cs.witness(|| value(j))))
        .collect();
    (0..count)
        .map(|j| match vars[j] {
            Some(v) => cs.var(v),
            None if skipped(j) => Lc::default(),
            None => {
                let mut lc = cs.var(words[j / per]);
                let mut constant = lo;
                for (t, v) in vars[j + 1..(j + per).min(count)].iter().enumerate() {
                    let coeff = pow2[(t + 1) * range.bits as usize];
                    cs.add(&mut lc, v.expect("only word starts are None"), -coeff);
                    constant += lo * coeff;
                }
                cs.add(&mut lc, Var::One, constant);
                lc
            }
        })
        .collect()
}

/// The segment inputs as linear combinations over the public input words (none for the
/// values of a verbatim word, keyed by its index in `verbatim`).
fn input_values(
    cs: &mut R1cs,
    seg: &Layer,
    x: &[i64],
    (pin, verbatim): (&[Var], &HashMap<usize, usize>),
    pow2: &[Fr],
) -> Vec<Lc> {
    word_values(cs, (pin, verbatim), seg.n_in(), seg.input, pow2, |j| {
        fr_i128(x[j] as i128)
    })
}

/// Exact range check of every input against its own range (`Segment::in_ranges`): b_j
/// boolean constraints on the bits of x_j - lo_j (not for the values of a verbatim word).
fn input_range_checks(
    cs: &mut R1cs,
    seg: &Layer,
    x: &[i64],
    (xs, verbatim): (&[Lc], &HashMap<usize, usize>),
    pow2: &[Fr],
) {
    let values = cs.wants_values();
    let ranges = seg.input_ranges();
    let per = per_word(seg.input.bits);
    for (j, xj) in xs.iter().enumerate() {
        if verbatim.contains_key(&(j / per)) {
            continue;
        }
        let (b, lo) = (ranges[j].bits, ranges[j].lo());
        let u = if values {
            (x[j] as i128 - lo) as u128
        } else {
            0
        };
        decompose(cs, u, b, pow2, ("input bit", j), |terms| {
            terms.extend(xj.terms.iter().copied());
            terms.push((Var::One, -fr_i128(lo)));
        });
    }
}

/// Decomposes a value into `n` bits with `n` boolean constraints: bits 1..n are witnesses,
/// bit 0 is the linear combination `value - sum_t 2^t bit_t` (saving the usual "sum of bits"
/// constraint). `v` is the value, known natively; `terms` writes its linear combination.
/// Returns bits 1..n (`bits[t - 1]` is bit t).
fn decompose(
    cs: &mut R1cs,
    v: u128,
    n: u32,
    pow2: &[Fr],
    (what, i): (&'static str, usize),
    terms: impl FnOnce(&mut Vec<(Var, Fr)>),
) -> Vec<Var> {
    let bits: Vec<Var> = (1..n).map(|t| cs.witness(|| bit(v, t))).collect();
    let bit0 = cs.known(
        || bit(v, 0),
        |out| {
            terms(out);
            out.extend(bits.iter().zip(1..).map(|(b, t)| (*b, -pow2[t])));
        },
    );
    let label = |t: u32| Label {
        what,
        i: i as u32,
        j: t,
    };
    cs.boolean(bit0, label(0));
    for (b, t) in bits.iter().zip(1..) {
        let lc = cs.var(*b);
        cs.boolean(lc, label(t));
    }
    bits
}

/// A witness w = a * b, with its constraint; `value` is w when proving.
fn product(cs: &mut R1cs, (a, b): (Lc, Lc), value: i128, label: Label) -> Var {
    let w = cs.witness(|| fr_i128(value));
    let w_lc = cs.var(w);
    cs.enforce(a, b, w_lc, label);
    w
}

/// What one output row reads: the inputs, the products, its ReLU output (when it has
/// one) and, when proving, its accumulator.
struct Row<'a> {
    xs: &'a [Lc],
    products: &'a HashMap<(u32, u32), Var>,
    relu_out: Option<&'a Lc>,
    acc: Option<i128>,
}

/// One witness and one constraint per distinct pair of inputs the segment multiplies:
/// p = x_a * x_b. The accumulators read p with their coefficients.
fn products(cs: &mut R1cs, seg: &Layer, x: &[i64], xs: &[Lc]) -> HashMap<(u32, u32), Var> {
    let values = cs.wants_values();
    seg.product_pairs()
        .into_iter()
        .map(|(a, b)| {
            let (a_us, b_us) = (a as usize, b as usize);
            let value = if values {
                x[a_us] as i128 * x[b_us] as i128
            } else {
                0
            };
            let label = Label {
                what: "product",
                i: a,
                j: b,
            };
            let p = product(cs, (xs[a_us].clone(), xs[b_us].clone()), value, label);
            ((a, b), p)
        })
        .collect()
}

/// One output row `i` whose requantized value needs `m` magnitude bits: decomposes the
/// offset accumulator and returns (output - output range lo) as an Lc.
fn output_row(cs: &mut R1cs, seg: &Layer, (i, m): (usize, u32), row: Row, pow2: &[Fr]) -> Lc {
    row_value(cs, seg, (i, m), row, pow2, false).0
}

/// A gadget row's input: its ReLU'd value, its value and its sign bit (1 when q >= 0), as
/// combinations.
fn gadget_input(
    cs: &mut R1cs,
    seg: &Layer,
    (i, m): (usize, u32),
    row: Row,
    pow2: &[Fr],
) -> (Lc, Lc, Lc) {
    let (r, v) = row_value(cs, seg, (i, m), row, pow2, true);
    let (v, sign) = v.expect("asked for");
    (r, v, sign)
}

/// Decomposes row `i`'s offset accumulator; returns (output - output range lo) (or the
/// ReLU'd value for a gadget row) and, when `want_value`, the requantized value q itself
/// and its sign bit.
fn row_value(
    cs: &mut R1cs,
    seg: &Layer,
    (i, m): (usize, u32),
    Row {
        xs,
        products,
        relu_out,
        acc,
    }: Row,
    pow2: &[Fr],
    want_value: bool,
) -> (Lc, Option<(Lc, Lc)>) {
    let (s, k) = (seg.shift, seg.row_acc_bits(m));
    let offset = seg.row_acc_offset(m);
    let z = acc.map(|a| (a + offset) as u128).unwrap_or(0);
    let row = &seg.rows[i];
    let constant = seg.row_constant(i) + offset;
    let bits = decompose(cs, z, k, pow2, ("output bit", i), |terms| {
        for (j, w) in row {
            let w = fr_i128(*w as i128);
            terms.extend(xs[*j as usize].terms.iter().map(|(v, c)| (*v, *c * w)));
        }
        for (a, b, c) in seg.row_products(i) {
            let p = products[&(*a.min(b), *a.max(b))];
            terms.push((p, fr_i128(*c as i128)));
        }
        terms.push((Var::One, fr_i128(constant)));
    });
    // bits[t - 1] is bit t. High part: bits s..k-1 weighted 2^(t-s) = q + 2^m.
    let high = |cs: &R1cs, top: u32| {
        let mut lc = Lc::default();
        for t in s..top {
            cs.add(&mut lc, bits[(t - 1) as usize], pow2[(t - s) as usize]);
        }
        lc
    };
    let gadget = seg.gadget_at(i).is_some();
    if !seg.relu(i) && !gadget {
        // q + 2^m_row, shifted to the segment-wide range: q - lo = q + 2^q_bits.
        let mut lc = high(cs, k);
        let shift = (1i128 << seg.q_bits) - (1i128 << m);
        if shift != 0 {
            cs.add(&mut lc, Var::One, fr_i128(shift));
        }
        return (lc, None);
    }
    let sign = cs.var(bits[(k - 2) as usize]);
    let value = want_value.then(|| {
        let mut q = high(cs, k);
        cs.add(&mut q, Var::One, fr_i128(-(1i128 << m)));
        (q, sign.clone())
    });
    let q_low = high(cs, k - 1); // q when the sign bit is set
    let y = relu_out
        .expect("ReLU segments pass their output values")
        .clone();
    cs.enforce(
        sign,
        q_low,
        y.clone(),
        Label {
            what: "relu",
            i: i as u32,
            j: 0,
        },
    );
    if seg.all_relu() || gadget {
        return (y, value);
    }
    // A ReLU row among carried ones: shifted to the segment-wide signed range.
    let mut lc = y;
    cs.add(&mut lc, Var::One, fr_i128(1i128 << seg.q_bits));
    (lc, None)
}

/// An inverse power gadget (`Gadget::Rsqrt`, p = 2, or `Gadget::Recip`, p = 1) on row
/// `i`, from r = max(q, f) - f (its value, and the claimed y, when proving): q' = r + f,
/// and y = floor((C / q')^(1/p)), C = 2^((p+1)s), is the only integer in [0, 2^ny) with
/// y^p q' <= C < (y + 1)^p q'. Both inequalities are bit decompositions, of C - y^p q'
/// and of (y + 1)^p q' - C - 1 (= y q' + q' - C - 1, or y^2 q' + 2 y q' + q' - C - 1),
/// too short to wrap the field. Returns y.
fn inverse_row(
    cs: &mut R1cs,
    seg: &Layer,
    (g, i, m): (Gadget, usize, u32),
    r: Lc,
    (r_value, y): (i128, i128),
    pow2: &[Fr],
) -> Lc {
    let s = seg.act_scale;
    let floor = seg.gadget_floor as i128;
    let (ny, nc, nh) = g.inverse_widths(s, m, floor);
    let c = 1i128 << g.numerator_bits(s);
    let q = r_value + floor;
    let mut qp = r;
    cs.add(&mut qp, Var::One, fr_i128(floor));
    let label = |what: &'static str| Label {
        what,
        i: i as u32,
        j: 0,
    };
    let (what_y, what_low, what_high, what_a) = match g {
        Gadget::Rsqrt => (
            "rsqrt bit",
            "rsqrt y^2 q <= C",
            "rsqrt (y + 1)^2 q > C",
            "rsqrt y^2 q",
        ),
        _ => (
            "recip bit",
            "recip y q <= C",
            "recip (y + 1) q > C",
            "recip y q",
        ),
    };
    let yv = cs.witness(|| fr_i128(y));
    let y_lc = cs.var(yv);
    decompose(cs, y as u128, ny, pow2, (what_y, i), |t| {
        t.extend(y_lc.terms.iter().copied())
    });
    // a = y^p q', and for p = 2 also b = y q'.
    let (a_value, b) = if g == Gadget::Rsqrt {
        let y2 = product(cs, (y_lc.clone(), y_lc.clone()), y * y, label("rsqrt y^2"));
        let y2_lc = cs.var(y2);
        let a = product(cs, (y2_lc, qp.clone()), y * y * q, label(what_a));
        let b = product(cs, (y_lc.clone(), qp.clone()), y * q, label("rsqrt y q"));
        ((y * y * q, a), Some(b))
    } else {
        let a = product(cs, (y_lc.clone(), qp.clone()), y * q, label(what_a));
        ((y * q, a), None)
    };
    let (a_int, a) = a_value;
    let low = (c - a_int).max(0) as u128;
    decompose(cs, low, nc, pow2, (what_low, i), |t| {
        t.push((a, -Fr::one()));
        t.push((Var::One, fr_i128(c)));
    });
    let next = if b.is_some() {
        (y + 1) * (y + 1) * q
    } else {
        (y + 1) * q
    };
    let high = (next - c - 1).max(0) as u128;
    decompose(cs, high, nh, pow2, (what_high, i), |t| {
        t.push((a, Fr::one()));
        if let Some(b) = b {
            t.push((b, Fr::from(2u64)));
        }
        t.extend(qp.terms.iter().copied());
        t.push((Var::One, fr_i128(-c - 1)));
    });
    y_lc
}

/// The exp gadget on row `i` (see [`crate::gadgets`]), from its ReLU'd value r = max(q, 0)
/// and its value q (and their values, and the claimed y, when proving). Returns y.
fn exp_row(
    cs: &mut R1cs,
    seg: &Layer,
    (i, m): (usize, u32),
    (r, q): (Lc, Lc),
    (q_value, y_claim): (i128, i128),
    pow2: &[Fr],
) -> Lc {
    let s = seg.act_scale;
    let values = cs.wants_values();
    let label = |what: &'static str, j: u32| Label {
        what,
        i: i as u32,
        j,
    };
    let l = gadgets::exp_ln2(s);
    let kb = Gadget::exp_k_bits(s, m);
    let nl = gadgets::exp_rem_bits(s);
    // t = -min(q, 0) = r - q = k L + rem.
    let t_value = (-q_value).max(0);
    let (k_value, rem_value) = (t_value / l, t_value % l);
    let mut t = r;
    for (v, c) in q.terms.iter() {
        if cs.wants_terms() {
            t.terms.push((*v, -*c));
        }
    }
    t.value -= q.value;
    let kbits: Vec<Var> = (0..kb)
        .map(|b| {
            let v = cs.witness(|| {
                if (k_value >> b) & 1 == 1 {
                    Fr::one()
                } else {
                    Fr::zero()
                }
            });
            let lc = cs.var(v);
            cs.boolean(lc, label("exp k bit", b));
            v
        })
        .collect();
    let mut rem = t;
    for (b, v) in kbits.iter().enumerate() {
        cs.add(&mut rem, *v, -fr_i128(l << b));
    }
    let rem_terms = rem.terms.clone();
    decompose(cs, rem_value as u128, nl, pow2, ("exp r >= 0", i), |t| {
        t.extend(rem_terms.iter().copied())
    });
    decompose(
        cs,
        (l - 1 - rem_value) as u128,
        nl,
        pow2,
        ("exp r < L", i),
        |t| {
            t.extend(rem_terms.iter().map(|(v, c)| (*v, -*c)));
            t.push((Var::One, fr_i128(l - 1)));
        },
    );
    // Horner: p = a4; p = requant(p * rem) + a_j.
    let a = gadgets::exp_coefficients(s);
    let half = 1i128 << (s - 1);
    let step_bits = gadgets::exp_step_bits(s);
    let mp = s + 1;
    let mut p_value = a[a.len() - 1];
    let mut p: Option<Lc> = None; // None: the constant p_value
    for (step, c) in a[..a.len() - 1].iter().rev().enumerate() {
        let prod_value = p_value * rem_value;
        let prod = match &p {
            None => {
                let mut lc = rem.clone();
                lc.terms
                    .iter_mut()
                    .for_each(|(_, k)| *k *= fr_i128(p_value));
                lc.value *= fr_i128(p_value);
                lc
            }
            Some(p_lc) => {
                let step = label("exp horner product", step as u32);
                let w = product(cs, (p_lc.clone(), rem.clone()), prod_value, step);
                cs.var(w)
            }
        };
        // z = prod + half + 2^(mp + s): its bits s.. are floor((prod + half) / 2^s) + 2^mp.
        let offset = half + (1i128 << (mp + s));
        let z = (prod_value + offset) as u128;
        let prod_terms = prod.terms.clone();
        let bits = decompose(cs, z, step_bits, pow2, ("exp horner step", i), |t| {
            t.extend(prod_terms.iter().copied());
            t.push((Var::One, fr_i128(offset)));
        });
        let mut next = Lc::default();
        for tb in s..step_bits {
            cs.add(&mut next, bits[(tb - 1) as usize], pow2[(tb - s) as usize]);
        }
        cs.add(&mut next, Var::One, fr_i128(*c - (1i128 << mp)));
        p_value = ((prod_value + half) >> s) + c;
        p = Some(next);
    }
    let p = p.expect("the polynomial has degree >= 1");
    // 2^k_low and the flag that no high bit of k is set.
    let low = kb.min(gadgets::EXP_SHIFT_BITS) as usize;
    let factor = |cs: &R1cs, b: Var, f: i128| {
        // 1 + b (f - 1)
        let mut lc = cs.constant(Fr::one());
        cs.add(&mut lc, b, fr_i128(f - 1));
        lc
    };
    let mut pow_value = 1i128;
    let mut pow = factor(cs, kbits[0], 2);
    pow_value <<= k_value & 1;
    for (bi, b) in kbits.iter().enumerate().take(low).skip(1) {
        let f = factor(cs, *b, 1i128 << (1 << bi));
        pow_value <<= ((k_value >> bi) & 1) << bi;
        let w = product(cs, (pow, f), pow_value, label("exp 2^k", bi as u32));
        pow = cs.var(w);
    }
    let high_set = (k_value >> low) != 0;
    let nz = none_set(
        cs,
        &kbits[low..],
        (k_value >> low) as u128,
        ("exp k < 16", i, low),
    );
    // y0 = floor(p / 2^k_low): y0 2^k_low <= p < (y0 + 1) 2^k_low.
    let y0_value = if values { p_value / pow_value } else { 0 };
    // A claimed y is y0 itself when no high bit is set (a test's tampering shows here).
    let y0_value = if high_set || !values {
        y0_value
    } else {
        y_claim
    };
    let y0 = cs.witness(|| fr_i128(y0_value));
    let y0_lc = cs.var(y0);
    let prod2 = product(
        cs,
        (y0_lc.clone(), pow.clone()),
        y0_value * pow_value,
        label("exp y0 2^k", 0),
    );
    let nb = gadgets::exp_shift_rem_bits(low as u32);
    let rem2_value = p_value - y0_value * pow_value;
    let mut rem2 = p.clone();
    cs.add(&mut rem2, prod2, -Fr::one());
    let rem2_terms = rem2.terms.clone();
    decompose(
        cs,
        rem2_value.max(0) as u128,
        nb,
        pow2,
        ("exp p - y 2^k >= 0", i),
        |t| t.extend(rem2_terms.iter().copied()),
    );
    let pow_terms = pow.terms.clone();
    let top = (pow_value - 1 - rem2_value).max(0) as u128;
    decompose(cs, top, nb, pow2, ("exp p - y 2^k < 2^k", i), |t| {
        t.extend(pow_terms.iter().copied());
        t.extend(rem2_terms.iter().map(|(v, c)| (*v, -*c)));
        t.push((Var::One, -Fr::one()));
    });
    match nz {
        None => y0_lc,
        Some(nz) => {
            let y_value = if high_set { 0 } else { y0_value };
            let y = product(cs, (y0_lc, nz), y_value, label("exp y = y0 (k < 16)", 0));
            cs.var(y)
        }
    }
}

/// The erf gadget on row `i` (see [`crate::gadgets`]), from its ReLU'd value r = max(q, 0),
/// its value q and its sign bit (and q's value, and the claimed y, when proving). Returns y.
fn erf_row(
    cs: &mut R1cs,
    seg: &Layer,
    (i, m): (usize, u32),
    (r, q, sign): (Lc, Lc, Lc),
    (q_value, y_claim): (i128, i128),
    pow2: &[Fr],
) -> Lc {
    let s = seg.act_scale;
    let label = |what: &'static str, j: u32| Label {
        what,
        i: i as u32,
        j,
    };
    let (ub, low, high) = Gadget::erf_bits(s, m);
    let rb = s - gadgets::ERF_PIECE_LOG;
    // u = |q| = 2 r - q, and its bits.
    let u_value = q_value.unsigned_abs();
    let mut u = r.clone();
    u.terms.iter_mut().for_each(|(_, c)| *c = c.double());
    u.value = u.value.double();
    for (v, c) in q.terms.iter() {
        if cs.wants_terms() {
            u.terms.push((*v, -*c));
        }
    }
    u.value -= q.value;
    let u_terms = u.terms.clone();
    let bits = decompose(cs, u_value, ub, pow2, ("erf |q| bit", i), |t| {
        t.extend(u_terms.iter().copied())
    });
    // j's bits are u's bits rb.. (bits[t - 1] is bit t); r' = u less them.
    let jbits: Vec<Var> = (rb..ub).map(|t| bits[(t - 1) as usize]).collect();
    let mut rem = u;
    for (b, v) in jbits.iter().enumerate() {
        cs.add(&mut rem, *v, -pow2[rb as usize + b]);
    }
    let rem_value = (u_value & ((1u128 << rb) - 1)) as i128;
    let j_value = (u_value >> rb) as usize;
    let bit_value = |b: usize| (j_value >> b) & 1;
    // Every product of two or more of j's low bits, indexed by the subset's mask.
    let n_pieces = 1usize << low;
    let mut monomials: Vec<Lc> = Vec::with_capacity(n_pieces);
    let mut mono_values: Vec<i128> = Vec::with_capacity(n_pieces);
    for mask in 0..n_pieces {
        if mask == 0 {
            monomials.push(cs.constant(Fr::one()));
            mono_values.push(1);
            continue;
        }
        let top = usize::BITS - 1 - mask.leading_zeros();
        let rest = mask ^ (1 << top);
        let bit = cs.var(jbits[top as usize]);
        let value = mono_values[rest] * bit_value(top as usize) as i128;
        if rest == 0 {
            monomials.push(bit);
        } else {
            let w = product(
                cs,
                (monomials[rest].clone(), bit),
                value,
                label("erf piece select", mask as u32),
            );
            monomials.push(cs.var(w));
        }
        mono_values.push(value);
    }
    // Each coefficient as a combination of the monomials: the Moebius transform of its
    // column of the pieces' table (pieces past 2^low are unreachable).
    let degree = gadgets::ERF_POLY[0].len() - 1;
    let table: Vec<[i128; 4]> = (0..n_pieces)
        .map(|j| gadgets::erf_coefficients(s, j))
        .collect();
    let coefficient = |cs: &R1cs, d: usize| {
        let mut mobius: Vec<i128> = table.iter().map(|c| c[d]).collect();
        for b in 0..low {
            for mask in 0..n_pieces {
                if mask & (1 << b) != 0 {
                    mobius[mask] -= mobius[mask ^ (1 << b)];
                }
            }
        }
        let mut lc = Lc::default();
        for (mono, k) in monomials.iter().zip(&mobius) {
            if *k != 0 {
                let k = fr_i128(*k);
                if cs.wants_terms() {
                    lc.terms
                        .extend(mono.terms.iter().map(|(v, c)| (*v, *c * k)));
                }
                lc.value += mono.value * k;
            }
        }
        lc
    };
    // The piece the low bits pick (a saturated |q| still evaluates one, then discards it).
    let piece = table[j_value & (n_pieces - 1)];
    // Horner: p = c_3; p = requant(p * r') + c_d.
    let half = 1i128 << (s - 1);
    let step_bits = gadgets::erf_step_bits(s);
    let offset = half + (1i128 << (2 * s));
    let mut p = coefficient(cs, degree);
    let mut p_value = piece[degree];
    for d in (0..degree).rev() {
        let prod_value = p_value * rem_value;
        let step = label("erf horner product", d as u32);
        let w = product(cs, (p, rem.clone()), prod_value, step);
        let z = (prod_value + offset) as u128;
        let bits = decompose(cs, z, step_bits, pow2, ("erf horner step", i), |t| {
            t.push((w, Fr::one()));
            t.push((Var::One, fr_i128(offset)));
        });
        let mut next = coefficient(cs, d);
        for tb in s..step_bits {
            cs.add(&mut next, bits[(tb - 1) as usize], pow2[(tb - s) as usize]);
        }
        cs.add(&mut next, Var::One, -fr_i128(1i128 << s));
        p_value = ((prod_value + half) >> s) + piece[d];
        p = next;
    }
    // |y|: P below 4, 2^s from 4 up (a high bit of j set).
    let one = 1i128 << s;
    let saturated = j_value >> low != 0;
    let abs = if high == 0 {
        p
    } else {
        let low = low as usize;
        let nz = none_set(
            cs,
            &jbits[low..],
            (j_value >> low) as u128,
            ("erf |q| < 4", i, low),
        )
        .expect("high > 0");
        // |y| = 2^s + nz (P - 2^s).
        let mut dp = p;
        cs.add(&mut dp, Var::One, -fr_i128(one));
        let picked = if saturated { 0 } else { p_value - one };
        let w = product(cs, (nz, dp), picked, label("erf saturate", 0));
        let mut abs = cs.var(w);
        cs.add(&mut abs, Var::One, fr_i128(one));
        abs
    };
    // y = (2 sign - 1) |y|; the claimed y enters here.
    let mut pm = sign.clone();
    pm.terms.iter_mut().for_each(|(_, c)| *c = c.double());
    pm.value = pm.value.double();
    cs.add(&mut pm, Var::One, -Fr::one());
    let y = product(cs, (pm, abs), y_claim, label("erf y = sign |y|", 0));
    cs.var(y)
}

/// The flag that none of `bits` is set, prod (1 - b): one product per bit after the first
/// (None for no bits). `value` is the bits' value when proving; the products are labelled
/// `what` on row `i`, indexed from `first`.
fn none_set(
    cs: &mut R1cs,
    bits: &[Var],
    value: u128,
    (what, i, first): (&'static str, usize, usize),
) -> Option<Lc> {
    let mut flag: Option<Lc> = None;
    for (t, b) in bits.iter().enumerate() {
        let mut f = cs.constant(Fr::one());
        cs.add(&mut f, *b, -Fr::one());
        flag = Some(match flag {
            None => f,
            Some(prev) => {
                let clear = value & ((1u128 << (t + 1)) - 1) == 0;
                let label = Label {
                    what,
                    i: i as u32,
                    j: (first + t) as u32,
                };
                let w = product(cs, (prev, f), clear as i128, label);
                cs.var(w)
            }
        });
    }
    flag
}

/// One constraint per public word: word = sum_t value_t * 2^(bits * t), over `count` values.
fn pack_words(
    cs: &mut R1cs,
    (words, tied): (&[Var], &HashMap<usize, Var>),
    count: usize,
    range: Range,
    pow2: &[Fr],
    what: &'static str,
    value: impl Fn(&R1cs, usize) -> Lc,
) {
    let per = per_word(range.bits);
    for (e, word) in words.iter().enumerate() {
        if let Some(input) = tied.get(&e) {
            // A verbatim word: equal to its input word.
            let (w, v, one) = (cs.var(*word), cs.var(*input), cs.constant(Fr::one()));
            cs.enforce(
                w,
                one,
                v,
                Label {
                    what: "verbatim word",
                    i: e as u32,
                    j: 0,
                },
            );
            continue;
        }
        let mut packed = Lc::default();
        let mut constant = Fr::zero();
        for idx in e * per..((e + 1) * per).min(count) {
            let lc = value(cs, idx);
            let coeff = pow2[(idx - e * per) * range.bits as usize];
            if cs.wants_terms() {
                for (v, c) in &lc.terms {
                    match v {
                        Var::One => constant += *c * coeff,
                        _ => packed.terms.push((*v, *c * coeff)),
                    }
                }
            }
            packed.value += lc.value * coeff;
        }
        if cs.wants_terms() && !constant.is_zero() {
            packed.terms.push((Var::One, constant));
        }
        let w = cs.var(*word);
        let one = cs.constant(Fr::one());
        cs.enforce(
            w,
            one,
            packed,
            Label {
                what,
                i: e as u32,
                j: 0,
            },
        );
    }
}
