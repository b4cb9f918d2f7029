//! Cuts inside a layer: a quantized layer too large for one proof, split into parts that
//! each fit the constraint budget and together compute exactly what the layer computes.
//!
//! A layer's rows are an affine map (with products) of its input x, requantized, then a
//! gadget or ReLU on its first rows; rows that copy an input cost nothing. The rows that
//! cost something are taken in chunks from the end: the first part computes the last
//! chunk and carries x; each later part copies what is done, computes the chunk before,
//! and carries x again; the last part computes the first chunk and the layer's own copies,
//! so its output is the layer's, row for row, value for value. Every part is an ordinary
//! [`Layer`] between two ordinary cuts: setup, proving, traces and disputes see nothing new.
//!
//! A part's state at its output cut is the rows done so far (one tensor per tensor of the
//! layer's state they belong to) then x (its tensors, as the cut before named them). Each
//! part pays the range checks of x again, which is why this is only worth it for a layer no
//! segment could hold: a part's rows must cost more than its input. The rows done pass
//! free where they can: with chunks a whole number of packing words long and a part whose
//! input and output ranges agree, each done word is tied to the same word of the output
//! (`circuit::verbatim_words`: no witnesses, no range checks). The last part outputs the
//! layer's own range, so it checks them once more. The LayerNorm bounds among x travel with
//! its copies
//! ([`crate::model::norms_after`]), so a row computed in a later part is as narrow as in
//! the whole layer.

use std::collections::HashSet;

use crate::circuit::{per_word, CircuitShape};
use crate::model::{join, norms_after, Layer, Range};

/// The state tensors of a layer's input, as the cut before it names them.
pub type StateTensors = Vec<(String, Vec<usize>)>;

/// Splits `layer` (over budget: `max` constraints) into parts of at most `max`
/// constraints each. `input_state` names the tensors of its input (its values in order).
/// `None` when even one row with the layer's input does not fit.
pub fn split(layer: &Layer, input_state: &StateTensors, max: usize) -> Option<Vec<Layer>> {
    // Chunks on word boundaries (the rows done pass as verbatim words), or, where those
    // are too coarse to fit, on any row: whichever fits with fewer constraints in all.
    [true, false]
        .into_iter()
        .filter_map(|aligned| split_with(layer, input_state, max, aligned))
        .min_by_key(|parts| parts.iter().map(cost).sum::<usize>())
}

fn split_with(
    layer: &Layer,
    input_state: &StateTensors,
    max: usize,
    aligned: bool,
) -> Option<Vec<Layer>> {
    // The estimate below ignores how ranges join within a state tensor and the output
    // words' exact count; a part that overshoots is rebuilt against a budget lowered by
    // its overshoot.
    let mut budget = max;
    for _ in 0..8 {
        let parts = build(layer, input_state, &chunks(layer, budget, aligned)?);
        let over = parts
            .iter()
            .map(|p| cost(p).saturating_sub(max))
            .max()
            .unwrap_or(0);
        if over == 0 {
            return Some(parts);
        }
        budget = budget.checked_sub(over + 1)?;
    }
    None
}

/// The constraints of a segment made of `part` alone.
pub fn cost(part: &Layer) -> usize {
    CircuitShape::alone(part).constraints
}

/// The rows that cost constraints, in chunks: the first chunk is the last rows, computed
/// by the first part. `None` when a part cannot hold even one row. Every chunk but the
/// first is a whole number of packed words long, so that the rows done before sit at a
/// word boundary in every later part's input and output, where they pass as verbatim
/// words ([`crate::circuit::verbatim_words`]) instead of being checked again.
fn chunks(layer: &Layer, budget: usize, aligned: bool) -> Option<Vec<Vec<usize>>> {
    let q_bits = layer.row_q_bits();
    let ranges = layer.row_ranges();
    let computed: Vec<usize> = (0..layer.n_out())
        .filter(|i| layer.copy_of(*i).is_none())
        .collect();
    let x_bits: usize = layer
        .in_ranges
        .iter()
        .map(|(n, r)| *n as usize * r.bits as usize)
        .sum();
    // The parts' packing range: the input's, widened by the rows'.
    let packing = join(layer.input, layer.output);
    let word = per_word(packing.bits);
    let per = if aligned { word } else { 1 };
    let n = computed.len();
    let mut end = n;
    let mut out: Vec<Vec<usize>> = Vec::new();
    while end > 0 {
        // The rows done before are unpacked and checked: past their last whole word, or
        // all of them when not aligned.
        let loose = if aligned { n - (n - end) % word } else { end };
        let loose: usize = computed[loose..]
            .iter()
            .map(|i| ranges[*i].bits as usize)
            .sum();
        let mut cost = 1 + x_bits + loose;
        let mut pairs: HashSet<(u32, u32)> = HashSet::new();
        let mut start = end;
        // Where this chunk may end: the first part anywhere that leaves whole words for
        // the rest, a later part on a whole word.
        let fits = |start: usize| {
            if out.is_empty() {
                start % per == 0
            } else {
                (end - start) % per == 0
            }
        };
        let mut best = None;
        while start > 0 {
            let i = computed[start - 1];
            let new_pairs: HashSet<(u32, u32)> = layer
                .row_products(i)
                .iter()
                .map(|(a, b, _)| (*a.min(b), *a.max(b)))
                .filter(|p| !pairs.contains(p))
                .collect();
            let row = CircuitShape::row_constraints(layer, i, q_bits[i]) + new_pairs.len();
            // Outputs: the rows done, this chunk and the carried input, packed.
            let words = (n - start + 1 + layer.n_in()).div_ceil(word);
            if cost + row + words > budget {
                break;
            }
            cost += row;
            pairs.extend(new_pairs);
            start -= 1;
            if fits(start) {
                best = Some(start);
            }
        }
        let start = best?;
        out.push(computed[start..end].to_vec());
        end = start;
    }
    Some(out)
}

/// The parts computing `chunks` in turn (see [`chunks`]).
fn build(layer: &Layer, input_state: &StateTensors, chunks: &[Vec<usize>]) -> Vec<Layer> {
    let n = layer.n_out();
    let n_in = layer.n_in();
    let one = 1i64 << layer.shift;
    // Which tensor of the layer's state each row belongs to, and its offset there.
    let tensors: StateTensors = if layer.state.is_empty() {
        vec![(
            layer.nodes.last().cloned().unwrap_or_default(),
            layer.out_shape.clone(),
        )]
    } else {
        layer.state.clone()
    };
    let mut tensor_of = Vec::with_capacity(n);
    for (t, (_, dims)) in tensors.iter().enumerate() {
        tensor_of.extend(std::iter::repeat_n(t, dims.iter().product()));
    }
    let mut done = vec![false; n];
    let mut parts: Vec<Layer> = Vec::with_capacity(chunks.len());
    for (p, chunk) in chunks.iter().enumerate() {
        let last = p + 1 == chunks.len();
        // The input: the rows done before (in order), then x.
        let before: Vec<usize> = (0..n).filter(|i| done[*i]).collect();
        let mut at_before = vec![u32::MAX; n];
        for (k, i) in before.iter().enumerate() {
            at_before[*i] = k as u32;
        }
        let x_at = |j: u32| j + before.len() as u32;
        let now: HashSet<usize> = chunk.iter().copied().collect();
        for i in chunk {
            done[*i] = true;
        }
        // The output: the rows done now (the last part: every row), in order, then x.
        let rows_out: Vec<usize> = (0..n).filter(|i| last || done[*i]).collect();
        let mut rows = Vec::with_capacity(rows_out.len() + n_in);
        let mut bias = Vec::with_capacity(rows.capacity());
        let mut products = Vec::with_capacity(rows.capacity());
        for &i in &rows_out {
            if now.contains(&i) || (last && at_before[i] == u32::MAX) {
                // Computed here: the layer's row over this part's copy of x.
                rows.push(layer.rows[i].iter().map(|(j, w)| (x_at(*j), *w)).collect());
                bias.push(layer.bias[i]);
                products.push(
                    layer
                        .row_products(i)
                        .iter()
                        .map(|(a, b, c)| (x_at(*a), x_at(*b), *c))
                        .collect::<Vec<_>>(),
                );
            } else {
                rows.push(vec![(at_before[i], one)]);
                bias.push(0);
                products.push(Vec::new());
            }
        }
        let mut state: StateTensors = Vec::new();
        if last {
            state = layer.state.clone();
        } else {
            for (t, (name, _)) in tensors.iter().enumerate() {
                let count = rows_out.iter().filter(|i| tensor_of[**i] == t).count();
                if count > 0 {
                    state.push((format!("{name} (part {p}: {count} rows)"), vec![count]));
                }
            }
            for j in 0..n_in as u32 {
                rows.push(vec![(x_at(j), one)]);
                bias.push(0);
                products.push(Vec::new());
            }
            state.extend(input_state.iter().cloned());
        }
        if products.iter().all(Vec::is_empty) {
            products.clear();
        }
        // The rows computed here that end in the gadget or a ReLU lead the output.
        let leading = |k: usize| {
            rows_out
                .iter()
                .take_while(|i| {
                    **i < k && (now.contains(i) || (last && at_before[**i] == u32::MAX))
                })
                .count()
        };
        let prev = parts.last();
        let mut part = Layer {
            ops: layer.ops.clone(),
            nodes: layer.nodes.clone(),
            in_shape: if p == 0 {
                layer.in_shape.clone()
            } else {
                vec![before.len() + n_in]
            },
            out_shape: if last {
                layer.out_shape.clone()
            } else {
                vec![rows.len()]
            },
            input: prev.map_or(layer.input, |l| l.output),
            output: layer.output,
            in_ranges: prev.map_or_else(|| layer.in_ranges.clone(), Layer::out_ranges),
            rows,
            bias,
            products,
            shift: layer.shift,
            relu_rows: leading(layer.relu_rows),
            gadget: layer.gadget,
            gadget_rows: leading(layer.gadget_rows),
            gadget_floor: layer.gadget_floor,
            act_scale: layer.act_scale,
            state,
            q_bits: 0,
            norms: prev.map_or_else(|| layer.norms.clone(), norms_after),
        };
        part.q_bits = part.row_out_bits().into_iter().max().unwrap_or(0);
        part.output = output_range(&part);
        parts.push(part);
    }
    parts
}

fn output_range(part: &Layer) -> Range {
    crate::model::output_range(part.q_bits, part.all_relu())
}
