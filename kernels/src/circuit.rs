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
//! Constraints per segment: n_in * b_in + pairs + sum_i k_i (copies excluded) + ReLU rows
//! + output words (none when every row has a ReLU) + 1.

use std::collections::HashMap;

use ark_bn254::Fr;
use ark_ff::{AdditiveGroup, Field, One, Zero};

use crate::model::{Range, Segment};
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
        let (n_in, n_out) = (seg.n_in(), seg.n_out());
        let b_in = seg.input.bits as usize;
        // Rows copied from the input are not decomposed.
        let (mut k, mut decomposed) = (0, 0);
        // Reciprocal square roots: a ReLU (1) and the checks' bits, plus y, y^2, y^2 q
        // and y q (witnesses) and their three products (constraints).
        let (mut rsqrt_c, mut rsqrt_w) = (0, 0);
        for (i, m) in seg.row_q_bits().into_iter().enumerate() {
            if seg.copy_of(i).is_none() {
                k += seg.row_acc_bits(m) as usize;
                decomposed += 1;
            }
            if seg.rsqrt(i) {
                let (ny, nc, nh) = seg.rsqrt_widths(m);
                let bits = (ny + nc + nh) as usize;
                rsqrt_c += 1 + bits + 3;
                rsqrt_w += 1 + (bits - 3) + 4;
            }
        }
        let words_in = n_in.div_ceil(per_word(seg.input.bits));
        let words_out = n_out.div_ceil(per_word(seg.output.bits));
        // All ReLU: one constraint and one witness per output, less the word starts, which
        // are defined from the public words. Otherwise: one constraint and one witness per
        // ReLU row, and one packing constraint per output word.
        let (relu_c, relu_w, pack_c) = if seg.all_relu() {
            (n_out, n_out - words_out, 0)
        } else {
            (seg.relu_rows, seg.relu_rows, words_out)
        };
        let pairs = seg.product_pairs().len();
        CircuitShape {
            constraints: n_in * b_in + pairs + k + relu_c + rsqrt_c + pack_c + 1,
            public_inputs: words_in + words_out + 1,
            witnesses: (n_in - words_in)
                + n_in * (b_in - 1)
                + pairs
                + (k - decomposed)
                + relu_w
                + rsqrt_w
                + 1,
        }
    }
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
    let mut v = pack(input, seg.input);
    v.extend(pack(output, seg.output));
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
    let claimed: &[i64] = assignment.and_then(|a| a.claimed_output).unwrap_or(&truth);

    // Public inputs.
    let words_in = if values {
        pack(x, seg.input)
    } else {
        Vec::new()
    };
    let words_out = if values {
        pack(claimed, seg.output)
    } else {
        Vec::new()
    };
    let n_words_in = seg.n_in().div_ceil(per_word(seg.input.bits));
    let n_words_out = seg.n_out().div_ceil(per_word(seg.output.bits));
    let pin: Vec<Var> = (0..n_words_in)
        .map(|e| cs.instance(|| words_in[e]))
        .collect();
    let pout: Vec<Var> = (0..n_words_out)
        .map(|e| cs.instance(|| words_out[e]))
        .collect();
    let bind = cs.instance(|| binding);

    let xs = input_values(&mut cs, seg, x, &pin, &pow2);
    input_range_checks(&mut cs, seg, x, &xs, &pow2);
    let products = products(&mut cs, seg, x, &xs);

    // Outputs: accumulator decomposition, requantization, ReLU. A ReLU segment's outputs are
    // defined through the public words (see `word_values`), so they need no packing
    // constraint; otherwise each output word gets one.
    let ys = if seg.all_relu() {
        word_values(&mut cs, &pout, seg.n_out(), seg.output, &pow2, |i| {
            fr_i128(truth[i] as i128)
        })
    } else {
        (0..seg.relu_rows)
            .map(|i| {
                let y = cs.witness(|| fr_i128(truth[i] as i128));
                cs.var(y)
            })
            .collect()
    };
    let outs: Vec<Lc> = seg
        .row_q_bits()
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if let Some(j) = seg.copy_of(i) {
                // x_j - lo_out: x_j is range-checked as an input, and the output range
                // holds the input range (q_bits covers this row).
                let mut lc = xs[j].clone();
                cs.add(&mut lc, Var::One, fr_i128(-seg.output.lo()));
                return lc;
            }
            let acc = accs.get(i).copied();
            if seg.rsqrt(i) {
                // max(q, 1) - 1 through the ReLU gadget, then the witness-and-check.
                let q1 = acc.map(|a| (a + (1i128 << (seg.shift - 1))) >> seg.shift);
                let r = q1.unwrap_or(0).max(0);
                let rv = cs.witness(|| fr_i128(r));
                let r_lc = cs.var(rv);
                let row = Row {
                    xs: &xs,
                    products: &products,
                    relu_out: Some(&r_lc),
                    acc,
                };
                let r_lc = output_row(&mut cs, seg, (i, m), row, &pow2);
                // y is what the prover claims (the truth unless a test tampers with it).
                let y = claimed.get(i).map(|v| *v as i128).unwrap_or(0);
                return rsqrt_row(&mut cs, seg, (i, m), r_lc, (r, y), &pow2);
            }
            let row = Row {
                xs: &xs,
                products: &products,
                relu_out: ys.get(i),
                acc,
            };
            output_row(&mut cs, seg, (i, m), row, &pow2)
        })
        .collect();
    if !seg.all_relu() {
        pack_words(
            &mut cs,
            &pout,
            seg.n_out(),
            seg.output,
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

/// The values packed into public words, as linear combinations. Every value is a witness
/// except the first of each word, which is defined from the word itself:
/// v_0 = word + lo - sum_{t>=1} (v_t - lo) 2^(bits t). That makes the packing hold by
/// construction (no constraint per word); the range checks on every value, v_0 included,
/// keep the decomposition unique.
fn word_values(
    cs: &mut R1cs,
    words: &[Var],
    count: usize,
    range: Range,
    pow2: &[Fr],
    value: impl Fn(usize) -> Fr,
) -> Vec<Lc> {
    let per = per_word(range.bits);
    let lo = fr_i128(range.lo());
    let vars: Vec<Option<Var>> = (0..count)
        .map(|j| (j % per != 0).then(|| cs.witness(|| value(j))))
        .collect();
    (0..count)
        .map(|j| match vars[j] {
            Some(v) => cs.var(v),
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

/// The segment inputs as linear combinations over the public input words.
fn input_values(cs: &mut R1cs, seg: &Segment, x: &[i64], pin: &[Var], pow2: &[Fr]) -> Vec<Lc> {
    word_values(cs, pin, seg.n_in(), seg.input, pow2, |j| {
        fr_i128(x[j] as i128)
    })
}

/// Exact range check of every input: b_in boolean constraints on the bits of x_j - lo.
fn input_range_checks(cs: &mut R1cs, seg: &Segment, x: &[i64], xs: &[Lc], pow2: &[Fr]) {
    let b = seg.input.bits;
    let lo = seg.input.lo();
    let values = cs.wants_values();
    for (j, xj) in xs.iter().enumerate() {
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
fn products(cs: &mut R1cs, seg: &Segment, x: &[i64], xs: &[Lc]) -> HashMap<(u32, u32), Var> {
    let values = cs.wants_values();
    seg.product_pairs()
        .into_iter()
        .map(|(a, b)| {
            let p = cs.witness(|| {
                if values {
                    fr_i128(x[a as usize] as i128 * x[b as usize] as i128)
                } else {
                    Fr::zero()
                }
            });
            let out = cs.var(p);
            cs.enforce(
                xs[a as usize].clone(),
                xs[b as usize].clone(),
                out,
                Label {
                    what: "product",
                    i: a,
                    j: b,
                },
            );
            ((a, b), p)
        })
        .collect()
}

/// One output row `i` whose requantized value needs `m` magnitude bits: decomposes the
/// offset accumulator and returns (output - output range lo) as an Lc.
fn output_row(
    cs: &mut R1cs,
    seg: &Segment,
    (i, m): (usize, u32),
    Row {
        xs,
        products,
        relu_out,
        acc,
    }: Row,
    pow2: &[Fr],
) -> Lc {
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
    if !seg.relu(i) && !seg.rsqrt(i) {
        // q + 2^m_row, shifted to the segment-wide range: q - lo = q + 2^q_bits.
        let mut lc = high(cs, k);
        let shift = (1i128 << seg.q_bits) - (1i128 << m);
        if shift != 0 {
            cs.add(&mut lc, Var::One, fr_i128(shift));
        }
        return lc;
    }
    let q_low = high(cs, k - 1); // q when the sign bit is set
    let y = relu_out
        .expect("ReLU segments pass their output values")
        .clone();
    let sign = cs.var(bits[(k - 2) as usize]);
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
    if seg.all_relu() || seg.rsqrt(i) {
        return y;
    }
    // A ReLU row among carried ones: shifted to the segment-wide signed range.
    let mut lc = y;
    cs.add(&mut lc, Var::One, fr_i128(1i128 << seg.q_bits));
    lc
}

/// Reciprocal square root of row `i`, from r = max(q, 1) - 1 (its value `r_value` when
/// proving, and the claimed y): q' = r + 1, and y = floor(sqrt(C / q')), C = 2^(3s), is the only
/// integer in [0, 2^ny) with y^2 q' <= C < (y + 1)^2 q'. Both inequalities are bit
/// decompositions of C - y^2 q' and (y + 1)^2 q' - C - 1 = y^2 q' + 2 y q' + q' - C - 1,
/// too short to wrap the field. Returns y - lo_out.
fn rsqrt_row(
    cs: &mut R1cs,
    seg: &Segment,
    (i, m): (usize, u32),
    r: Lc,
    (r_value, y): (i128, i128),
    pow2: &[Fr],
) -> Lc {
    let (ny, nc, nh) = seg.rsqrt_widths(m);
    let c = 1i128 << (3 * seg.rsqrt_scale);
    let q = r_value + 1;
    let mut qp = r;
    cs.add(&mut qp, Var::One, Fr::one());
    let label = |what: &'static str| Label {
        what,
        i: i as u32,
        j: 0,
    };
    let yv = cs.witness(|| fr_i128(y));
    let y_lc = cs.var(yv);
    decompose(cs, y as u128, ny, pow2, ("rsqrt bit", i), |t| {
        t.extend(y_lc.terms.iter().copied())
    });
    let y2 = cs.witness(|| fr_i128(y * y));
    let a = cs.witness(|| fr_i128(y * y * q));
    let b = cs.witness(|| fr_i128(y * q));
    let (y2_lc, a_lc, b_lc) = (cs.var(y2), cs.var(a), cs.var(b));
    cs.enforce(
        y_lc.clone(),
        y_lc.clone(),
        y2_lc.clone(),
        label("rsqrt y^2"),
    );
    cs.enforce(y2_lc, qp.clone(), a_lc, label("rsqrt y^2 q"));
    cs.enforce(y_lc.clone(), qp.clone(), b_lc, label("rsqrt y q"));
    let low = (c - y * y * q).max(0) as u128;
    decompose(cs, low, nc, pow2, ("rsqrt y^2 q <= C", i), |t| {
        t.push((a, -Fr::one()));
        t.push((Var::One, fr_i128(c)));
    });
    let high = ((y + 1) * (y + 1) * q - c - 1).max(0) as u128;
    decompose(cs, high, nh, pow2, ("rsqrt (y + 1)^2 q > C", i), |t| {
        t.push((a, Fr::one()));
        t.push((b, Fr::from(2u64)));
        t.extend(qp.terms.iter().copied());
        t.push((Var::One, fr_i128(-c - 1)));
    });
    let mut out = y_lc;
    cs.add(&mut out, Var::One, fr_i128(-seg.output.lo()));
    out
}

/// One constraint per public word: word = sum_t value_t * 2^(bits * t), over `count` values.
fn pack_words(
    cs: &mut R1cs,
    words: &[Var],
    count: usize,
    range: Range,
    pow2: &[Fr],
    what: &'static str,
    value: impl Fn(&R1cs, usize) -> Lc,
) {
    let per = per_word(range.bits);
    for (e, word) in words.iter().enumerate() {
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
