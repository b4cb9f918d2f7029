//! Quantization: float layers from ONNX to a provnet [`Model`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::circuit::CircuitShape;
use crate::error::{KernelError, Result};
use crate::gadgets::{Gadget, ERF_MIN_SCALE};
use crate::keys::PROVER_THREADS;
use crate::model::{
    norms_after, output_range, write_dir_atomically, Layer, Model, Norm, Range, Segment,
    MAX_ACC_BITS, MAX_EXTRA_WEIGHT_BITS, MAX_VALUE_BITS, MODEL_FILE, MODEL_VERSION, SUMMARY_FILE,
};
use crate::msm::FixedBaseTable;
use crate::onnx::{self, FloatLayer, FloatModel};
use crate::split;

/// Default fixed-point scale bits. Chosen so dequantized outputs are at least as close to
/// onnxruntime's as ezkl's (max abs error ~7e-4 on dense_64): see the README's fidelity table.
pub const DEFAULT_SCALE_BITS: u32 = 13;
/// Default range of real-valued model inputs: [-4, 4] (the enforced power-of-two range is
/// [-8, 8) at the default scale).
pub const DEFAULT_INPUT_MIN: f64 = -4.0;
pub const DEFAULT_INPUT_MAX: f64 = 4.0;

/// Import options.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub scale_bits: u32,
    /// Real inputs lie in [input_min, input_max]; the circuit checks the smallest
    /// power-of-two integer range around it (unsigned when input_min >= 0).
    pub input_min: f64,
    pub input_max: f64,
    /// Most constraints one segment may have: a model with a larger layer is refused.
    pub max_constraints: usize,
    /// Place cuts by cost: merge consecutive layers into segments of at most
    /// `max_constraints` (fewer, larger proofs; a merged cut costs no range check and no
    /// public words). Off, every non-linear layer is its own segment: the finest
    /// granularity for the dispute game's bisection.
    pub merge: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            scale_bits: DEFAULT_SCALE_BITS,
            input_min: DEFAULT_INPUT_MIN,
            input_max: DEFAULT_INPUT_MAX,
            max_constraints: DEFAULT_MAX_CONSTRAINTS,
            merge: false,
        }
    }
}

/// Most extra weight-scale bits a layer gets for small weights (products may take up to
/// [`MAX_EXTRA_WEIGHT_BITS`]).
const MAX_LINEAR_EXTRA_BITS: u32 = 8;

/// Extra bits a product's coefficients get so the smallest keeps 8 significant bits (more,
/// up to [`MAX_EXTRA_WEIGHT_BITS`], only where a coefficient would be off by over 2^-9).
const PRODUCT_EXTRA_BITS: u32 = 12;

/// Default constraint budget per segment (`--max-constraints`): 2^20, an FFT domain of 2^20
/// to 2^21, whose keys (proving key and h table, see [`KeySize`]) take about 1 GB. A model
/// with a segment over the budget is refused at import, naming it.
pub const DEFAULT_MAX_CONSTRAINTS: usize = 1 << 20;

/// Quantizes a float model. A segment whose circuit would exceed `opts.max_constraints` is
/// refused (nothing is written).
pub fn quantize(float: &FloatModel, source_hash: String, opts: &ImportOptions) -> Result<Model> {
    let s = opts.scale_bits;
    if !(1..=24).contains(&s) {
        return Err(KernelError::Input(format!(
            "--scale-bits {s} is out of range (1..=24)"
        )));
    }
    if opts.max_constraints < 64 {
        return Err(KernelError::Input(format!(
            "--max-constraints {} is too small (at least 64)",
            opts.max_constraints
        )));
    }
    let mut input = input_range(opts)?;
    let mut layers: Vec<Sized> = Vec::with_capacity(float.layers.len());
    let n_in: usize = float.input_shape.iter().product();
    let mut in_ranges = vec![(n_in as u32, input)];
    for (index, layer) in float.layers.iter().enumerate() {
        let norms = layers
            .last()
            .map(|l| norms_after(&l.layer))
            .unwrap_or_default();
        let q = quantize_layer(layer, (input, std::mem::take(&mut in_ranges)), norms, s)?;
        let shape = CircuitShape::alone(&q);
        let parts: Vec<(Layer, CircuitShape)> = if shape.constraints <= opts.max_constraints {
            vec![(q, shape)]
        } else {
            let input_state = input_tensors(&q, layers.last().map(|l| &l.layer));
            split::split(&q, &input_state, opts.max_constraints)
                .ok_or_else(|| KernelError::Unsupported {
                    node: layer.nodes.last().cloned().unwrap_or_default(),
                    op: layer.ops.last().cloned().unwrap_or_default(),
                    reason: format!(
                        "layer {index} ({}) needs {} constraints, over --max-constraints {}, \
                         and cut into parts it does not fit either (each part checks the \
                         layer's {} input values again): raise it (its keys would take about \
                         {} MB), or cut the layer in the model",
                        q.ops.join(" "),
                        shape.constraints,
                        opts.max_constraints,
                        q.n_in(),
                        {
                            let k = KeySize::of(&shape);
                            (k.pk_bytes + k.h_table_bytes) / 1_000_000
                        }
                    ),
                })?
                .into_iter()
                .map(|p| {
                    let alone = CircuitShape::alone(&p);
                    (p, alone)
                })
                .collect()
        };
        for (q, alone) in parts {
            let (head, (mid, end)) = (CircuitShape::head(&q), CircuitShape::parts(&q));
            input = q.output;
            in_ranges = q.out_ranges();
            layers.push(Sized {
                layer: q,
                head,
                mid,
                end,
                alone,
            });
        }
    }
    let segments = group(layers, opts);
    let model = Model {
        version: MODEL_VERSION,
        name: float.name.clone(),
        source_hash,
        scale_bits: s,
        input_shape: float.input_shape.clone(),
        output_shape: float.output_shape.clone(),
        segments,
        id_cache: Default::default(),
    };
    model.validate(Path::new("<import>"))?;
    Ok(model)
}

/// The tensors of `layer`'s input, one per run of its input ranges: named as the cut before
/// it names them (`prev`'s state) where they line up, else by position.
fn input_tensors(layer: &Layer, prev: Option<&Layer>) -> split::StateTensors {
    let named: split::StateTensors = match prev {
        None => vec![("input".into(), layer.in_shape.clone())],
        Some(p) if p.state.is_empty() => vec![(
            p.nodes.last().cloned().unwrap_or_default(),
            p.out_shape.clone(),
        )],
        Some(p) => p.state.clone(),
    };
    let sizes: Vec<usize> = named.iter().map(|(_, d)| d.iter().product()).collect();
    let runs: Vec<usize> = layer.in_ranges.iter().map(|(n, _)| *n as usize).collect();
    if sizes == runs {
        named
    } else {
        runs.iter()
            .enumerate()
            .map(|(k, n)| (format!("input {k}"), vec![*n]))
            .collect()
    }
}

/// A quantized layer and its circuit's parts (see [`CircuitShape::head`] and
/// [`CircuitShape::parts`]), sized once for both the budget check and the cuts, and
/// [`CircuitShape::alone`], the segment of it alone.
struct Sized {
    layer: Layer,
    head: CircuitShape,
    mid: CircuitShape,
    end: CircuitShape,
    alone: CircuitShape,
}

/// Layers into segments: one each, or with `opts.merge`, cuts placed by cost: of all the
/// ways to cut the chain into runs of consecutive layers within `opts.max_constraints`, the
/// one with the least total [`estimated_prove_ms`] (a dynamic program over the cut
/// points; merging never adds constraints, but a segment just past a power of two pays a
/// whole FFT domain more, so the cheapest cut is not always the fewest segments).
fn group(layers: Vec<Sized>, opts: &ImportOptions) -> Vec<Segment> {
    let n = layers.len();
    if !opts.merge || n < 2 {
        return layers
            .into_iter()
            .enumerate()
            .map(|(index, l)| Segment {
                index,
                layers: vec![l.layer],
            })
            .collect();
    }
    // The shape of the segment of layers i..=j.
    let shape = |i: usize, j: usize| {
        if i == j {
            return layers[i].alone;
        }
        layers[i..j]
            .iter()
            .fold(layers[i].head, |s, l| s.plus(l.mid))
            .plus(layers[j].end)
    };
    // best[j]: the cheapest cut of layers 0..j, and where its last segment starts.
    let mut best: Vec<(f64, usize)> = vec![(0.0, 0); n + 1];
    for j in 0..n {
        best[j + 1] = (f64::INFINITY, j);
        for i in (0..=j).rev() {
            let s = shape(i, j);
            if s.constraints > opts.max_constraints {
                continue;
            }
            let cost = best[i].0 + estimated_prove_ms(&s);
            if cost < best[j + 1].0 {
                best[j + 1] = (cost, i);
            }
        }
    }
    let mut starts = Vec::new();
    let mut j = n;
    while j > 0 {
        starts.push(best[j].1);
        j = best[j].1;
    }
    starts.reverse();
    let mut it = layers.into_iter().map(|l| l.layer);
    starts
        .iter()
        .enumerate()
        .map(|(index, &i)| {
            let until = starts.get(index + 1).copied().unwrap_or(n);
            Segment {
                index,
                layers: it.by_ref().take(until - i).collect(),
            }
        })
        .collect()
}

/// One float layer, reading values in `input` (each in its own range of `in_ranges`).
fn quantize_layer(
    layer: &FloatLayer,
    (input, in_ranges): (Range, Vec<(u32, Range)>),
    norms: Vec<Norm>,
    s: u32,
) -> Result<Layer> {
    let scale = (1u64 << s) as f64;
    // Small weights get a finer scale: as many extra bits as the largest stays under 1.
    let largest = layer
        .rows
        .iter()
        .flatten()
        .fold(0.0f64, |m, (_, w)| m.max(w.abs()));
    let mut extra = if largest > 0.0 {
        ((1.0 / largest).log2().floor().max(0.0) as u32).min(MAX_LINEAR_EXTRA_BITS)
    } else {
        0
    };
    // A product's coefficient has scale 2^extra (see `Segment::products`): enough bits
    // that the smallest keeps 8 significant bits, within the limit.
    let smallest = layer
        .products
        .iter()
        .flatten()
        .fold(f64::INFINITY, |m, (_, _, c)| m.min(c.abs()));
    if smallest.is_finite() && smallest > 0.0 {
        let want = (8.0 - smallest.log2()).ceil().max(0.0) as u32;
        extra = extra.max(want.min(PRODUCT_EXTRA_BITS));
        // Past that, more bits only where a coefficient would still be off by more than
        // 2^-9 of itself: a LayerNorm's 1/D for D = 768 is 5/4096 at 12 bits (6% under,
        // every normalised value 3% over), 341/2^18 at 18.
        let off = |e: u32| {
            layer.products.iter().flatten().any(|(_, _, c)| {
                let q = (c * (1u64 << e) as f64).round() / (1u64 << e) as f64;
                (q - c).abs() > c.abs() / 512.0
            })
        };
        while extra < MAX_EXTRA_WEIGHT_BITS && off(extra) {
            extra += 1;
        }
    }
    let w_scale = (1u64 << (s + extra)) as f64;
    let c_scale = (1u64 << extra) as f64;
    let products: Vec<Vec<(u32, u32, i64)>> = layer
        .products
        .iter()
        .map(|r| {
            r.iter()
                .map(|(a, b, c)| (*a, *b, (c * c_scale).round() as i64))
                .filter(|(_, _, c)| *c != 0)
                .collect()
        })
        .collect();
    let rows: Vec<Vec<(u32, i64)>> = layer
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|(j, w)| (*j, (w * w_scale).round() as i64))
                .filter(|(_, w)| *w != 0)
                .collect()
        })
        .collect();
    let bias = layer
        .bias
        .iter()
        .map(|b| (b * scale * w_scale).round() as i64)
        .collect();
    if layer.gadget == Some(Gadget::Erf) && s < ERF_MIN_SCALE {
        return Err(KernelError::Unsupported {
            node: layer.nodes.last().cloned().unwrap_or_default(),
            op: layer.ops.last().cloned().unwrap_or_default(),
            reason: format!("the erf gadget needs --scale-bits of at least {ERF_MIN_SCALE}"),
        });
    }
    let mut seg = Layer {
        ops: layer.ops.clone(),
        nodes: layer.nodes.clone(),
        in_shape: layer.in_shape.clone(),
        out_shape: layer.out_shape.clone(),
        input,
        output: input,
        in_ranges,
        rows,
        bias,
        products,
        shift: s + extra,
        relu_rows: layer.relu_rows,
        gadget: layer.gadget,
        gadget_rows: layer.gadget_rows,
        gadget_floor: ((layer.gadget_floor * scale).round() as i64).max(1),
        act_scale: s,
        state: layer.state.clone(),
        q_bits: 0,
        norms,
    };
    let m = seg.row_out_bits().into_iter().max().unwrap_or(0);
    seg.q_bits = m;
    if seg.acc_bits() > MAX_ACC_BITS {
        return Err(KernelError::Unsupported {
            node: layer.nodes.last().cloned().unwrap_or_default(),
            op: layer.ops.last().cloned().unwrap_or_default(),
            reason: format!(
                "the accumulator needs {} bits (max {MAX_ACC_BITS}): lower --scale-bits",
                seg.acc_bits()
            ),
        });
    }
    seg.output = output_range(m, seg.all_relu());
    if seg.output.bits > MAX_VALUE_BITS {
        return Err(KernelError::Unsupported {
            node: layer.nodes.last().cloned().unwrap_or_default(),
            op: layer.ops.last().cloned().unwrap_or_default(),
            reason: format!(
                "the layer's outputs need {} bits over its whole input range (max \
                 {MAX_VALUE_BITS}): a cut's range covers every tensor in its state, so \
                 products of wide ranges grow fast; lower --scale-bits or the input range",
                seg.output.bits
            ),
        });
    }
    Ok(seg)
}

/// Sizes of a segment's keys, computed from its circuit shape the way setup lays them out:
/// the proving key file (a and both b queries per variable, l per witness, uncompressed
/// points) and the h table (domain - 1 bases, one point per window of
/// [`FixedBaseTable::best_window`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KeySize {
    /// FFT domain: constraints plus public inputs (and the constant one), rounded up to a
    /// power of two.
    pub domain: usize,
    pub pk_bytes: usize,
    pub h_table_bytes: usize,
}

impl KeySize {
    pub fn of(shape: &CircuitShape) -> KeySize {
        let vars = 1 + shape.public_inputs + shape.witnesses;
        let domain = shape.domain();
        let (g1, g2) = (64, 128);
        let h = domain - 1;
        let c = FixedBaseTable::best_window(h, PROVER_THREADS);
        let windows = 255u32.div_ceil(c) as usize;
        KeySize {
            domain,
            pk_bytes: vars * (2 * g1 + g2) + shape.witnesses * g1,
            h_table_bytes: h * windows * g1,
        }
    }
}

/// Estimated CPU prove time of a circuit on the reference 2-core machine: a fixed cost, a
/// cost per point of its FFT domain (the FFTs and the h query grow with it) and one per
/// constraint (the witness MSMs), fitted to 24 measured proofs of 1,542 to 28,920
/// constraints (domains 2^11 to 2^15; within 11%, README "Benchmarks"). An estimate for
/// placing cuts and sizing segments, not a measurement: `provnet bench prove` measures.
pub fn estimated_prove_ms(shape: &CircuitShape) -> f64 {
    3.9 + 2.66e-3 * shape.domain() as f64 + 0.24e-3 * shape.constraints as f64
}

/// The integer range the circuit enforces on model inputs.
pub fn input_range(opts: &ImportOptions) -> Result<Range> {
    let (min, max) = (opts.input_min, opts.input_max);
    if !(min.is_finite() && max.is_finite() && min < max) {
        return Err(KernelError::Input(format!(
            "--input-min {min} must be below --input-max {max}"
        )));
    }
    let scale = (1u64 << opts.scale_bits) as f64;
    let (lo, hi) = ((min * scale).floor(), (max * scale).ceil());
    if lo.abs() > 2f64.powi(62) || hi.abs() > 2f64.powi(62) {
        return Err(KernelError::Input("the input range is too wide".into()));
    }
    let (lo, hi) = (lo as i128, hi as i128);
    let (mut bits, signed) = (1u32, lo < 0);
    let range = |bits| Range { bits, signed };
    while !(range(bits).contains(lo) && range(bits).contains(hi)) {
        bits += 1;
    }
    Ok(range(bits))
}

/// What `provnet model import` prints and writes as `model.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub model_id: String,
    pub source_hash: String,
    pub scale_bits: u32,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub input_range: [i128; 2],
    pub total_constraints: usize,
    pub segments: Vec<SegmentSummary>,
}

/// One tensor of a cut's state.
#[derive(Clone, Debug, Serialize)]
pub struct StateTensor {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentSummary {
    pub index: usize,
    pub ops: Vec<String>,
    pub nodes: Vec<String>,
    /// Layers proven together (more than one when merged by cost).
    pub layers: usize,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// The tensors of the state at the segment's output cut, in order.
    pub state: Vec<StateTensor>,
    /// Outputs of the last layer through ReLU (the first ones); the rest are carried as
    /// they are.
    pub relu_outputs: usize,
    pub input_bits: u32,
    pub output_bits: u32,
    pub accumulator_bits: u32,
    pub weights: usize,
    pub constraints: usize,
    pub public_inputs: usize,
    /// Estimated CPU prove time ([`estimated_prove_ms`]).
    pub estimated_prove_ms: f64,
    pub keys: KeySize,
}

impl ModelSummary {
    pub fn of(model: &Model) -> ModelSummary {
        let segments: Vec<SegmentSummary> = model
            .segments
            .iter()
            .map(|s| {
                let shape = CircuitShape::of(s);
                SegmentSummary {
                    index: s.index,
                    ops: s.ops(),
                    nodes: s.nodes(),
                    layers: s.layers.len(),
                    input_shape: s.in_shape().to_vec(),
                    output_shape: s.out_shape().to_vec(),
                    state: s
                        .state()
                        .iter()
                        .map(|(name, shape)| StateTensor {
                            name: name.clone(),
                            shape: shape.clone(),
                        })
                        .collect(),
                    relu_outputs: s.last().relu_rows,
                    input_bits: s.input().bits,
                    output_bits: s.output().bits,
                    accumulator_bits: s.layers.iter().map(Layer::acc_bits).max().unwrap_or(0),
                    weights: s
                        .layers
                        .iter()
                        .flat_map(|l| l.rows.iter().map(Vec::len))
                        .sum(),
                    constraints: shape.constraints,
                    public_inputs: shape.public_inputs,
                    estimated_prove_ms: estimated_prove_ms(&shape),
                    keys: KeySize::of(&shape),
                }
            })
            .collect();
        let first = &model.segments[0].input();
        ModelSummary {
            name: model.name.clone(),
            model_id: hex(&model.id()),
            source_hash: model.source_hash.clone(),
            scale_bits: model.scale_bits,
            input_shape: model.input_shape.clone(),
            output_shape: model.output_shape.clone(),
            input_range: [first.lo(), first.hi()],
            total_constraints: segments.iter().map(|s| s.constraints).sum(),
            segments,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex characters (as written by [`hex`]) into 32 bytes.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Reads an ONNX file, quantizes it and writes a model directory (atomically).
pub fn import(onnx_path: &Path, out: &Path, opts: &ImportOptions) -> Result<ModelSummary> {
    let bytes = std::fs::read(onnx_path).map_err(|e| KernelError::io(onnx_path, e))?;
    let name = onnx_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let float = onnx::parse(&bytes, &name)?;
    let model = quantize(&float, hex(blake3::hash(&bytes).as_bytes()), opts)?;
    let summary = ModelSummary::of(&model);
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    write_dir_atomically(
        out,
        &[
            (PathBuf::from(MODEL_FILE), model.to_bytes()),
            (PathBuf::from(SUMMARY_FILE), json),
        ],
        false,
    )?;
    Ok(summary)
}
