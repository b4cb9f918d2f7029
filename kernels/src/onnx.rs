//! ONNX import: reads a model file into a chain of float affine layers.
//!
//! We read the protobuf directly (see `onnx_proto`) instead of pulling in a full inference
//! engine: provnet only needs the graph, the initializers and a handful of attributes, and
//! the lighter reader keeps the build small on 2-core machines.
//!
//! Every supported op lowers to one shape: `y = W x + b` (W as sparse rows over the flat,
//! row-major input), optionally followed by ReLU. Gemm and MatMul give dense rows, Conv gives
//! sparse rows (one per output pixel), Add folds into the bias, Flatten/Reshape only change
//! the recorded shape. A layer is one segment.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::error::{KernelError, Result};
use crate::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, DT_DOUBLE, DT_FLOAT, DT_INT32,
    DT_INT64,
};

/// One affine layer in floating point, as read from ONNX.
#[derive(Clone, Debug)]
pub struct FloatLayer {
    /// ONNX ops this layer covers, in graph order (e.g. `["Gemm", "Relu"]`).
    pub ops: Vec<String>,
    /// ONNX node names this layer covers.
    pub nodes: Vec<String>,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    /// Per output: (input index, weight).
    pub rows: Vec<Vec<(u32, f64)>>,
    pub bias: Vec<f64>,
    pub relu: bool,
}

impl FloatLayer {
    /// Exact float evaluation (f64), the reference the quantized model is measured against.
    pub fn eval(&self, x: &[f64]) -> Vec<f64> {
        self.rows
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| {
                let y = row.iter().fold(*b, |acc, (j, w)| acc + w * x[*j as usize]);
                if self.relu {
                    y.max(0.0)
                } else {
                    y
                }
            })
            .collect()
    }
}

/// A whole ONNX model lowered to a chain of affine layers.
#[derive(Clone, Debug)]
pub struct FloatModel {
    pub name: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub layers: Vec<FloatLayer>,
}

impl FloatModel {
    /// Runs the float reference on a flat input.
    pub fn eval(&self, x: &[f64]) -> Vec<f64> {
        self.layers
            .iter()
            .fold(x.to_vec(), |acc, layer| layer.eval(&acc))
    }
}

/// Reads and lowers an ONNX file.
pub fn load(path: &Path) -> Result<FloatModel> {
    let bytes = std::fs::read(path).map_err(|e| KernelError::io(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    parse(&bytes, &name)
}

/// Lowers ONNX bytes.
pub fn parse(bytes: &[u8], name: &str) -> Result<FloatModel> {
    let model =
        ModelProto::decode(bytes).map_err(|e| KernelError::OnnxDecode(format!("protobuf: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| KernelError::OnnxDecode("the file holds no graph".into()))?;
    if graph.node.is_empty() {
        return Err(KernelError::OnnxDecode("the graph has no nodes".into()));
    }
    Lowering::new(&graph, name)?.run(&graph)
}

struct Lowering<'g> {
    name: String,
    inits: HashMap<&'g str, &'g TensorProto>,
    input_shape: Vec<usize>,
    current: String,
    shape: Vec<usize>,
    layers: Vec<FloatLayer>,
    /// Shape-only ops seen before the next affine op starts a layer.
    pending: Vec<(String, String)>,
    /// Whether the last layer may still take a bias or a ReLU.
    open: bool,
}

impl<'g> Lowering<'g> {
    fn new(graph: &'g GraphProto, name: &str) -> Result<Self> {
        let inits: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let input = graph
            .input
            .iter()
            .find(|i| !inits.contains_key(i.name.as_str()))
            .ok_or_else(|| KernelError::Graph("the graph declares no data input".into()))?;
        let dims = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .ok_or_else(|| KernelError::Graph(format!("input '{}' has no shape", input.name)))?;
        let mut full = Vec::new();
        for (i, d) in dims.dim.iter().enumerate() {
            match d.dim_value {
                Some(v) if v > 0 => full.push(v as usize),
                _ if i == 0 => full.push(1), // symbolic batch dimension
                _ => {
                    return Err(KernelError::Graph(format!(
                        "input '{}' dimension {i} is not a fixed size",
                        input.name
                    )))
                }
            }
        }
        if full.len() < 2 || full[0] != 1 {
            return Err(KernelError::Graph(format!(
                "input '{}' must have shape [1, ...] (batch 1), got {full:?}",
                input.name
            )));
        }
        let shape = full[1..].to_vec();
        Ok(Lowering {
            name: name.to_string(),
            inits,
            input_shape: shape.clone(),
            current: input.name.clone(),
            shape,
            layers: Vec::new(),
            pending: Vec::new(),
            open: false,
        })
    }

    fn run(mut self, graph: &GraphProto) -> Result<FloatModel> {
        for node in &graph.node {
            self.node(node)?;
        }
        let out = graph
            .output
            .first()
            .ok_or_else(|| KernelError::Graph("the graph declares no output".into()))?;
        if out.name != self.current {
            return Err(KernelError::Graph(format!(
                "graph output '{}' is not the end of the op chain (which ends at '{}'): \
                 only single-path graphs are supported",
                out.name, self.current
            )));
        }
        if self.layers.is_empty() {
            return Err(KernelError::Graph(
                "the graph has no Gemm, MatMul or Conv: nothing to prove".into(),
            ));
        }
        if let Some(last) = self.layers.last_mut() {
            for (op, node) in self.pending.drain(..) {
                last.ops.push(op);
                last.nodes.push(node);
            }
            last.out_shape = self.shape.clone();
        }
        Ok(FloatModel {
            name: self.name,
            input_shape: self.input_shape,
            output_shape: self.shape,
            layers: self.layers,
        })
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let unsupported = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(unsupported(format!("custom op domain '{}'", node.domain)));
        }
        if !node.input.contains(&self.current) {
            return Err(unsupported(format!(
                "does not consume the previous result '{}': only single-path graphs are supported",
                self.current
            )));
        }
        match node.op_type.as_str() {
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Conv" => self.conv(node),
            "Add" => self.add(node),
            "Relu" => self.relu(node),
            "Flatten" => {
                let axis = attr_int(node, "axis").unwrap_or(1);
                if axis != 1 && axis != 0 {
                    return Err(unsupported(format!("Flatten axis {axis} (only 0 or 1)")));
                }
                self.shape = vec![self.shape.iter().product()];
                self.shape_op(node)
            }
            "Reshape" => self.reshape(node),
            "Identity" => self.shape_op(node),
            other => Err(unsupported(format!(
                "op {other} is not supported (supported: Gemm, MatMul, Add, Relu, Conv, Flatten, Reshape, Identity)"
            ))),
        }?;
        self.current = node
            .output
            .first()
            .cloned()
            .ok_or_else(|| unsupported("node has no output".into()))?;
        Ok(())
    }

    fn shape_op(&mut self, node: &NodeProto) -> Result<()> {
        self.pending
            .push((node.op_type.clone(), node_name(node).to_string()));
        Ok(())
    }

    fn push_layer(
        &mut self,
        node: &NodeProto,
        out_shape: Vec<usize>,
        rows: Vec<Vec<(u32, f64)>>,
        bias: Vec<f64>,
    ) -> Result<()> {
        let mut ops: Vec<String> = Vec::new();
        let mut nodes: Vec<String> = Vec::new();
        for (op, name) in self.pending.drain(..) {
            ops.push(op);
            nodes.push(name);
        }
        ops.push(node.op_type.clone());
        nodes.push(node_name(node));
        self.layers.push(FloatLayer {
            ops,
            nodes,
            in_shape: self.shape.clone(),
            out_shape: out_shape.clone(),
            rows,
            bias,
            relu: false,
        });
        self.shape = out_shape;
        self.open = true;
        Ok(())
    }

    fn weight(&self, node: &NodeProto, idx: usize) -> Result<(Vec<usize>, Vec<f64>)> {
        let name = node
            .input
            .get(idx)
            .ok_or_else(|| KernelError::Unsupported {
                node: node_name(node),
                op: node.op_type.clone(),
                reason: format!("missing input {idx}"),
            })?;
        let t = self
            .inits
            .get(name.as_str())
            .ok_or_else(|| KernelError::Unsupported {
                node: node_name(node),
                op: node.op_type.clone(),
                reason: format!("input '{name}' must be a constant initializer"),
            })?;
        let dims = t.dims.iter().map(|d| *d as usize).collect::<Vec<_>>();
        let data = float_data(t).map_err(|reason| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        })?;
        if data.len() != dims.iter().product::<usize>() {
            return Err(KernelError::OnnxDecode(format!(
                "initializer '{name}' has {} values for shape {dims:?}",
                data.len()
            )));
        }
        Ok((dims, data))
    }

    fn flat_input(&self, node: &NodeProto) -> Result<usize> {
        if self.shape.len() != 1 {
            return Err(KernelError::Unsupported {
                node: node_name(node),
                op: node.op_type.clone(),
                reason: format!(
                    "input shape {:?} must be [1, K]: add a Flatten before it",
                    self.shape
                ),
            });
        }
        Ok(self.shape[0])
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        if node.input.first() != Some(&self.current) || attr_int(node, "transA").unwrap_or(0) != 0 {
            return Err(err("only Gemm(x, W, b) with transA = 0 is supported".into()));
        }
        let k = self.flat_input(node)?;
        let alpha = attr_float(node, "alpha").unwrap_or(1.0) as f64;
        let beta = attr_float(node, "beta").unwrap_or(1.0) as f64;
        let trans_b = attr_int(node, "transB").unwrap_or(0) != 0;
        let (dims, w) = self.weight(node, 1)?;
        if dims.len() != 2 {
            return Err(err(format!("weight shape {dims:?} is not 2-D")));
        }
        let (wk, n) = if trans_b {
            (dims[1], dims[0])
        } else {
            (dims[0], dims[1])
        };
        if wk != k {
            return Err(err(format!(
                "weight shape {dims:?} does not take {k} inputs"
            )));
        }
        let rows = (0..n)
            .map(|o| {
                (0..k)
                    .filter_map(|i| {
                        let v = if trans_b { w[o * k + i] } else { w[i * n + o] } * alpha;
                        (v != 0.0).then_some((i as u32, v))
                    })
                    .collect()
            })
            .collect();
        let mut bias = vec![0.0; n];
        if node.input.len() > 2 && !node.input[2].is_empty() {
            let (_, b) = self.weight(node, 2)?;
            broadcast_add(&mut bias, &b, &[n]).map_err(err)?;
            bias.iter_mut().for_each(|b| *b *= beta);
        }
        self.push_layer(node, vec![n], rows, bias)
    }

    fn matmul(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        if node.input.first() != Some(&self.current) {
            return Err(err(
                "only MatMul(x, W) with a constant W is supported".into()
            ));
        }
        let k = self.flat_input(node)?;
        let (dims, w) = self.weight(node, 1)?;
        if dims.len() != 2 || dims[0] != k {
            return Err(err(format!(
                "weight shape {dims:?} does not take {k} inputs"
            )));
        }
        let n = dims[1];
        let rows = (0..n)
            .map(|o| {
                (0..k)
                    .filter_map(|i| (w[i * n + o] != 0.0).then_some((i as u32, w[i * n + o])))
                    .collect()
            })
            .collect();
        self.push_layer(node, vec![n], rows, vec![0.0; n])
    }

    fn add(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        let ready =
            self.open && self.pending.is_empty() && self.layers.last().is_some_and(|l| !l.relu);
        if !ready {
            return Err(err(
                "Add is supported only as a bias right after Gemm, MatMul or Conv".into(),
            ));
        }
        let other = if node.input.first() == Some(&self.current) {
            1
        } else {
            0
        };
        let (_, b) = self.weight(node, other)?;
        let shape = self.shape.clone();
        let layer = self.layers.last_mut().expect("checked above");
        broadcast_add(&mut layer.bias, &b, &shape).map_err(err)?;
        layer.ops.push("Add".into());
        layer.nodes.push(node_name(node));
        Ok(())
    }

    fn relu(&mut self, node: &NodeProto) -> Result<()> {
        let ready =
            self.open && self.pending.is_empty() && self.layers.last().is_some_and(|l| !l.relu);
        if !ready {
            return Err(KernelError::Unsupported {
                node: node_name(node),
                op: node.op_type.clone(),
                reason: "Relu is supported only right after Gemm, MatMul, Conv or a bias Add"
                    .into(),
            });
        }
        let layer = self.layers.last_mut().expect("checked above");
        layer.relu = true;
        layer.ops.push("Relu".into());
        layer.nodes.push(node_name(node));
        self.open = false;
        Ok(())
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        let name = node
            .input
            .get(1)
            .ok_or_else(|| err("missing shape input".into()))?;
        let t = self
            .inits
            .get(name.as_str())
            .ok_or_else(|| err("the target shape must be a constant initializer".into()))?;
        let target = int_data(t).map_err(err)?;
        if target
            .first()
            .is_some_and(|d| *d != 1 && *d != -1 && *d != 0)
        {
            return Err(err(format!(
                "target shape {target:?} changes the batch of 1"
            )));
        }
        let total: usize = self.shape.iter().product();
        let mut dims: Vec<i64> = target.iter().skip(1).copied().collect();
        for (i, d) in dims.iter_mut().enumerate() {
            if *d == 0 {
                *d = *self
                    .shape
                    .get(i)
                    .ok_or_else(|| err("bad 0 dimension".into()))? as i64;
            }
        }
        let known: i64 = dims.iter().filter(|d| **d > 0).product();
        let unknown = dims.iter().filter(|d| **d == -1).count();
        if unknown > 1 || dims.iter().any(|d| *d < -1) || known == 0 {
            return Err(err(format!("bad target shape {target:?}")));
        }
        let dims: Vec<usize> = dims
            .iter()
            .map(|d| {
                if *d == -1 {
                    total / known as usize
                } else {
                    *d as usize
                }
            })
            .collect();
        if dims.iter().product::<usize>() != total {
            return Err(err(format!(
                "cannot reshape {:?} into {target:?}",
                self.shape
            )));
        }
        self.shape = dims;
        self.shape_op(node)
    }

    fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| KernelError::Unsupported {
            node: node_name(node),
            op: node.op_type.clone(),
            reason,
        };
        if node.input.first() != Some(&self.current) || self.shape.len() != 3 {
            return Err(err(format!(
                "Conv needs a [1, C, H, W] data input, got [1, {:?}]",
                self.shape
            )));
        }
        if attr_int(node, "group").unwrap_or(1) != 1 {
            return Err(err("grouped convolution is not supported".into()));
        }
        if let Some(a) = node.attribute.iter().find(|a| a.name == "auto_pad") {
            let pad = String::from_utf8_lossy(&a.s);
            if !(pad.is_empty() || pad == "NOTSET" || pad == "VALID") {
                return Err(err(format!(
                    "auto_pad {pad} is not supported: use explicit pads"
                )));
            }
        }
        let (c, h, w) = (self.shape[0], self.shape[1], self.shape[2]);
        let (kd, kw_data) = self.weight(node, 1)?;
        if kd.len() != 4 || kd[1] != c {
            return Err(err(format!(
                "kernel shape {kd:?} does not fit {c} input channels"
            )));
        }
        let (m, kh, kw) = (kd[0], kd[2], kd[3]);
        let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0, 0, 0, 0]);
        if strides.len() != 2 || dil.len() != 2 || pads.len() != 4 {
            return Err(err("only 2-D convolution is supported".into()));
        }
        if strides.iter().chain(&dil).any(|v| *v < 1) || pads.iter().any(|v| *v < 0) {
            return Err(err("strides/dilations must be >= 1 and pads >= 0".into()));
        }
        let [sh, sw, dh, dw] = [strides[0], strides[1], dil[0], dil[1]].map(|v| v as usize);
        let (pt, pl) = (pads[0], pads[1]);
        let eff_h = h as i64 + pads[0] + pads[2] - (dh * (kh - 1)) as i64;
        let eff_w = w as i64 + pads[1] + pads[3] - (dw * (kw - 1)) as i64;
        if eff_h < 1 || eff_w < 1 {
            return Err(err(format!(
                "kernel {kh}x{kw} is larger than the padded input"
            )));
        }
        let oh = (eff_h as usize - 1) / sh + 1;
        let ow = (eff_w as usize - 1) / sw + 1;
        let mut rows = Vec::with_capacity(m * oh * ow);
        for oc in 0..m {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut row = Vec::new();
                    for ic in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky * dh) as i64 - pt;
                                let ix = (ox * sw + kx * dw) as i64 - pl;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let v = kw_data[((oc * c + ic) * kh + ky) * kw + kx];
                                if v != 0.0 {
                                    let idx = (ic * h + iy as usize) * w + ix as usize;
                                    row.push((idx as u32, v));
                                }
                            }
                        }
                    }
                    rows.push(row);
                }
            }
        }
        let mut bias = vec![0.0; m * oh * ow];
        if node.input.len() > 2 && !node.input[2].is_empty() {
            let (_, b) = self.weight(node, 2)?;
            broadcast_add(&mut bias, &b, &[m, oh, ow]).map_err(err)?;
        }
        self.push_layer(node, vec![m, oh, ow], rows, bias)
    }
}

/// Adds `b` to `acc` (shape `shape`): elementwise, scalar, or per channel for [C, H, W].
fn broadcast_add(acc: &mut [f64], b: &[f64], shape: &[usize]) -> Result<(), String> {
    if b.len() == acc.len() {
        acc.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    } else if b.len() == 1 {
        acc.iter_mut().for_each(|a| *a += b[0]);
    } else if shape.len() == 3 && b.len() == shape[0] {
        let plane = shape[1] * shape[2];
        acc.iter_mut()
            .enumerate()
            .for_each(|(i, a)| *a += b[i / plane]);
    } else {
        return Err(format!(
            "bias of {} values does not broadcast to shape {shape:?}",
            b.len()
        ));
    }
    Ok(())
}

fn node_name(node: &NodeProto) -> String {
    if node.name.is_empty() {
        format!("<{} -> {}>", node.op_type, node.output.join(","))
    } else {
        node.name.clone()
    }
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn attr_float(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn float_data(t: &TensorProto) -> Result<Vec<f64>, String> {
    if t.data_location == 1 {
        return Err(format!(
            "tensor '{}' uses external data, which is not supported",
            t.name
        ));
    }
    match t.data_type {
        DT_FLOAT if !t.raw_data.is_empty() => {
            if t.raw_data.len() % 4 != 0 {
                return Err(format!(
                    "tensor '{}' raw data is not a whole number of floats",
                    t.name
                ));
            }
            Ok(t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect())
        }
        DT_FLOAT => Ok(t.float_data.iter().map(|v| *v as f64).collect()),
        DT_DOUBLE if !t.raw_data.is_empty() => {
            if t.raw_data.len() % 8 != 0 {
                return Err(format!(
                    "tensor '{}' raw data is not a whole number of doubles",
                    t.name
                ));
            }
            Ok(t.raw_data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect())
        }
        DT_DOUBLE => Ok(t.double_data.clone()),
        other => Err(format!(
            "tensor '{}' has element type {other}; only float32/float64 weights are supported",
            t.name
        )),
    }
}

fn int_data(t: &TensorProto) -> Result<Vec<i64>, String> {
    match t.data_type {
        DT_INT64 if !t.raw_data.is_empty() => {
            if t.raw_data.len() % 8 != 0 {
                return Err(format!(
                    "tensor '{}' raw data is not a whole number of int64",
                    t.name
                ));
            }
            Ok(t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect())
        }
        DT_INT64 => Ok(t.int64_data.clone()),
        DT_INT32 => Ok(t.int32_data.iter().map(|v| *v as i64).collect()),
        other => Err(format!(
            "tensor '{}' has element type {other}, expected int64",
            t.name
        )),
    }
}
