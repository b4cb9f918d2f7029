//! Quantization: float layers from ONNX to a provnet [`Model`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::circuit::CircuitShape;
use crate::error::{KernelError, Result};
use crate::model::{
    output_range, write_dir_atomically, Model, Range, Segment, MAX_ACC_BITS, MAX_EXTRA_WEIGHT_BITS,
    MODEL_FILE, MODEL_VERSION, SUMMARY_FILE,
};
use crate::onnx::{self, FloatModel};

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
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            scale_bits: DEFAULT_SCALE_BITS,
            input_min: DEFAULT_INPUT_MIN,
            input_max: DEFAULT_INPUT_MAX,
        }
    }
}

/// Quantizes a float model.
pub fn quantize(float: &FloatModel, source_hash: String, opts: &ImportOptions) -> Result<Model> {
    let s = opts.scale_bits;
    if !(1..=24).contains(&s) {
        return Err(KernelError::Input(format!(
            "--scale-bits {s} is out of range (1..=24)"
        )));
    }
    let mut input = input_range(opts)?;
    let scale = (1u64 << s) as f64;
    let mut segments = Vec::with_capacity(float.layers.len());
    for (index, layer) in float.layers.iter().enumerate() {
        // Small weights get a finer scale: as many extra bits as the largest stays under 1.
        let largest = layer
            .rows
            .iter()
            .flatten()
            .fold(0.0f64, |m, (_, w)| m.max(w.abs()));
        let extra = if largest > 0.0 {
            ((1.0 / largest).log2().floor().max(0.0) as u32).min(MAX_EXTRA_WEIGHT_BITS)
        } else {
            0
        };
        let w_scale = (1u64 << (s + extra)) as f64;
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
        let mut seg = Segment {
            index,
            ops: layer.ops.clone(),
            nodes: layer.nodes.clone(),
            in_shape: layer.in_shape.clone(),
            out_shape: layer.out_shape.clone(),
            input,
            output: input,
            rows,
            bias,
            shift: s + extra,
            relu: layer.relu,
            q_bits: 0,
        };
        let m = seg.row_q_bits().into_iter().max().unwrap_or(0);
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
        seg.output = output_range(m, seg.relu);
        input = seg.output;
        segments.push(seg);
    }
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

#[derive(Clone, Debug, Serialize)]
pub struct SegmentSummary {
    pub index: usize,
    pub ops: Vec<String>,
    pub nodes: Vec<String>,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub input_bits: u32,
    pub output_bits: u32,
    pub accumulator_bits: u32,
    pub weights: usize,
    pub constraints: usize,
    pub public_inputs: usize,
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
                    ops: s.ops.clone(),
                    nodes: s.nodes.clone(),
                    input_shape: s.in_shape.clone(),
                    output_shape: s.out_shape.clone(),
                    input_bits: s.input.bits,
                    output_bits: s.output.bits,
                    accumulator_bits: s.acc_bits(),
                    weights: s.rows.iter().map(Vec::len).sum(),
                    constraints: shape.constraints,
                    public_inputs: shape.public_inputs,
                }
            })
            .collect();
        let first = &model.segments[0].input;
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
