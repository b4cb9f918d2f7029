//! The provnet model: a quantized integer graph split into provable segments.
//!
//! Fixed point with scale 2^s: a real value v is the integer round(v * 2^s). A segment's
//! weights use scale 2^w, its biases 2^(s+w) (the accumulator's), where w = s plus up to
//! [`MAX_EXTRA_WEIGHT_BITS`] more for a layer whose weights are all small (a pooling folded
//! into the layer after it divides them by the window), so small weights keep their
//! precision. Each layer computes, exactly, `acc = W x + b`, `q = floor((acc + 2^(w-1)) /
//! 2^w)` (round half up; `w` is the segment's `shift`) and, if it has one, `y = max(q, 0)`.
//!
//! A segment is one layer of that kind, or (cuts placed by cost) a chain of them proven in
//! one circuit. Every tensor at a layer boundary has a power-of-two [`Range`] that the
//! circuit enforces (a segment's input by range checks, a merged cut by the layer that
//! computes it); a layer's output range is the next layer's input range, and the
//! accumulator width is derived from the input range and the weights by interval
//! arithmetic, so no value can wrap the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};
use crate::gadgets::Gadget;

/// Current on-disk model format version.
pub const MODEL_VERSION: u32 = 4;
/// File names inside a model directory.
pub const MODEL_FILE: &str = "model.cbor";
pub const SUMMARY_FILE: &str = "model.json";
/// Accumulators wider than this are refused at import (keeps i128 arithmetic and the field safe).
pub const MAX_ACC_BITS: u32 = 120;
/// Widest range of a value at a cut: values are i64.
pub const MAX_VALUE_BITS: u32 = 63;
/// Most bits a segment's weight scale may exceed the model's activation scale by: 8 for
/// small weights, 12 for the coefficients of products (see [`Segment::products`]), up to 20
/// where one would otherwise be off by more than 2^-9 (a LayerNorm's 1/D for D up to 4096).
pub const MAX_EXTRA_WEIGHT_BITS: u32 = 20;

/// A power-of-two integer range: signed is [-2^(bits-1), 2^(bits-1)), unsigned is [0, 2^bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub bits: u32,
    pub signed: bool,
}

impl Range {
    pub fn lo(&self) -> i128 {
        if self.signed {
            -(1i128 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest value in the range (inclusive).
    pub fn hi(&self) -> i128 {
        if self.signed {
            (1i128 << (self.bits - 1)) - 1
        } else {
            (1i128 << self.bits) - 1
        }
    }

    pub fn contains(&self, v: i128) -> bool {
        v >= self.lo() && v <= self.hi()
    }
}

/// A LayerNorm's bound among a layer's inputs, which the layer before it implies. Input
/// `inv` is that layer's Rsqrt row, y = floor(sqrt(2^(3s) / q')) where q' = max(q, f) and
/// q is the requantized (at 2^t, t its shift) accumulator of B + sum_k W_k x_k^2 (no
/// linear terms, B >= 0, every W_k > 0: a variance); each member (a, W_k) is an input
/// that carries one x_k of that sum unchanged. Then for any coefficients c_a
///
/// (y sum_a c_a x_a)^2 <= (sum_a c_a^2 / W_a) 2^(t + 3s) (1 + 1 / (2f)),
///
/// because sum_k W_k x_k^2 <= acc < 2^t (q' + 1/2) (rounding half up, and q' >= q),
/// y^2 q' <= 2^(3s) (the gadget's own check), y^2 <= 2^(3s) / f, and Cauchy-Schwarz
/// weighted by W. So a LayerNorm's output (centred values times the inverse standard
/// deviation, and every affine map of them) is bounded by about sqrt(D) 2^(2s) times the
/// map's weights' 2-norm, not by the corners of its inputs' box: that is what sizes the
/// rows after a LayerNorm ([`Layer::row_q_bits`]). The bound holds for every state the
/// model reaches; the circuit does not rely on it for soundness (each row's decomposition
/// enforces its own width), and [`Segment::check_input`] refuses a segment input that
/// breaks it (a state no run of the model produces) before proving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Norm {
    /// The input holding the inverse standard deviation y.
    pub inv: u32,
    /// (input index, W): inputs carrying the variance's terms, each term once.
    pub members: Vec<(u32, i64)>,
    /// t + 3s.
    pub bits: u32,
    /// The Rsqrt's floor f >= 1.
    pub floor: i64,
}

impl Norm {
    /// The bound on |y sum_a c_a x_a| for `coeffs` (member index into `members`, c_a),
    /// rounded up; `None` when it does not fit an i128.
    fn cap(&self, coeffs: &HashMap<usize, i128>) -> Option<i128> {
        let s: f64 = coeffs
            .iter()
            .map(|(m, c)| (*c as f64).powi(2) / self.members[*m].1 as f64)
            .sum();
        let square = s * 2f64.powi(self.bits as i32) * (1.0 + 0.5 / self.floor as f64);
        // f64 rounding is relative 2^-52 per step: a 2^-40 margin and one unit cover it.
        let cap = (square.sqrt() * (1.0 + 2f64.powi(-40))).ceil() + 1.0;
        (cap < 2f64.powi(120)).then_some(cap as i128)
    }
}

/// The LayerNorm bounds (see [`Norm`]) that `prev`'s outputs hold, for the layer after it:
/// one per Rsqrt row of `prev` over a sum of squares, with the inputs it carries unchanged.
pub fn norms_after(prev: &Layer) -> Vec<Norm> {
    // Each carried input's first copy among the outputs.
    let mut copies: HashMap<usize, u32> = HashMap::new();
    for a in 0..prev.n_out() {
        if let Some(k) = prev.copy_of(a) {
            copies.entry(k).or_insert(a as u32);
        }
    }
    let mut out = Vec::new();
    // A bound among prev's own inputs still holds where prev copies them unchanged (a
    // layer cut into parts carries its input, LayerNorm values included, from part to
    // part). Members without a copy drop out: a sum over fewer of the W_k x_k^2 is smaller.
    for norm in &prev.norms {
        let Some(&inv) = copies.get(&(norm.inv as usize)) else {
            continue;
        };
        let members: Vec<(u32, i64)> = norm
            .members
            .iter()
            .filter_map(|(k, w)| copies.get(&(*k as usize)).map(|a| (*a, *w)))
            .collect();
        if !members.is_empty() {
            out.push(Norm {
                inv,
                members,
                ..norm.clone()
            });
        }
    }
    for b in 0..prev.n_out() {
        let products = prev.row_products(b);
        if prev.gadget_at(b) != Some(Gadget::Rsqrt)
            || !prev.rows[b].is_empty()
            || prev.bias[b] < 0
            || products.is_empty()
            || products.iter().any(|(x, y, w)| x != y || *w <= 0)
        {
            continue;
        }
        let mut weights: std::collections::BTreeMap<u32, i64> = Default::default();
        let mut ok = true;
        for (k, _, w) in products {
            let e = weights.entry(*k).or_insert(0);
            match e.checked_add(*w) {
                Some(v) => *e = v,
                None => ok = false,
            }
        }
        let members: Vec<(u32, i64)> = weights
            .into_iter()
            .filter_map(|(k, w)| copies.get(&(k as usize)).map(|a| (*a, w)))
            .collect();
        if ok && !members.is_empty() {
            out.push(Norm {
                inv: b as u32,
                members,
                bits: prev.shift + 3 * prev.act_scale,
                floor: prev.gadget_floor,
            });
        }
    }
    out
}

/// One provable segment: a chain of layers proven together, between two cuts. Its input
/// is the first layer's, its output (and the state at its output cut) the last's; the
/// values between its layers are witnesses, bounded by the layer that computes them, so
/// a merged cut costs no range check and no public input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub index: usize,
    pub layers: Vec<Layer>,
}

impl Segment {
    pub fn first(&self) -> &Layer {
        &self.layers[0]
    }

    pub fn last(&self) -> &Layer {
        self.layers.last().expect("a segment has a layer")
    }

    pub fn n_in(&self) -> usize {
        self.first().n_in()
    }

    pub fn n_out(&self) -> usize {
        self.last().n_out()
    }

    /// The range the segment's input words pack.
    pub fn input(&self) -> Range {
        self.first().input
    }

    /// The range the segment's output words pack.
    pub fn output(&self) -> Range {
        self.last().output
    }

    pub fn in_shape(&self) -> &[usize] {
        &self.first().in_shape
    }

    pub fn out_shape(&self) -> &[usize] {
        &self.last().out_shape
    }

    /// The input's ranges, in runs (see [`Layer::in_ranges`]).
    pub fn in_ranges(&self) -> &[(u32, Range)] {
        &self.first().in_ranges
    }

    /// The tensors of the state at the output cut.
    pub fn state(&self) -> &[(String, Vec<usize>)] {
        &self.last().state
    }

    /// ONNX ops covered, in order (a node spanning several merged layers, once).
    pub fn ops(&self) -> Vec<String> {
        self.covered().into_iter().map(|(op, _)| op).collect()
    }

    /// ONNX node names covered (each once, as [`Self::ops`]).
    pub fn nodes(&self) -> Vec<String> {
        self.covered().into_iter().map(|(_, node)| node).collect()
    }

    /// (op, node) pairs in order, a node recorded by consecutive layers kept once.
    fn covered(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for layer in &self.layers {
            for (op, node) in layer.ops.iter().zip(&layer.nodes) {
                if out.last().is_none_or(|(_, n)| n != node) {
                    out.push((op.clone(), node.clone()));
                }
            }
        }
        out
    }

    /// Each input value's range.
    pub fn input_ranges(&self) -> Vec<Range> {
        self.first().input_ranges()
    }

    /// Each input value's (lo, hi).
    pub fn input_bounds(&self) -> Vec<(i128, i128)> {
        self.first().input_bounds()
    }

    /// The output's ranges, per state tensor.
    pub fn out_ranges(&self) -> Vec<(u32, Range)> {
        self.last().out_ranges()
    }

    /// Exact integer evaluation of every layer in turn. `x` must already be in range.
    pub fn eval(&self, x: &[i64]) -> Vec<i64> {
        self.layer_values(x).pop().expect("a segment has a layer")
    }

    /// Each layer's output in turn, from the segment input `x`.
    pub fn layer_values(&self, x: &[i64]) -> Vec<Vec<i64>> {
        let mut out: Vec<Vec<i64>> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let y = layer.eval(out.last().map_or(x, Vec::as_slice));
            out.push(y);
        }
        out
    }

    /// Checks a tensor against this segment's input length and range, and that it is a
    /// state the model can reach (its LayerNorm bounds hold): what a prover checks before
    /// it commits work to an input.
    pub fn check_input(&self, x: &[i64]) -> Result<()> {
        self.check_ranges(x)?;
        self.first().check_norms(x).map_err(|row| {
            KernelError::Input(format!(
                "segment {} input is not a state the model reaches: its LayerNorm values and \
                 inverse standard deviations disagree (row {row} overflows the width they bound)",
                self.index
            ))
        })
    }

    /// Checks a tensor against this segment's input length and range only: all a verifier
    /// needs (a state that breaks a LayerNorm bound has no proof, since the circuit enforces
    /// every row's width), and linear in the input rather than in the weights.
    pub fn check_ranges(&self, x: &[i64]) -> Result<()> {
        if x.len() != self.n_in() {
            return Err(KernelError::Input(format!(
                "segment {} takes {} values (shape {:?}), got {}",
                self.index,
                self.n_in(),
                self.in_shape(),
                x.len()
            )));
        }
        let ranges = self.input_ranges();
        if let Some((i, v)) = x
            .iter()
            .enumerate()
            .find(|(i, v)| !ranges[*i].contains(**v as i128))
        {
            return Err(KernelError::Input(format!(
                "segment {} input[{i}] = {v} is outside its range [{}, {}]",
                self.index,
                ranges[i].lo(),
                ranges[i].hi()
            )));
        }
        Ok(())
    }
}

/// One layer: affine map (with products of two inputs), requantization, then ReLU or a
/// gadget on its first rows; the rest are carried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// ONNX ops covered, in order.
    pub ops: Vec<String>,
    /// ONNX node names covered.
    pub nodes: Vec<String>,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    pub input: Range,
    pub output: Range,
    /// The input's ranges, in runs (count, range) over its values, each within `input`
    /// (which packs them): the previous cut's tensors' own ranges, so a narrow tensor
    /// (softmax weights, a norm's inverse) is checked, and bounds products, as narrow.
    pub in_ranges: Vec<(u32, Range)>,
    /// Per output: (input index, integer weight at scale 2^s).
    pub rows: Vec<Vec<(u32, i64)>>,
    /// Per output: integer bias at scale 2^(2s).
    pub bias: Vec<i64>,
    /// Per output (or empty when no row has any): products of two inputs, (a, b, c) adding
    /// c * x_a * x_b to the accumulator. x_a * x_b has scale 2^(2s), so c has scale
    /// 2^(shift - s): the coefficient of an activation times an activation (attention's
    /// Q K^T and P V, a gate) times what the affine ops after it folded in.
    pub products: Vec<Vec<(u32, u32, i64)>>,
    /// Requantization shift s.
    pub shift: u32,
    /// The first `relu_rows` outputs pass through ReLU; the rest (tensors carried across
    /// the cut, a residual stream) are requantized only.
    pub relu_rows: usize,
    /// The first `gadget_rows` outputs end in `gadget` instead (a segment has ReLU rows or
    /// these, not both): see [`crate::gadgets`].
    pub gadget: Option<Gadget>,
    pub gadget_rows: usize,
    /// The inverse powers' floor f >= 1: their input is max(q, f).
    pub gadget_floor: i64,
    /// The model's activation scale bits s, which the gadgets work at.
    pub act_scale: u32,
    /// The output state's tensors, in order: (ONNX name, shape). One tensor for a chain;
    /// more where a residual stream or another branch is live across the cut.
    pub state: Vec<(String, Vec<usize>)>,
    /// Output magnitude bits m: the requantized value q lies in [-2^m, 2^m).
    pub q_bits: u32,
    /// The LayerNorm bounds among this layer's inputs that the layer before implies
    /// ([`norms_after`] of it; none for a model's first layer).
    pub norms: Vec<Norm>,
}

impl Layer {
    pub fn n_in(&self) -> usize {
        self.in_shape.iter().product()
    }

    pub fn n_out(&self) -> usize {
        self.rows.len()
    }

    /// Widest accumulator the circuit decomposes: s + m + 1.
    pub fn acc_bits(&self) -> u32 {
        self.row_acc_bits(self.q_bits)
    }

    /// Bits of an accumulator whose requantized value needs `m` magnitude bits: s + m + 1.
    pub fn row_acc_bits(&self, m: u32) -> u32 {
        self.shift + m + 1
    }

    /// Offset added to such an accumulator so that it is non-negative and its top bit is the
    /// sign of the requantized value: 2^(s-1) (rounding) + 2^(m+s).
    pub fn row_acc_offset(&self, m: u32) -> i128 {
        (1i128 << (self.shift - 1)) + (1i128 << (m + self.shift))
    }

    /// Per output row, the magnitude bits m_i of its requantized value over all in-range
    /// inputs (exact interval arithmetic on that row's weights). Each row's accumulator is
    /// decomposed into only s + m_i + 1 bits; `q_bits` is their maximum.
    pub fn row_q_bits(&self) -> Vec<u32> {
        let bounds = self.input_bounds();
        let half = 1i128 << (self.shift - 1);
        // Per input: the norm it is the inverse of, or (norm, member) it is a member of.
        let inv: HashMap<u32, usize> = self
            .norms
            .iter()
            .enumerate()
            .map(|(n, norm)| (norm.inv, n))
            .collect();
        let member: HashMap<(usize, u32), usize> = self
            .norms
            .iter()
            .enumerate()
            .flat_map(|(n, norm)| {
                norm.members
                    .iter()
                    .enumerate()
                    .map(move |(m, (a, _))| ((n, *a), m))
            })
            .collect();
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let b = self.row_constant(i);
                let (mut lo, mut hi) = (b, b);
                for (j, w) in row {
                    let (w, (l, h)) = (*w as i128, bounds[*j as usize]);
                    let (a, c) = (w * l, w * h);
                    lo += a.min(c);
                    hi += a.max(c);
                }
                // Products over the input box, each norm's apart: (lo, hi, member coeffs).
                let mut groups: HashMap<usize, (i128, i128, HashMap<usize, i128>)> = HashMap::new();
                for (a, b, c) in self.row_products(i) {
                    let ((la, ha), (lb, hb)) = (bounds[*a as usize], bounds[*b as usize]);
                    // x_a x_b over the box: the corners bound it (x_a = x_b is a square,
                    // which the box bounds too).
                    let corners = [la * lb, la * hb, ha * lb, ha * hb];
                    let (p_lo, p_hi) = (
                        *corners.iter().min().expect("four"),
                        *corners.iter().max().expect("four"),
                    );
                    let c = *c as i128;
                    let (x, y) = (c * p_lo, c * p_hi);
                    let grouped = [(*b, *a), (*a, *b)].into_iter().find_map(|(r, d)| {
                        let n = *inv.get(&r)?;
                        Some((n, *member.get(&(n, d))?))
                    });
                    match grouped {
                        Some((n, m)) => {
                            let g = groups.entry(n).or_default();
                            g.0 += x.min(y);
                            g.1 += x.max(y);
                            *g.2.entry(m).or_insert(0) += c;
                        }
                        None => {
                            lo += x.min(y);
                            hi += x.max(y);
                        }
                    }
                }
                for (n, (g_lo, g_hi, coeffs)) in groups {
                    let cap = self.norms[n].cap(&coeffs).unwrap_or(i128::MAX);
                    lo += g_lo.max(-cap);
                    hi += g_hi.min(cap);
                }
                let (q_lo, q_hi) = ((lo + half) >> self.shift, (hi + half) >> self.shift);
                let mut m = 0u32;
                while -(1i128 << m) > q_lo || q_hi >= (1i128 << m) {
                    m += 1;
                }
                m
            })
            .collect()
    }

    /// Checks that `x` (in range) is a state this layer's rows fit: under a LayerNorm
    /// bound ([`Norm`]) a row is narrower than its input box allows, so an input no run of
    /// the model produces can overflow it. Returns the first such row.
    pub fn check_norms(&self, x: &[i64]) -> std::result::Result<(), usize> {
        if self.norms.is_empty() {
            return Ok(());
        }
        let half = 1i128 << (self.shift - 1);
        for (i, m) in self.row_q_bits().into_iter().enumerate() {
            if self.copy_of(i).is_some() {
                continue;
            }
            let q = (self.accumulate(i, x) + half) >> self.shift;
            if q < -(1i128 << m) || q >= 1i128 << m {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Exact integer evaluation of this segment. `x` must already be in range.
    pub fn eval(&self, x: &[i64]) -> Vec<i64> {
        (0..self.n_out())
            .map(|i| self.finish(i, self.accumulate(i, x)))
            .collect()
    }

    /// Accumulator of output row `i`: b + sum w * x + sum c * x_a * x_b (less 2^shift for a
    /// gadget's inverse power, see [`Segment::row_constant`]).
    pub fn accumulate(&self, i: usize, x: &[i64]) -> i128 {
        let v = |j: &u32| x[*j as usize] as i128;
        let linear = self.rows[i]
            .iter()
            .fold(self.row_constant(i), |acc, (j, w)| {
                acc + (*w as i128) * v(j)
            });
        self.row_products(i)
            .iter()
            .fold(linear, |acc, (a, b, c)| acc + (*c as i128) * v(a) * v(b))
    }

    /// Output `i`'s products of two inputs (none for most segments).
    pub fn row_products(&self, i: usize) -> &[(u32, u32, i64)] {
        self.products.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The distinct input pairs multiplied anywhere in the segment: one constraint each.
    pub fn product_pairs(&self) -> Vec<(u32, u32)> {
        let mut pairs: Vec<(u32, u32)> = self
            .products
            .iter()
            .flatten()
            .map(|(a, b, _)| (*a.min(b), *a.max(b)))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }

    /// Requantize (and ReLU, for a ReLU row) output `i`'s accumulator.
    pub fn finish(&self, i: usize, acc: i128) -> i64 {
        let q = (acc + (1i128 << (self.shift - 1))) >> self.shift;
        (if self.relu(i) {
            q.max(0)
        } else if let Some(g) = self.gadget_at(i) {
            g.eval(self.act_scale, q, self.gadget_floor as i128)
        } else {
            q
        }) as i64
    }

    /// Output `i` copies input `j` exactly (weight 2^shift, no bias, no ReLU): a value
    /// carried across the cut. Its input range check already bounds it, so the circuit
    /// spends no constraint on it.
    pub fn copy_of(&self, i: usize) -> Option<usize> {
        match self.rows[i].as_slice() {
            [(j, w)]
                if *w == 1i64 << self.shift
                    && self.bias[i] == 0
                    && !self.relu(i)
                    && self.gadget_at(i).is_none()
                    && self.row_products(i).is_empty() =>
            {
                Some(*j as usize)
            }
            _ => None,
        }
    }

    /// Whether output `i` passes through ReLU.
    pub fn relu(&self, i: usize) -> bool {
        i < self.relu_rows
    }

    /// The gadget output `i` ends in, if any.
    pub fn gadget_at(&self, i: usize) -> Option<Gadget> {
        self.gadget.filter(|_| i < self.gadget_rows)
    }

    /// The constant of row `i`'s decomposed accumulator: its bias, less f 2^shift for an
    /// inverse power gadget with floor f (whose requantized value is then q - f, so a ReLU
    /// of it plus f is max(q, f)).
    pub fn row_constant(&self, i: usize) -> i128 {
        let b = self.bias[i] as i128;
        match self.gadget_at(i) {
            Some(g) if g.offsets_by_floor() => b - ((self.gadget_floor as i128) << self.shift),
            _ => b,
        }
    }

    /// Per output row, the magnitude bits of its output value: `row_q_bits`, or its
    /// gadget's. `q_bits` is their maximum.
    pub fn row_out_bits(&self) -> Vec<u32> {
        self.row_out_bits_from(&self.row_q_bits())
    }

    /// [`Self::row_out_bits`] from this segment's `row_q_bits`.
    fn row_out_bits_from(&self, q_bits: &[u32]) -> Vec<u32> {
        q_bits
            .iter()
            .copied()
            .enumerate()
            .map(|(i, m)| match self.gadget_at(i) {
                Some(g) => g.out_bits(self.act_scale, self.gadget_floor as i128),
                None => m,
            })
            .collect()
    }

    /// Whether every output passes through ReLU (the output range is then unsigned).
    pub fn all_relu(&self) -> bool {
        self.relu_rows == self.n_out()
    }

    /// Each input value's (lo, hi), from `in_ranges`.
    pub fn input_bounds(&self) -> Vec<(i128, i128)> {
        self.input_ranges()
            .into_iter()
            .map(|r| (r.lo(), r.hi()))
            .collect()
    }

    /// Each input value's range, from `in_ranges`.
    pub fn input_ranges(&self) -> Vec<Range> {
        self.in_ranges
            .iter()
            .flat_map(|(n, r)| std::iter::repeat_n(*r, *n as usize))
            .collect()
    }

    /// The range each output row enforces (see [`Self::out_ranges`], which joins them per
    /// state tensor).
    pub fn row_ranges(&self) -> Vec<Range> {
        let inputs = self.input_ranges();
        self.row_q_bits()
            .into_iter()
            .enumerate()
            .map(|(i, m)| self.row_range(i, m, &inputs))
            .collect()
    }

    /// The range row `i` enforces on its output, given its magnitude bits `m`.
    fn row_range(&self, i: usize, m: u32, inputs: &[Range]) -> Range {
        if let Some(j) = self.copy_of(i) {
            return inputs[j];
        }
        match self.gadget_at(i) {
            Some(g) => {
                let bits = g.out_bits(self.act_scale, self.gadget_floor as i128);
                Range {
                    bits: bits + u32::from(g.out_signed()),
                    signed: g.out_signed(),
                }
            }
            None if self.relu(i) => Range {
                bits: m.max(1),
                signed: false,
            },
            None => Range {
                bits: m + 1,
                signed: true,
            },
        }
    }

    /// The output's ranges, per state tensor (or one run): what the circuit enforces on
    /// each output row (its decomposition, ReLU, gadget or copied input), joined.
    pub fn out_ranges(&self) -> Vec<(u32, Range)> {
        self.out_ranges_from(&self.row_q_bits())
    }

    /// [`Self::out_ranges`] from this segment's `row_q_bits`.
    fn out_ranges_from(&self, q_bits: &[u32]) -> Vec<(u32, Range)> {
        let inputs = self.input_ranges();
        let rows: Vec<Range> = q_bits
            .iter()
            .copied()
            .enumerate()
            .map(|(i, m)| self.row_range(i, m, &inputs))
            .collect();
        let sizes: Vec<usize> = if self.state.is_empty() {
            vec![rows.len()]
        } else {
            self.state.iter().map(|(_, d)| d.iter().product()).collect()
        };
        let mut out = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for n in sizes {
            let joined = rows[at..at + n].iter().copied().reduce(join);
            if let Some(r) = joined {
                out.push((n as u32, r));
            }
            at += n;
        }
        out
    }
}

/// A whole quantized model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    pub version: u32,
    pub name: String,
    /// blake3 of the ONNX file it was imported from (hex).
    pub source_hash: String,
    pub scale_bits: u32,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub segments: Vec<Segment>,
    /// blake3 of the serialized model, computed once.
    #[serde(skip)]
    pub(crate) id_cache: std::sync::OnceLock<[u8; 32]>,
}

impl Model {
    pub fn scale(&self) -> f64 {
        (1u64 << self.scale_bits) as f64
    }

    /// Quantizes real values to this model's fixed point.
    pub fn quantize(&self, x: &[f64]) -> Vec<i64> {
        let scale = self.scale();
        x.iter().map(|v| (v * scale).round() as i64).collect()
    }

    pub fn dequantize(&self, x: &[i64]) -> Vec<f64> {
        let scale = self.scale();
        x.iter().map(|v| *v as f64 / scale).collect()
    }

    pub fn segment(&self, index: usize) -> Result<&Segment> {
        self.segments.get(index).ok_or(KernelError::NoSuchSegment {
            segment: index,
            count: self.segments.len(),
        })
    }

    /// Checks the structural invariants a model file must hold; `path` names it in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |r: String| Err(KernelError::model(path, r));
        if self.version != MODEL_VERSION {
            return bad(format!(
                "format version {} (expected {MODEL_VERSION})",
                self.version
            ));
        }
        if self.segments.is_empty() {
            return bad("no segments".into());
        }
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.index != i || seg.layers.is_empty() {
                return bad(format!("{i} header is inconsistent"));
            }
        }
        // Every layer in order, segment boundaries or not: each feeds the next the same way.
        let layers: Vec<(String, &Layer)> = self
            .segments
            .iter()
            .flat_map(|seg| {
                let one = seg.layers.len() == 1;
                seg.layers.iter().enumerate().map(move |(l, layer)| {
                    let name = if one {
                        format!("segment {}", seg.index)
                    } else {
                        format!("segment {} layer {l}", seg.index)
                    };
                    (name, layer)
                })
            })
            .collect();
        for (k, (i, s)) in layers.iter().enumerate() {
            let extra = s.shift.checked_sub(self.scale_bits);
            if extra.is_none_or(|e| e > MAX_EXTRA_WEIGHT_BITS) {
                return bad(format!("{i} header is inconsistent"));
            }
            if s.rows.len() != s.bias.len() || s.rows.len() != s.out_shape.iter().product::<usize>()
            {
                return bad(format!("{i}: rows, bias and output shape disagree"));
            }
            if s.acc_bits() > MAX_ACC_BITS
                || s.input.bits == 0
                || s.input.bits > MAX_VALUE_BITS
                || s.output.bits > MAX_VALUE_BITS
            {
                return bad(format!("{i}: ranges out of bounds"));
            }
            let state: usize = s
                .state
                .iter()
                .map(|(_, d)| d.iter().product::<usize>())
                .sum();
            if !s.state.is_empty() && state != s.n_out() {
                return bad(format!(
                    "segment {i}: its state tensors do not add up to its output"
                ));
            }
            let runs: u64 = s.in_ranges.iter().map(|(n, _)| *n as u64).sum();
            let inside = |r: &Range| r.lo() >= s.input.lo() && r.hi() <= s.input.hi();
            if runs != s.n_in() as u64 || !s.in_ranges.iter().all(|(_, r)| inside(r)) {
                return bad(format!("{i}: input ranges disagree with the input"));
            }
            let n_in = s.n_in() as u32;
            if s.rows.iter().flatten().any(|(j, _)| *j >= n_in) {
                return bad(format!("{i}: weight index past the input"));
            }
            if !(s.products.is_empty() || s.products.len() == s.n_out())
                || s.products
                    .iter()
                    .flatten()
                    .any(|(a, b, _)| *a >= n_in || *b >= n_in)
            {
                return bad(format!("{i}: products disagree with the input"));
            }
            if s.relu_rows > s.n_out()
                || s.gadget_rows > s.n_out()
                || (s.gadget.is_none() && s.gadget_rows > 0)
                || (s.relu_rows > 0 && s.gadget_rows > 0)
                || (s.gadget.is_some() && s.act_scale != self.scale_bits)
                || (s.gadget == Some(Gadget::Erf) && s.act_scale < crate::gadgets::ERF_MIN_SCALE)
                || s.gadget_floor < 1
                || s.output != output_range(s.q_bits, s.all_relu())
            {
                return bad(format!("{i}: output range disagrees with q_bits"));
            }
            let norms = match k.checked_sub(1) {
                Some(p) => norms_after(layers[p].1),
                None => Vec::new(),
            };
            if s.norms != norms {
                return bad(format!(
                    "{i}: its LayerNorm bounds disagree with the layer before"
                ));
            }
            // Every row's magnitude, once: the chain and q_bits are checked against it.
            let q_bits = s.row_q_bits();
            if let Some((j, next)) = layers.get(k + 1) {
                if next.input != s.output
                    || next.n_in() != s.n_out()
                    || next.in_ranges != s.out_ranges_from(&q_bits)
                {
                    return bad(format!("{i} does not feed {j}"));
                }
            }
            // The widest accumulator fixes the output range the next segment checks.
            if s.row_out_bits_from(&q_bits).into_iter().max() != Some(s.q_bits) {
                return bad(format!("{i}: q_bits disagrees with the weights"));
            }
        }
        if self.segments[0].in_shape() != self.input_shape {
            return bad("input shape disagrees with segment 0".into());
        }
        Ok(())
    }

    /// Model id: blake3 of the serialized model file.
    pub fn id(&self) -> [u8; 32] {
        *self
            .id_cache
            .get_or_init(|| *blake3::hash(&self.to_bytes()).as_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_cbor::to_vec(self).expect("a model always serializes")
    }

    /// Loads and validates `DIR/model.cbor`.
    pub fn load(dir: &Path) -> Result<Model> {
        let path = dir.join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                KernelError::model(
                    &path,
                    "not found: is this a model directory made by `provnet model import`?",
                )
            } else {
                KernelError::io(&path, e)
            }
        })?;
        let model: Model = serde_cbor::from_slice(&bytes)
            .map_err(|e| KernelError::model(&path, format!("corrupt model file: {e}")))?;
        model.validate(&path)?;
        Ok(model)
    }
}

/// The smallest power-of-two range holding both.
pub fn join(a: Range, b: Range) -> Range {
    if a.signed == b.signed {
        return Range {
            bits: a.bits.max(b.bits),
            signed: a.signed,
        };
    }
    let (s, u) = if a.signed { (a, b) } else { (b, a) };
    Range {
        bits: s.bits.max(u.bits + 1),
        signed: true,
    }
}

/// floor(sqrt(n)).
pub fn isqrt(n: u128) -> u128 {
    let mut y = (n as f64).sqrt() as u128;
    while y * y > n {
        y -= 1;
    }
    while (y + 1) * (y + 1) <= n {
        y += 1;
    }
    y
}

/// The range of a segment's output given its magnitude bits.
pub fn output_range(q_bits: u32, relu: bool) -> Range {
    if relu {
        Range {
            bits: q_bits.max(1),
            signed: false,
        }
    } else {
        Range {
            bits: q_bits + 1,
            signed: true,
        }
    }
}

/// Writes files into a fresh directory atomically: everything lands in a temporary sibling
/// which is renamed into place only when complete, so a failure leaves nothing behind.
pub fn write_dir_atomically(
    dir: &Path,
    files: &[(PathBuf, Vec<u8>)],
    allow_existing_dir: bool,
) -> Result<()> {
    let staged = Staged::new(dir, allow_existing_dir)?;
    for (rel, bytes) in files {
        staged.write(rel, bytes)?;
    }
    staged.commit()
}

/// A directory being written: files land in a temporary sibling, one at a time (so a large
/// set never needs to be in memory at once), which [`Staged::commit`] renames into place.
/// Dropped uncommitted (a failure), it is removed and leaves nothing behind.
pub struct Staged {
    tmp: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl Staged {
    /// Starts writing `dir`, which must not exist unless `allow_existing_dir` (then it must
    /// be gone, or be an empty directory, by the time of the commit).
    pub fn new(dir: &Path, allow_existing_dir: bool) -> Result<Staged> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .ok_or_else(|| KernelError::model(dir, "not a directory name"))?;
        if dir.exists() && !allow_existing_dir {
            return Err(KernelError::model(
                dir,
                "already exists: choose a new --out directory or remove it",
            ));
        }
        std::fs::create_dir_all(parent).map_err(|e| KernelError::io(parent, e))?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| KernelError::io(&tmp, e))?;
        Ok(Staged {
            tmp,
            dir: dir.to_path_buf(),
            committed: false,
        })
    }

    /// Writes one file, at `rel` inside the directory.
    pub fn write(&self, rel: &Path, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| KernelError::io(p, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| KernelError::io(&path, e))
    }

    /// Renames the finished directory into place.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.dir).map_err(|e| KernelError::io(&self.dir, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
