//! ONNX import: reads a model file (a DAG of ops) into a chain of float affine layers over
//! the model's *state*.
//!
//! We read the protobuf directly (see `onnx_proto`) instead of pulling in a full inference
//! engine: provnet only needs the graph, the initializers and a handful of attributes, and
//! the lighter reader keeps the build small on 2-core machines.
//!
//! **The graph IR.** Nodes are walked in the file's (topological) order. Every activation
//! is kept as an affine map of the *base state*: the flat concatenation of the tensors the
//! last layer produced (at the start, the model's input). Affine ops only compose maps, so
//! they cost no constraints: Gemm, MatMul and Conv against constants, Add, Sub, Mul and Div
//! by constants (broadcast the ONNX way), Add and Sub of two activations (residuals),
//! BatchNormalization (inference form), AveragePool and GlobalAveragePool, and data
//! movement (Transpose, Slice, Gather with constant indices; Reshape, Flatten, Squeeze and
//! Unsqueeze only change the shape).
//!
//! A non-linear op ends a layer, which is a cut: the layer's outputs are the op's rows
//! (through ReLU) followed by every other tensor still live (consumed by a later node or a
//! graph output), unchanged. That output is the state at the cut, so a residual stream
//! crosses cuts as part of the state, and the next layer's maps are over it. MaxPool is
//! lowered exactly onto such layers (see [`Lowering::max_pool`]). At the end, the graph
//! output is the last layer's output (a layer of its own when the last ops were affine).
//! A layer is one segment, or with `ImportOptions::merge`, consecutive layers share one
//! (see `import::quantize`).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::error::{KernelError, Result};
use crate::gadgets::Gadget;
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
    /// Per output (or empty): products (a, b, c) adding c * x_a * x_b.
    pub products: Vec<Vec<(u32, u32, f64)>>,
    /// The first `relu_rows` outputs pass through ReLU; the rest are carried as they are.
    pub relu_rows: usize,
    /// The first `gadget_rows` outputs end in `gadget` instead (a layer has ReLU rows or
    /// these, not both): 1/sqrt(v), 1/v or exp(v) of their value v.
    pub gadget: Option<Gadget>,
    pub gadget_rows: usize,
    /// The inverse powers' input floor, as a real value (their input is max(v, floor),
    /// with the floor at least one unit once quantized).
    pub gadget_floor: f64,
    /// The tensors of the output state, in order: (ONNX name, shape).
    pub state: Vec<(String, Vec<usize>)>,
}

impl FloatLayer {
    /// Exact float evaluation (f64), the reference the quantized model is measured against.
    pub fn eval(&self, x: &[f64]) -> Vec<f64> {
        self.rows
            .iter()
            .zip(&self.bias)
            .enumerate()
            .map(|(i, (row, b))| {
                let y = row.iter().fold(*b, |acc, (j, w)| acc + w * x[*j as usize]);
                let y = self.products.get(i).map_or(y, |p| {
                    p.iter().fold(y, |acc, (a, c, w)| {
                        acc + w * x[*a as usize] * x[*c as usize]
                    })
                });
                if i < self.relu_rows {
                    y.max(0.0)
                } else if let Some(g) = self.gadget.filter(|_| i < self.gadget_rows) {
                    match g {
                        Gadget::Rsqrt => 1.0 / y.max(f64::MIN_POSITIVE).sqrt(),
                        Gadget::Recip => 1.0 / y.max(self.gadget_floor),
                        Gadget::Exp => y.exp(),
                        Gadget::Erf => libm::erf(y),
                    }
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

/// Rows over the base state: per output, weights, a bias and products of two base values
/// (`quad`, empty when no row has one).
#[derive(Clone, Debug, Default, PartialEq)]
struct Rows {
    lin: Vec<Vec<(u32, f64)>>,
    bias: Vec<f64>,
    quad: Vec<Vec<(u32, u32, f64)>>,
}

impl Rows {
    /// Every weight, coefficient and bias times `c`.
    fn scale(&mut self, c: f64) {
        self.lin.iter_mut().flatten().for_each(|(_, w)| *w *= c);
        self.quad.iter_mut().flatten().for_each(|(_, _, w)| *w *= c);
        self.bias.iter_mut().for_each(|b| *b *= c);
    }
}

/// An activation as a map of the base state: a slice of it (as the last layer produced
/// it), or rows over it, affine or (after a product of two activations) quadratic.
#[derive(Clone, Debug, PartialEq)]
enum Map {
    /// Elements `offset..offset + len` of the base state.
    Slice(u32),
    Rows(Rows),
}

impl Map {
    /// The map's rows, `n` of them.
    fn into_rows(self, n: usize) -> Rows {
        match self {
            Map::Slice(off) => Rows {
                lin: (0..n as u32).map(|i| vec![(off + i, 1.0)]).collect(),
                bias: vec![0.0; n],
                quad: Vec::new(),
            },
            Map::Rows(r) => r,
        }
    }

    /// Output i is this map's output `source[i]`.
    fn select(&self, source: impl IntoIterator<Item = usize>) -> Map {
        let rows: Vec<Vec<(u32, f64)>> =
            source.into_iter().map(|j| vec![(j as u32, 1.0)]).collect();
        let n = rows.len();
        self.then(rows, vec![0.0; n])
    }

    /// `outer(self)`: outer's rows (weights over this map's outputs, then `shift`).
    fn then(&self, rows: Vec<Vec<(u32, f64)>>, shift: Vec<f64>) -> Map {
        match self {
            Map::Slice(0) => Map::Rows(Rows {
                lin: rows,
                bias: shift,
                quad: Vec::new(),
            }),
            Map::Slice(off) => Map::Rows(Rows {
                lin: rows
                    .into_iter()
                    .map(|r| r.into_iter().map(|(j, w)| (j + off, w)).collect())
                    .collect(),
                bias: shift,
                quad: Vec::new(),
            }),
            Map::Rows(inner) => Map::Rows(compose(&rows, &shift, inner)),
        }
    }
}

/// The non-linear step a layer applies to its first rows.
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Gadget(Gadget),
}

/// A live activation: its shape and its map of the base state.
#[derive(Clone, Debug)]
struct Sym {
    shape: Vec<usize>,
    map: Map,
    /// Definition order, which orders the tensors carried across a cut.
    born: usize,
}

struct Lowering<'g> {
    name: String,
    inits: HashMap<&'g str, &'g TensorProto>,
    input_shape: Vec<usize>,
    /// The base state's tensors (name, shape), in order, and its flat length.
    base: Vec<(String, Vec<usize>)>,
    base_len: usize,
    /// Live activations, each a map of the base state.
    env: HashMap<String, Sym>,
    /// Per tensor, the node inputs that will still read it (graph outputs hold one more).
    uses: HashMap<String, usize>,
    born: usize,
    /// The activation the node in hand reads (its name, shape and map): ops update these.
    current: String,
    shape: Vec<usize>,
    map: Map,
    layers: Vec<FloatLayer>,
    /// Ops since the last layer, which the next layer records.
    pending: Vec<(String, String)>,
    /// The floor the next layer's inverse power gadget takes (see `FloatLayer`).
    gadget_floor: Option<f64>,
    /// Tensors stored as the reciprocal of what ONNX computes: a Sqrt's output, held as
    /// 1/sqrt, which only a Div may read (as its divisor, `a / sqrt(v) = a * rsqrt(v)`).
    inverted: std::collections::HashSet<String>,
}

/// `outer(inner(x))`: outer's rows and bias over inner's outputs, composed.
fn compose(outer: &[Vec<(u32, f64)>], outer_bias: &[f64], inner: &Rows) -> Rows {
    let mut acc: HashMap<u32, f64> = HashMap::new();
    let mut qacc: HashMap<(u32, u32), f64> = HashMap::new();
    let mut out = Rows::default();
    for (row, b) in outer.iter().zip(outer_bias) {
        acc.clear();
        qacc.clear();
        let mut bo = *b;
        for (k, w) in row {
            let k = *k as usize;
            bo += w * inner.bias[k];
            for (j, v) in &inner.lin[k] {
                *acc.entry(*j).or_default() += w * v;
            }
            for (a, c, v) in inner.quad.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                *qacc.entry((*a, *c)).or_default() += w * v;
            }
        }
        out.lin.push(sparse(&acc));
        out.bias.push(bo);
        if !inner.quad.is_empty() {
            out.quad.push(sparse_pairs(&qacc));
        }
    }
    out
}

/// Products from accumulated coefficients: the non-zero ones, by pair.
fn sparse_pairs(acc: &HashMap<(u32, u32), f64>) -> Vec<(u32, u32, f64)> {
    let mut r: Vec<(u32, u32, f64)> = acc
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|((a, b), v)| (*a, *b, *v))
        .collect();
    r.sort_unstable_by_key(|(a, b, _)| (*a, *b));
    r
}

/// A row from accumulated weights: the non-zero ones, by input index.
fn sparse(acc: &HashMap<u32, f64>) -> Vec<(u32, f64)> {
    let mut r: Vec<(u32, f64)> = acc
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(j, v)| (*j, *v))
        .collect();
    r.sort_unstable_by_key(|(j, _)| *j);
    r
}

/// Appends `more`'s rows to `all`'s (padding the products where only one side has any).
fn append(all: &mut Rows, more: Rows) {
    let (n, m) = (all.lin.len(), more.lin.len());
    if !more.quad.is_empty() || !all.quad.is_empty() {
        all.quad.resize(n, Vec::new());
        let mut q = more.quad;
        q.resize(m, Vec::new());
        all.quad.extend(q);
    }
    all.lin.extend(more.lin);
    all.bias.extend(more.bias);
}

/// `a + sign * b`, row by row (two maps of the same length over the same base).
/// Most products one element of a Mul of two affine maps may expand into; past it the
/// operands are stored instead (a cut: each stored value costs an accumulator
/// decomposition of some 30 bits, and the cut re-checks the range of everything live).
const EXPAND_PRODUCTS: usize = 4;

/// The elementwise product of two affine maps as one quadratic map, output i reading a's
/// element i and b's element `pick[i]`: (sum a_x x + c)(sum b_y y + d) = sum a_x b_y x y +
/// d sum a_x x + c sum b_y y + c d. None when either map already has products, or an
/// element would expand into more than [`EXPAND_PRODUCTS`].
fn expand_product(a: &Rows, b: &Rows, pick: &[usize]) -> Option<Rows> {
    let affine = |r: &Rows| r.quad.iter().all(Vec::is_empty);
    if !affine(a) || !affine(b) {
        return None;
    }
    let mut out = Rows::default();
    for (i, &j) in pick.iter().enumerate() {
        let (la, lb) = (&a.lin[i], &b.lin[j]);
        if la.len() * lb.len() > EXPAND_PRODUCTS {
            return None;
        }
        let (c, d) = (a.bias[i], b.bias[j]);
        out.quad.push(
            la.iter()
                .flat_map(|(x, wa)| lb.iter().map(move |(y, wb)| (*x, *y, wa * wb)))
                .collect(),
        );
        let mut lin: Vec<(u32, f64)> = Vec::with_capacity(la.len() + lb.len());
        for (x, w) in la
            .iter()
            .map(|(x, w)| (*x, w * d))
            .chain(lb.iter().map(|(y, w)| (*y, w * c)))
        {
            match lin.iter_mut().find(|(k, _)| *k == x) {
                Some((_, acc)) => *acc += w,
                None => lin.push((x, w)),
            }
        }
        lin.retain(|(_, w)| *w != 0.0);
        out.lin.push(lin);
        out.bias.push(c * d);
    }
    Some(out)
}

fn add_rows(a: Rows, b: Rows, sign: f64) -> Map {
    let n = a.lin.len();
    // Each output reads its own a and b: rows of one map over [a; b] outputs.
    let outer: Vec<Vec<(u32, f64)>> = (0..n as u32)
        .map(|i| vec![(i, 1.0), (i + n as u32, sign)])
        .collect();
    let mut both = a;
    append(&mut both, b);
    Map::Rows(compose(&outer, &vec![0.0; n], &both))
}

impl<'g> Lowering<'g> {
    fn new(graph: &'g GraphProto, name: &str) -> Result<Self> {
        let mut inits: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        // Constant nodes (PyTorch emits them for shapes and scalars) are initializers too.
        for node in &graph.node {
            if node.op_type == "Constant" {
                let t = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| unsupported(node, "only Constant with a tensor `value`"))?;
                if let Some(out) = node.output.first() {
                    inits.insert(out.as_str(), t);
                }
            }
        }
        let input = graph
            .input
            .iter()
            .find(|i| !inits.contains_key(i.name.as_str()))
            .ok_or_else(|| KernelError::Graph("the graph declares no data input".into()))?;
        if let Some(more) = graph
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_str()))
            .nth(1)
        {
            return Err(KernelError::Graph(format!(
                "the graph has more than one data input ('{}' and '{}'): only one is supported",
                input.name, more.name
            )));
        }
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
        let [out] = &graph.output[..] else {
            return Err(KernelError::Graph(format!(
                "the graph declares {} outputs: exactly one is supported",
                graph.output.len()
            )));
        };
        let mut uses: HashMap<String, usize> = HashMap::new();
        for node in &graph.node {
            for i in node.input.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        *uses.entry(out.name.clone()).or_default() += 1;
        let env = HashMap::from([(
            input.name.clone(),
            Sym {
                shape: shape.clone(),
                map: Map::Slice(0),
                born: 0,
            },
        )]);
        Ok(Lowering {
            name: name.to_string(),
            inits,
            input_shape: shape.clone(),
            base: vec![(input.name.clone(), shape.clone())],
            base_len: shape.iter().product(),
            env,
            uses,
            born: 1,
            current: input.name.clone(),
            shape,
            map: Map::Slice(0),
            layers: Vec::new(),
            pending: Vec::new(),
            gadget_floor: None,
            inverted: Default::default(),
        })
    }

    fn run(mut self, graph: &GraphProto) -> Result<FloatModel> {
        for node in &graph.node {
            self.node(node)?;
        }
        let out = &graph.output[0].name;
        let sym = self.env.get(out).cloned().ok_or_else(|| {
            KernelError::Graph(format!("graph output '{out}' is not computed by any node"))
        })?;
        let n: usize = sym.shape.iter().product();
        let done = matches!(sym.map, Map::Slice(0)) && n == self.base_len;
        if !done || self.layers.is_empty() {
            // The last ops were affine: they make a layer of their own, whose output is the
            // graph output (the only tensor still live).
            self.layer(None)?;
        }
        if self.layers.is_empty() {
            return Err(KernelError::Graph(
                "the graph has no Gemm, MatMul or Conv: nothing to prove".into(),
            ));
        }
        let last = self.layers.last_mut().expect("checked above");
        for (op, node) in self.pending.drain(..) {
            last.ops.push(op);
            last.nodes.push(node);
        }
        last.out_shape = sym.shape.clone();
        last.state = vec![(out.clone(), sym.shape.clone())];
        Ok(FloatModel {
            name: self.name,
            input_shape: self.input_shape,
            output_shape: sym.shape,
            layers: self.layers,
        })
    }

    /// The activations a node reads (its inputs that are not constants).
    fn activations<'n>(&self, node: &'n NodeProto) -> Vec<&'n String> {
        node.input
            .iter()
            .filter(|i| !i.is_empty() && !self.inits.contains_key(i.as_str()))
            .collect()
    }

    /// Marks one read of `name` done; a tensor nothing reads any more leaves the state.
    fn consume(&mut self, name: &str) {
        if let Some(u) = self.uses.get_mut(name) {
            *u = u.saturating_sub(1);
            if *u == 0 {
                self.env.remove(name);
            }
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(err(format!("custom op domain '{}'", node.domain)));
        }
        if node.op_type == "Constant" {
            return Ok(()); // read as an initializer
        }
        let acts = self.activations(node);
        let Some(first) = acts.first().map(|s| s.to_string()) else {
            return Err(err("reads no activation (only constants)".into()));
        };
        for a in &acts {
            if !self.env.contains_key(a.as_str()) {
                return Err(err(format!(
                    "input '{a}' is not computed before this node (the graph is not in \
                     topological order, or reads a graph input other than the first)"
                )));
            }
        }
        // A Sqrt's output is held as its reciprocal: only a Div may read it, as divisor.
        let divisor = node.op_type == "Div" && node.input.len() == 2 && acts.len() == 2;
        for (k, a) in acts.iter().enumerate() {
            if self.inverted.contains(a.as_str()) && !(divisor && k == 1 && acts[0] != *a) {
                return Err(err(format!(
                    "reads '{a}', a Sqrt's output: a Sqrt is supported only as the divisor \
                     of a Div (a / sqrt(v), as a decomposed LayerNorm computes it)"
                )));
            }
        }
        // The node's data input: the first activation it reads.
        let sym = self.env[&first].clone();
        self.current = first;
        self.shape = sym.shape;
        self.map = sym.map;
        // Residual operands are read here, before the reads are counted.
        let others: Vec<Sym> = acts[1..]
            .iter()
            .map(|a| self.env[a.as_str()].clone())
            .collect();
        for a in acts {
            self.consume(a);
        }
        self.pending
            .push((node.op_type.clone(), node_name(node).to_string()));
        match node.op_type.as_str() {
            "Gemm" => self.gemm(node),
            "MatMul" if !others.is_empty() => self.matmul_activations(node, others),
            "MatMul" => self.matmul(node),
            "Conv" => self.conv(node),
            "Add" | "Sub" | "Mul" | "Div" => self.elementwise(node, others),
            "BatchNormalization" => self.batch_norm(node),
            "LayerNormalization" => self.layer_norm(node),
            "Softmax" => self.softmax(node),
            "Sigmoid" | "Tanh" | "Gelu" => self.squash(node),
            "Erf" => {
                self.map = self.erf(node, 1.0)?;
                Ok(())
            }
            "ReduceMean" | "ReduceSum" => self.reduce(node),
            "Sqrt" => self.sqrt(node),
            "Pow" => self.pow(node),
            "AveragePool" | "GlobalAveragePool" => self.average_pool(node),
            "MaxPool" => self.max_pool(node),
            "Transpose" | "Squeeze" | "Unsqueeze" | "Slice" | "Gather" => {
                self.data_movement(node)
            }
            "Concat" => self.concat(node, others),
            "Split" => self.split(node),
            "Relu" => self.relu(node),
            "Flatten" => {
                let axis = attr_int(node, "axis").unwrap_or(1);
                if axis != 1 && axis != 0 {
                    return Err(err(format!("Flatten axis {axis} (only 0 or 1)")));
                }
                self.shape = vec![self.shape.iter().product()];
                Ok(())
            }
            "Reshape" => self.reshape(node),
            "Identity" => Ok(()),
            other => Err(err(format!(
                "op {other} is not supported (supported: Gemm, MatMul, Conv, Relu, Add, Sub and Mul (constants or two activations), Div by constants, BatchNormalization, LayerNormalization and Softmax (last axis), Sigmoid, Tanh, Gelu, Erf, Pow (exponent 1 to 3), ReduceMean, ReduceSum, Sqrt as a divisor, Concat, Split, AveragePool, GlobalAveragePool, MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Slice, Gather with constant indices, Identity, Constant)"
            ))),
        }?;
        let out = output_name(node)?;
        let sym = Sym {
            shape: self.shape.clone(),
            map: std::mem::replace(&mut self.map, Map::Slice(0)),
            born: self.born,
        };
        self.born += 1;
        if self.uses.get(&out).copied().unwrap_or(0) > 0 {
            self.env.insert(out, sym);
        }
        Ok(())
    }

    /// Ends a layer (a cut). Its outputs: `relu`'s rows through ReLU, when given, then every
    /// live tensor as it is; they become the base state that later maps read, and each
    /// carried tensor becomes a slice of it.
    fn layer(&mut self, relu: Option<(String, Vec<usize>, Map)>) -> Result<()> {
        self.layer_with(relu.map(|(name, shape, map)| (Act::Relu, name, shape, map)))
    }

    /// [`Self::layer`] with the first rows' non-linear step named: a ReLU or a reciprocal
    /// square root.
    fn layer_with(&mut self, first: Option<(Act, String, Vec<usize>, Map)>) -> Result<()> {
        let mut all = Rows::default();
        let mut state = Vec::new();
        let (mut relu_rows, mut gadget, mut gadget_rows) = (0, None, 0);
        let mut relu_name = None;
        if let Some((act, name, shape, map)) = first {
            let n: usize = shape.iter().product();
            append(&mut all, map.into_rows(n));
            match act {
                Act::Relu => relu_rows = n,
                Act::Gadget(g) => (gadget, gadget_rows) = (Some(g), n),
            }
            state.push((name.clone(), shape));
            relu_name = Some(name);
        }
        let mut live: Vec<(String, Sym)> = self.env.drain().collect();
        live.sort_by_key(|(_, s)| s.born);
        let mut env = HashMap::new();
        if let Some(name) = &relu_name {
            let (_, shape) = &state[0];
            env.insert(
                name.clone(),
                Sym {
                    shape: shape.clone(),
                    map: Map::Slice(0),
                    born: self.born,
                },
            );
        }
        for (name, sym) in live {
            let n: usize = sym.shape.iter().product();
            let offset = all.lin.len() as u32;
            append(&mut all, sym.map.into_rows(n));
            state.push((name.clone(), sym.shape.clone()));
            env.insert(
                name,
                Sym {
                    shape: sym.shape,
                    map: Map::Slice(offset),
                    born: sym.born,
                },
            );
        }
        let Rows {
            lin: rows,
            bias,
            quad: products,
        } = all;
        if rows.is_empty() {
            return Err(KernelError::Graph(
                "a layer would have no outputs (nothing is live)".into(),
            ));
        }
        if rows.len() > u32::MAX as usize {
            return Err(KernelError::Graph("the state is too large".into()));
        }
        let (ops, nodes) = self.pending.drain(..).unzip();
        let flat = |s: &[(String, Vec<usize>)], len: usize| match s {
            [(_, shape)] => shape.clone(),
            _ => vec![len],
        };
        let in_shape = flat(&self.base, self.base_len);
        let out_shape = flat(&state, rows.len());
        self.base_len = rows.len();
        self.base = state.clone();
        self.env = env;
        self.layers.push(FloatLayer {
            ops,
            nodes,
            in_shape,
            out_shape,
            rows,
            bias,
            products,
            relu_rows,
            gadget,
            gadget_rows,
            gadget_floor: self.gadget_floor.take().unwrap_or(0.0),
            state,
        });
        Ok(())
    }

    fn weight(&self, node: &NodeProto, idx: usize) -> Result<(Vec<usize>, Vec<f64>)> {
        let name = node
            .input
            .get(idx)
            .ok_or_else(|| unsupported(node, format!("missing input {idx}")))?;
        let t = self.inits.get(name.as_str()).ok_or_else(|| {
            unsupported(
                node,
                format!("input '{name}' must be a constant initializer"),
            )
        })?;
        let dims = t.dims.iter().map(|d| *d as usize).collect::<Vec<_>>();
        let data = float_data(t).map_err(|reason| unsupported(node, reason))?;
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
            return Err(unsupported(
                node,
                format!(
                    "input shape {:?} must be [1, K]: add a Flatten before it",
                    self.shape
                ),
            ));
        }
        Ok(self.shape[0])
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
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
            let (dims, b) = self.weight(node, 2)?;
            bias = broadcast(&dims, &b, &[n]).map_err(err)?;
            bias.iter_mut().for_each(|b| *b *= beta);
        }
        self.fold(node, rows, bias, vec![n])
    }

    /// MatMul against a constant `[K, N]`, over the last axis: `[..., K]` becomes `[..., N]`
    /// (a transformer's per-token projection).
    fn matmul(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        if node.input.first() != Some(&self.current) || node.input.len() != 2 {
            return Err(err(
                "only MatMul(x, W) with a constant W, or of two activations, is supported".into(),
            ));
        }
        let k = *self.shape.last().unwrap_or(&0);
        let (dims, w) = self.weight(node, 1)?;
        if dims.len() != 2 || dims[0] != k {
            return Err(err(format!(
                "weight shape {dims:?} does not take the last axis of {:?}",
                self.shape
            )));
        }
        let n = dims[1];
        let lead: usize = self.shape[..self.shape.len() - 1].iter().product();
        let mut rows = Vec::with_capacity(lead * n);
        for t in 0..lead {
            for o in 0..n {
                rows.push(
                    (0..k)
                        .filter(|i| w[i * n + o] != 0.0)
                        .map(|i| ((t * k + i) as u32, w[i * n + o]))
                        .collect(),
                );
            }
        }
        let mut shape = self.shape.clone();
        *shape.last_mut().expect("rank >= 1") = n;
        self.fold(node, rows, vec![0.0; lead * n], shape)
    }

    /// Applies an affine map to the current activation (`rows` over it, then `shift`; its
    /// output has shape `out_shape`).
    fn fold(
        &mut self,
        _node: &NodeProto,
        rows: Vec<Vec<(u32, f64)>>,
        shift: Vec<f64>,
        out_shape: Vec<usize>,
    ) -> Result<()> {
        self.map = self.map.then(rows, shift);
        self.shape = out_shape;
        Ok(())
    }

    /// The current activation times a diagonal `scale`, plus `shift` (both full length).
    fn fold_diagonal(&mut self, node: &NodeProto, scale: Vec<f64>, shift: Vec<f64>) -> Result<()> {
        let rows = scale
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if *s == 0.0 {
                    vec![]
                } else {
                    vec![(i as u32, *s)]
                }
            })
            .collect();
        let shape = self.shape.clone();
        self.fold(node, rows, shift, shape)
    }

    /// Add, Sub, Mul or Div with one constant operand; Add or Sub of two activations (a
    /// residual connection: the sum of two maps of the base state is one).
    fn elementwise(&mut self, node: &NodeProto, others: Vec<Sym>) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        if node.input.len() != 2 {
            return Err(err("takes two operands".into()));
        }
        if let Some(other) = others.first() {
            if node.op_type == "Mul" {
                return self.multiply(node, other.clone());
            }
            if node.op_type == "Div" {
                if node.input.get(1).is_some_and(|d| self.inverted.contains(d)) {
                    // a / sqrt(v): the divisor is held as rsqrt(v).
                    return self.multiply(node, other.clone());
                }
                return Err(err(
                    "an activation divided by an activation is supported only when the \
                     divisor is a Sqrt (a decomposed LayerNorm)"
                        .into(),
                ));
            }
            // Either operand may broadcast (the ONNX way) to the other's shape.
            let expand = |map: &Map, from: &[usize], to: &[usize]| -> Option<Map> {
                Some(map.select(broadcast_index(from, to).ok()?))
            };
            let a = std::mem::replace(&mut self.map, Map::Slice(0));
            let (a, b, shape) = if other.shape == self.shape {
                (a, other.map.clone(), self.shape.clone())
            } else if let Some(b) = expand(&other.map, &other.shape, &self.shape) {
                (a, b, self.shape.clone())
            } else if let Some(a) = expand(&a, &self.shape, &other.shape) {
                (a, other.map.clone(), other.shape.clone())
            } else {
                return Err(err(format!(
                    "two activations of shapes {:?} and {:?} do not broadcast",
                    self.shape, other.shape
                )));
            };
            let n: usize = shape.iter().product();
            let sign = if node.op_type == "Sub" { -1.0 } else { 1.0 };
            self.map = add_rows(a.into_rows(n), b.into_rows(n), sign);
            self.shape = shape;
            return Ok(());
        }
        let first = node.input.first() == Some(&self.current);
        let other = usize::from(first);
        let (dims, c) = self.weight(node, other)?;
        let c = broadcast(&dims, &c, &self.shape).map_err(err)?;
        let n = c.len();
        let (scale, shift) = match (node.op_type.as_str(), first) {
            ("Add", _) => (vec![1.0; n], c),
            ("Sub", true) => (vec![1.0; n], c.iter().map(|v| -v).collect()),
            ("Sub", false) => (vec![-1.0; n], c),
            ("Mul", _) => (c, vec![0.0; n]),
            ("Div", true) => {
                if c.contains(&0.0) {
                    return Err(err("division by a constant 0".into()));
                }
                (c.iter().map(|v| 1.0 / v).collect(), vec![0.0; n])
            }
            _ => {
                return Err(err(
                    "a constant divided by the activation is not affine".into()
                ))
            }
        };
        self.fold_diagonal(node, scale, shift)
    }

    /// Makes the current activation and `other` slices of the base state, ending a layer
    /// (without ReLU) first when either is not one yet: a product reads two stored values.
    /// Returns their offsets in the base state.
    fn as_slices(&mut self, node: &NodeProto, other: Sym) -> Result<(u32, u32)> {
        let lhs = Sym {
            shape: self.shape.clone(),
            map: std::mem::replace(&mut self.map, Map::Slice(0)),
            born: self.born,
        };
        match self.store(node, vec![("lhs", lhs), ("rhs", other)])?[..] {
            [a, b] => Ok((a, b)),
            _ => unreachable!("two stored"),
        }
    }

    /// Stores `syms` in the state: their offsets in the base state, after ending a layer
    /// (without ReLU, carrying them as `NODE/part` and what else is live) unless every one
    /// is a slice of it already.
    fn store(&mut self, node: &NodeProto, syms: Vec<(&str, Sym)>) -> Result<Vec<u32>> {
        let slices: Vec<u32> = syms
            .iter()
            .filter_map(|(_, s)| match s.map {
                Map::Slice(o) => Some(o),
                _ => None,
            })
            .collect();
        if slices.len() == syms.len() {
            return Ok(slices);
        }
        let name = node_name(node);
        // (key, whether it is ours to remove): a value already live, or stored twice (x * x),
        // is stored once.
        let mut keys: Vec<(String, bool)> = Vec::with_capacity(syms.len());
        for (part, sym) in syms {
            let same = self
                .env
                .iter()
                .find(|(_, s)| s.shape == sym.shape && s.map == sym.map)
                .map(|(k, _)| k.clone());
            if let Some(k) = same {
                let ours = keys.iter().any(|(key, ours)| *key == k && *ours);
                keys.push((k, ours));
                continue;
            }
            let key = format!("{name}/{part}");
            self.env.insert(
                key.clone(),
                Sym {
                    born: self.born,
                    ..sym
                },
            );
            self.born += 1;
            keys.push((key, true));
        }
        // The node is recorded by the layer that stores its operands and by the next,
        // which computes it.
        self.layer(None)?;
        self.pending
            .push((node.op_type.clone(), node_name(node).to_string()));
        let offsets = keys.iter().map(|(k, _)| self.slice_of(k)).collect();
        for (k, ours) in keys {
            if ours {
                self.env.remove(&k);
            }
        }
        Ok(offsets)
    }

    /// The offset in the base state of `key`, a tensor the last layer carried.
    fn slice_of(&self, key: &str) -> u32 {
        match self.env.get(key).map(|s| &s.map) {
            Some(Map::Slice(o)) => *o,
            _ => unreachable!("a carried tensor is a slice of the new state"),
        }
    }

    /// [`Self::slice_of`], and `key` leaves the live tensors.
    fn take_slice(&mut self, key: &str) -> u32 {
        let at = self.slice_of(key);
        self.env.remove(key);
        at
    }

    /// LayerNormalization over the last axis (length D, T rows):
    /// `(x - mean) / sqrt(var + epsilon) * scale + B`. The centred d = x - mean is affine,
    /// and stored (a cut) because the variance multiplies it by itself; the variance
    /// (products d * d / D, plus epsilon) ends a layer through the reciprocal square root
    /// gadget, one per row; the output `d * r * scale + B` is products of two stored
    /// values again, and folds into what follows.
    fn layer_norm(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let rank = self.shape.len() as i64;
        let axis = attr_int(node, "axis").unwrap_or(-1);
        if axis != -1 && axis != rank {
            return Err(err(format!(
                "axis {axis}: only the last axis is normalised"
            )));
        }
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(err(
                "the Mean and InvStdDev outputs are not supported".into()
            ));
        }
        let eps = attr_float(node, "epsilon").unwrap_or(1e-5) as f64;
        let d = *self.shape.last().unwrap_or(&0);
        let t: usize = self.shape[..self.shape.len() - 1].iter().product();
        let (_, gamma) = self.weight(node, 1)?;
        let beta = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(_) => self.weight(node, 2)?.1,
            None => vec![0.0; d],
        };
        if gamma.len() != d || beta.len() != d || d == 0 {
            return Err(err(format!(
                "scale and bias need {d} values (the last axis)"
            )));
        }
        let share = 1.0 / d as f64;
        let centre: Vec<Vec<(u32, f64)>> = (0..t * d)
            .map(|o| {
                let (row, i) = (o / d, o % d);
                (0..d)
                    .map(|j| {
                        let w = if i == j { 1.0 - share } else { -share };
                        ((row * d + j) as u32, w)
                    })
                    .collect()
            })
            .collect();
        let centred = Sym {
            shape: self.shape.clone(),
            map: self.map.then(centre, vec![0.0; t * d]),
            born: self.born,
        };
        let [at] = self.store(node, vec![("centred", centred)])?[..] else {
            unreachable!("one stored");
        };
        let var = Rows {
            lin: vec![Vec::new(); t],
            bias: vec![eps; t],
            quad: (0..t)
                .map(|row| {
                    (0..d)
                        .map(|j| {
                            let k = at + (row * d + j) as u32;
                            (k, k, share)
                        })
                        .collect()
                })
                .collect(),
        };
        // The centred values ride along with the reciprocal square roots.
        let name = node_name(node);
        let key = format!("{name}/centred");
        self.env.insert(
            key.clone(),
            Sym {
                shape: self.shape.clone(),
                map: Map::Slice(at),
                born: self.born,
            },
        );
        let inv = format!("{name}/inv_std");
        self.layer_with(Some((
            Act::Gadget(Gadget::Rsqrt),
            inv.clone(),
            vec![t],
            Map::Rows(var),
        )))?;
        self.pending.push((node.op_type.clone(), name.clone()));
        let at = self.take_slice(&key);
        self.env.remove(&inv);
        let quad = (0..t * d)
            .map(|o| {
                let (row, i) = (o / d, o % d);
                vec![(at + o as u32, row as u32, gamma[i])]
            })
            .collect();
        self.map = Map::Rows(Rows {
            lin: vec![Vec::new(); t * d],
            bias: (0..t * d).map(|o| beta[o % d]).collect(),
            quad,
        });
        Ok(())
    }

    /// Products only: `quad` rows and nothing else.
    fn products(quad: Vec<Vec<(u32, u32, f64)>>) -> Map {
        let n = quad.len();
        Map::Rows(Rows {
            lin: vec![Vec::new(); n],
            bias: vec![0.0; n],
            quad,
        })
    }

    /// Mul of two activations (a gate, x * x): one product per element, the second operand
    /// broadcast the ONNX way to the first's shape.
    fn multiply(&mut self, node: &NodeProto, other: Sym) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let pick = broadcast_index(&other.shape, &self.shape).map_err(|e| {
            err(format!(
                "{e}: the second operand must broadcast to the first's shape"
            ))
        })?;
        let pick: Vec<usize> = pick.into_iter().collect();
        // Affine operands with few terms (x (1 + erf), a gate of one value) multiply out
        // in place; others are stored first.
        let n_other: usize = other.shape.iter().product();
        let lhs = self.map.clone().into_rows(pick.len());
        if let Some(rows) = expand_product(&lhs, &other.map.clone().into_rows(n_other), &pick) {
            self.map = Map::Rows(rows);
            return Ok(());
        }
        let (a, b) = self.as_slices(node, other)?;
        let quad = pick
            .into_iter()
            .enumerate()
            .map(|(i, j)| vec![(a + i as u32, b + j as u32, 1.0)])
            .collect();
        self.map = Self::products(quad);
        Ok(())
    }

    /// MatMul of two activations (attention's Q K^T and P V): `[..., M, K]` times
    /// `[..., K, N]` with the same leading axes; each output is a sum of K products.
    fn matmul_activations(&mut self, node: &NodeProto, others: Vec<Sym>) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let other = others.into_iter().next().expect("called with an operand");
        let (sa, sb) = (self.shape.clone(), other.shape.clone());
        let (ra, rb) = (sa.len(), sb.len());
        if ra < 2 || ra != rb || sa[..ra - 2] != sb[..rb - 2] || sa[ra - 1] != sb[rb - 2] {
            return Err(err(format!(
                "shapes {sa:?} and {sb:?}: needs [..., M, K] and [..., K, N] with the same \
                 leading axes"
            )));
        }
        let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
        let lead: usize = sa[..ra - 2].iter().product();
        let (a, b) = self.as_slices(node, other)?;
        let mut quad = Vec::with_capacity(lead * m * n);
        for h in 0..lead {
            for i in 0..m {
                for j in 0..n {
                    quad.push(
                        (0..k)
                            .map(|t| {
                                let x = a + (h * m * k + i * k + t) as u32;
                                let y = b + (h * k * n + t * n + j) as u32;
                                (x, y, 1.0)
                            })
                            .collect(),
                    );
                }
            }
        }
        self.map = Self::products(quad);
        let mut shape = sa;
        shape[ra - 1] = n;
        self.shape = shape;
        Ok(())
    }

    /// BatchNormalization (inference form): per channel,
    /// `(x - mean) / sqrt(var + epsilon) * scale + B`.
    fn batch_norm(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        if node.input.first() != Some(&self.current) || node.input.len() != 5 {
            return Err(err(
                "only BatchNormalization(x, scale, B, mean, var) of the activation".into(),
            ));
        }
        if attr_int(node, "training_mode").unwrap_or(0) != 0 {
            return Err(err("training_mode: only inference is supported".into()));
        }
        let eps = attr_float(node, "epsilon").unwrap_or(1e-5) as f64;
        let channels = self.shape.first().copied().unwrap_or(0);
        let mut per = Vec::new();
        for i in 1..5 {
            let (_, v) = self.weight(node, i)?;
            if v.len() != channels {
                return Err(err(format!(
                    "{} values per channel for {channels} channels",
                    v.len()
                )));
            }
            per.push(v);
        }
        let plane: usize = self.shape[1..].iter().product();
        let (mut scale, mut shift) = (Vec::new(), Vec::new());
        let [gamma, beta, mean, var] = [&per[0], &per[1], &per[2], &per[3]];
        for (((g, b), m), v) in gamma.iter().zip(beta).zip(mean).zip(var) {
            let s = g / (v + eps).sqrt();
            scale.extend(std::iter::repeat_n(s, plane));
            shift.extend(std::iter::repeat_n(b - m * s, plane));
        }
        self.fold_diagonal(node, scale, shift)
    }

    /// AveragePool (2-D) and GlobalAveragePool: each output is the mean of its window.
    fn average_pool(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let (c, h, w) = self.planes(node)?;
        let (win, include_pad) = if node.op_type == "GlobalAveragePool" {
            (Window::whole(h, w), false)
        } else {
            if attr_int(node, "ceil_mode").unwrap_or(0) != 0 {
                return Err(err("ceil_mode is not supported".into()));
            }
            explicit_pads(node).map_err(err)?;
            let (kh, kw) = kernel_shape(node).map_err(err)?;
            let include_pad = attr_int(node, "count_include_pad").unwrap_or(0) != 0;
            (Window::of(node, h, w, kh, kw).map_err(err)?, include_pad)
        };
        let mut rows = Vec::with_capacity(c * win.oh * win.ow);
        for ch in 0..c {
            for oy in 0..win.oh {
                for ox in 0..win.ow {
                    let cells = win.cells(oy, ox);
                    let count = match include_pad {
                        true => win.kh * win.kw,
                        false => cells.len().max(1),
                    };
                    let share = 1.0 / count as f64;
                    rows.push(
                        cells
                            .into_iter()
                            .map(|i| ((ch * h * w + i) as u32, share))
                            .collect(),
                    );
                }
            }
        }
        let n = rows.len();
        self.fold(node, rows, vec![0.0; n], vec![c, win.oh, win.ow])
    }

    /// The [C, H, W] of the activation a windowed op reads (it must be that activation).
    fn planes(&self, node: &NodeProto) -> Result<(usize, usize, usize)> {
        if node.input.first() != Some(&self.current) || self.shape.len() != 3 {
            return Err(unsupported(
                node,
                format!("needs a [1, C, H, W] activation, got [1, {:?}]", self.shape),
            ));
        }
        Ok((self.shape[0], self.shape[1], self.shape[2]))
    }

    /// An int64 constant input of `node` (None when the input is absent or empty).
    fn const_ints(&self, node: &NodeProto, idx: usize) -> Result<Option<Vec<i64>>> {
        let Some(name) = node.input.get(idx).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let err = |reason: String| unsupported(node, reason);
        let t = self
            .inits
            .get(name.as_str())
            .ok_or_else(|| err(format!("input '{name}' must be a constant initializer")))?;
        int_data(t).map(Some).map_err(err)
    }

    /// Data movement: output element `i` is input element `source[i]` (0 constraints).
    fn gather_flat(&mut self, source: Vec<usize>, out_shape: Vec<usize>) -> Result<()> {
        self.map = self.map.select(source);
        self.shape = out_shape;
        Ok(())
    }

    /// Transpose, Squeeze, Unsqueeze, Slice, and Gather with constant indices.
    fn data_movement(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        if node.input.first() != Some(&self.current) {
            return Err(err("its data input must be the activation".into()));
        }
        // The full shape, batch axis included, and an axis given the ONNX way.
        let full: Vec<usize> = std::iter::once(1)
            .chain(self.shape.iter().copied())
            .collect();
        let axis_of = |a: i64, rank: usize| axis_index(a, rank).map_err(err);
        let strides = |shape: &[usize]| -> Vec<usize> {
            let mut s = vec![1; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                s[i] = s[i + 1] * shape[i + 1];
            }
            s
        };
        let coords = |mut i: usize, shape: &[usize]| -> Vec<usize> {
            let mut c = vec![0; shape.len()];
            for a in (0..shape.len()).rev() {
                c[a] = i % shape[a];
                i /= shape[a];
            }
            c
        };
        let in_strides = strides(&full);
        match node.op_type.as_str() {
            "Squeeze" | "Unsqueeze" => {
                let axes = match self.const_ints(node, 1)? {
                    Some(a) => a,
                    None => attr_ints(node, "axes").unwrap_or_default(),
                };
                let mut shape = full.clone();
                if node.op_type == "Squeeze" {
                    let rank = shape.len();
                    let mut drop: Vec<usize> = if axes.is_empty() {
                        (1..rank).filter(|a| shape[*a] == 1).collect()
                    } else {
                        axes.iter()
                            .map(|a| axis_of(*a, rank))
                            .collect::<Result<_>>()?
                    };
                    drop.sort_unstable();
                    if drop.contains(&0) || drop.iter().any(|a| shape[*a] != 1) {
                        return Err(err(format!("cannot squeeze axes {axes:?} of {full:?}")));
                    }
                    for a in drop.into_iter().rev() {
                        shape.remove(a);
                    }
                } else {
                    let rank = shape.len() + axes.len();
                    let mut add: Vec<usize> = axes
                        .iter()
                        .map(|a| axis_of(*a, rank))
                        .collect::<Result<_>>()?;
                    add.sort_unstable();
                    if add.contains(&0) {
                        return Err(err("cannot add an axis before the batch".into()));
                    }
                    for a in add {
                        shape.insert(a, 1);
                    }
                }
                // The flat data is unchanged: only the shape moves.
                self.shape = shape[1..].to_vec();
                Ok(())
            }
            "Transpose" => {
                let rank = full.len();
                let perm: Vec<usize> = match attr_ints(node, "perm") {
                    Some(p) => p.iter().map(|a| axis_of(*a, rank)).collect::<Result<_>>()?,
                    None => (0..rank).rev().collect(),
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..rank).collect::<Vec<_>>() || perm[0] != 0 {
                    return Err(err(format!(
                        "perm {perm:?} must permute {rank} axes and keep the batch first"
                    )));
                }
                let out: Vec<usize> = perm.iter().map(|a| full[*a]).collect();
                let n: usize = out.iter().product();
                let source = (0..n)
                    .map(|i| {
                        let c = coords(i, &out);
                        perm.iter().zip(&c).map(|(a, v)| v * in_strides[*a]).sum()
                    })
                    .collect();
                self.gather_flat(source, out[1..].to_vec())
            }
            "Slice" => {
                let rank = full.len();
                let starts = self.const_ints(node, 1)?.unwrap_or_default();
                let ends = self.const_ints(node, 2)?.unwrap_or_default();
                let axes = self
                    .const_ints(node, 3)?
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = self
                    .const_ints(node, 4)?
                    .unwrap_or_else(|| vec![1; starts.len()]);
                if starts.len() != ends.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err(err("starts, ends, axes and steps differ in length".into()));
                }
                // Per axis: first index and step, and the output's length.
                let mut first = vec![0i64; rank];
                let mut step = vec![1i64; rank];
                let mut out = full.clone();
                for k in 0..starts.len() {
                    let a = axis_of(axes[k], rank)?;
                    let (d, st) = (full[a] as i64, steps[k]);
                    if a == 0 || st == 0 {
                        return Err(err("cannot slice the batch, or with step 0".into()));
                    }
                    let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
                    let norm = |v: i64| if v < 0 { v + d } else { v };
                    let (s, e) = if st > 0 {
                        (clamp(norm(starts[k]), 0, d), clamp(norm(ends[k]), 0, d))
                    } else {
                        (
                            clamp(norm(starts[k]), -1, d - 1),
                            clamp(norm(ends[k]), -1, d - 1),
                        )
                    };
                    let len = if st > 0 {
                        (e - s + st - 1).max(0) / st
                    } else {
                        (s - e - st - 1).max(0) / -st
                    };
                    if len == 0 {
                        return Err(err(format!("the slice of axis {a} is empty")));
                    }
                    (first[a], step[a], out[a]) = (s, st, len as usize);
                }
                let n: usize = out.iter().product();
                let source = (0..n)
                    .map(|i| {
                        let c = coords(i, &out);
                        (0..rank)
                            .map(|a| (first[a] + c[a] as i64 * step[a]) as usize * in_strides[a])
                            .sum()
                    })
                    .collect();
                self.gather_flat(source, out[1..].to_vec())
            }
            "Gather" => {
                let rank = full.len();
                let a = axis_of(attr_int(node, "axis").unwrap_or(0), rank)?;
                if a == 0 {
                    return Err(err("cannot gather along the batch".into()));
                }
                let name = node.input.get(1).cloned().unwrap_or_default();
                let t = self
                    .inits
                    .get(name.as_str())
                    .ok_or_else(|| err("the indices must be a constant initializer".into()))?;
                let idx = int_data(t).map_err(err)?;
                let idx_dims: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
                let d = full[a] as i64;
                if idx.iter().any(|i| *i < -d || *i >= d) {
                    return Err(err(format!("an index is out of range for {d}")));
                }
                // Output shape: full[..a] ++ idx_dims ++ full[a+1..].
                let out: Vec<usize> = full[..a]
                    .iter()
                    .chain(&idx_dims)
                    .chain(&full[a + 1..])
                    .copied()
                    .collect();
                let n: usize = out.iter().product();
                let k = idx_dims.len();
                let idx_strides = strides(&idx_dims);
                let source = (0..n)
                    .map(|i| {
                        let c = coords(i, &out);
                        let flat: usize = (0..k).map(|j| c[a + j] * idx_strides[j]).sum();
                        let pick = ((idx[flat] + d) % d) as usize;
                        let mut src = pick * in_strides[a];
                        for (ax, s) in in_strides.iter().enumerate() {
                            if ax < a {
                                src += c[ax] * s;
                            } else if ax > a {
                                src += c[ax + k - 1] * s;
                            }
                        }
                        src
                    })
                    .collect();
                if out.first() != Some(&1) || out.len() < 2 {
                    return Err(err(format!("gathering into {out:?} loses the batch")));
                }
                self.gather_flat(source, out[1..].to_vec())
            }
            _ => unreachable!("dispatched by op type"),
        }
    }

    /// MaxPool (2-D), lowered exactly onto ReLU layers: `max(u, v) = v + relu(u - v)`.
    /// Each round is a layer whose ReLU rows are the differences `u - v` and whose carried
    /// rows are the `v`s (and a window's odd candidate out): it halves the candidates of
    /// every window, so a k-cell window takes ceil(log2 k) layers; the maxima themselves are
    /// affine in the last one and fold into what follows. The ReLU's sign bit is the
    /// comparison; weights are ±1, so nothing is approximated.
    fn max_pool(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let (c, h, w) = self.planes(node)?;
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(err("the Indices output is not supported".into()));
        }
        if attr_int(node, "ceil_mode").unwrap_or(0) != 0
            || attr_int(node, "storage_order").unwrap_or(0) != 0
        {
            return Err(err("ceil_mode and storage_order are not supported".into()));
        }
        explicit_pads(node).map_err(err)?;
        let (kh, kw) = kernel_shape(node).map_err(err)?;
        let win = Window::of(node, h, w, kh, kw).map_err(err)?;
        // Each window's candidates, as combinations of `src`'s outputs: at first the pooled
        // activation's cells, after a round the round's layer outputs.
        let mut windows: Vec<Vec<Vec<(u32, f64)>>> = Vec::with_capacity(c * win.oh * win.ow);
        for ch in 0..c {
            for oy in 0..win.oh {
                for ox in 0..win.ow {
                    let cells: Vec<Vec<(u32, f64)>> = win
                        .cells(oy, ox)
                        .into_iter()
                        .map(|i| vec![((ch * h * w + i) as u32, 1.0)])
                        .collect();
                    if cells.is_empty() {
                        return Err(err("a window lies wholly in the padding".into()));
                    }
                    windows.push(cells);
                }
            }
        }
        let src = std::mem::replace(&mut self.map, Map::Slice(0));
        self.map = self.maxima(node, windows, src)?;
        self.shape = vec![c, win.oh, win.ow];
        Ok(())
    }

    /// The maximum of each window's candidates (combinations of `src`'s outputs), by
    /// rounds of layers: `max(u, v) = v + relu(u - v)`, the differences as ReLU rows and
    /// the `v`s carried. Returns the maxima as a map of the last round's state (`src`
    /// itself when every window has one candidate). What else is live rides along.
    fn maxima(
        &mut self,
        node: &NodeProto,
        mut windows: Vec<Vec<Vec<(u32, f64)>>>,
        mut src: Map,
    ) -> Result<Map> {
        let name = node_name(node);
        let mut round = 0;
        while windows.iter().any(|cands| cands.len() > 1) {
            // The round's ReLU rows (differences) and carried rows, and each window's next
            // candidates: (is a difference, index) pairs with weights.
            let (mut diffs, mut carries) = (Vec::new(), Vec::new());
            let mut next: Vec<Vec<Vec<(bool, u32, f64)>>> = Vec::with_capacity(windows.len());
            for cands in &windows {
                let mut out = Vec::with_capacity(cands.len().div_ceil(2));
                for pair in cands.chunks(2) {
                    let carry = (false, carries.len() as u32, 1.0);
                    carries.push(pair[pair.len() - 1].clone());
                    if let [u, v] = pair {
                        let mut diff: HashMap<u32, f64> = HashMap::new();
                        for (j, x) in u {
                            *diff.entry(*j).or_default() += x;
                        }
                        for (j, x) in v {
                            *diff.entry(*j).or_default() -= x;
                        }
                        out.push(vec![(true, diffs.len() as u32, 1.0), carry]);
                        diffs.push(sparse(&diff));
                    } else {
                        out.push(vec![carry]);
                    }
                }
                next.push(out);
            }
            round += 1;
            let (relu_name, carry_name) = (
                format!("{name}/round{round}"),
                format!("{name}/round{round}/carried"),
            );
            let (nd, nc) = (diffs.len(), carries.len());
            self.env.insert(
                carry_name.clone(),
                Sym {
                    shape: vec![nc],
                    map: src.then(carries, vec![0.0; nc]),
                    born: self.born,
                },
            );
            let relu = (relu_name.clone(), vec![nd], src.then(diffs, vec![0.0; nd]));
            self.layer(Some(relu))?;
            // The next round reads this layer's output.
            let carry_at = self.take_slice(&carry_name);
            self.env.remove(&relu_name);
            self.pending.push((node.op_type.clone(), name.clone()));
            windows = next
                .into_iter()
                .map(|cands| {
                    cands
                        .into_iter()
                        .map(|terms| {
                            terms
                                .into_iter()
                                .map(|(d, i, x)| (if d { i } else { carry_at + i }, x))
                                .collect()
                        })
                        .collect()
                })
                .collect();
            src = Map::Slice(0);
        }
        // The maxima, affine in the last round's layer (or the cells, for 1x1 windows).
        let rows: Vec<Vec<(u32, f64)>> = windows.into_iter().map(|mut c| c.remove(0)).collect();
        let n = rows.len();
        Ok(src.then(rows, vec![0.0; n]))
    }

    /// Softmax over the last axis (length L, T rows), max-subtracted:
    /// `y = e / sum(e)` with `e = exp(x - max(x))`. The maxima take ceil(log2 L) layers of
    /// ReLU comparisons (exact, as MaxPool's), with x carried; one layer of the exp gadget
    /// on x - max (<= 0); one of the reciprocal gadget on each row's sum, with e carried
    /// (copied, at no cost); then `e * (1 / sum)` is products, folded into what follows.
    fn softmax(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let rank = self.shape.len() as i64;
        let axis = attr_int(node, "axis").unwrap_or(-1);
        if axis != -1 && axis != rank {
            return Err(err(format!("axis {axis}: only the last axis is supported")));
        }
        if self.shape.last().is_none_or(|l| *l == 0) {
            return Err(err("an empty axis".into()));
        }
        let x = std::mem::replace(&mut self.map, Map::Slice(0));
        self.map = self.softmax_map(node, x, self.shape.clone())?;
        Ok(())
    }

    /// Softmax of `x` (a map of shape `shape`) over its last axis, as a map of products.
    fn softmax_map(&mut self, node: &NodeProto, x: Map, shape: Vec<usize>) -> Result<Map> {
        let l = *shape.last().expect("a last axis");
        let t: usize = shape[..shape.len() - 1].iter().product();
        let name = node_name(node);
        // The logits ride along with the max rounds.
        let logits = format!("{name}/logits");
        self.env.insert(
            logits.clone(),
            Sym {
                shape: shape.clone(),
                map: x.clone(),
                born: self.born,
            },
        );
        self.born += 1;
        let windows: Vec<Vec<Vec<(u32, f64)>>> = (0..t)
            .map(|row| (0..l).map(|i| vec![((row * l + i) as u32, 1.0)]).collect())
            .collect();
        let maxima = self.maxima(node, windows, x)?;
        let x = self.env.remove(&logits).map(|s| s.map).expect("carried");
        // x - max, per row.
        let maxima = maxima.select((0..t * l).map(|o| o / l));
        let centred = add_rows(x.into_rows(t * l), maxima.into_rows(t * l), -1.0);
        let exp = format!("{name}/exp");
        self.layer_with(Some((
            Act::Gadget(Gadget::Exp),
            exp.clone(),
            shape.clone(),
            centred,
        )))?;
        self.pending.push((node.op_type.clone(), name.clone()));
        // The row sums through the reciprocal, e carried.
        let sums: Vec<Vec<(u32, f64)>> = (0..t)
            .map(|row| (0..l).map(|i| ((row * l + i) as u32, 1.0)).collect())
            .collect();
        let e_map = self
            .env
            .get(&exp)
            .map(|s| s.map.clone())
            .expect("just made");
        let sums = e_map.then(sums, vec![0.0; t]);
        let inv = format!("{name}/inv_sum");
        // Each row's sum holds its maximum's exp(0): the reciprocal's floor.
        self.gadget_floor = Some(crate::gadgets::EXP_POLY[0]);
        self.layer_with(Some((
            Act::Gadget(Gadget::Recip),
            inv.clone(),
            vec![t],
            sums,
        )))?;
        self.pending.push((node.op_type.clone(), name));
        let e_at = self.take_slice(&exp);
        self.env.remove(&inv);
        let quad = (0..t * l)
            .map(|o| vec![(e_at + o as u32, (o / l) as u32, 1.0)])
            .collect();
        Ok(Self::products(quad))
    }

    /// Sigmoid (and Tanh, Gelu's tanh form): `sigmoid(a x) = softmax([a x, 0])[0]`, so it
    /// reuses the softmax's gadgets, exact to theirs: one max round, two exps, one
    /// reciprocal and a product per element. Tanh is `2 sigmoid(2 x) - 1`.
    fn sigmoid(&mut self, node: &NodeProto, a: f64) -> Result<Map> {
        let n: usize = self.shape.iter().product();
        let x = std::mem::replace(&mut self.map, Map::Slice(0));
        let pairs: Vec<Vec<(u32, f64)>> = (0..2 * n)
            .map(|o| {
                if o % 2 == 0 {
                    vec![((o / 2) as u32, a)]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let logits = x.then(pairs, vec![0.0; 2 * n]);
        let p = self.softmax_map(node, logits, vec![n, 2])?;
        Ok(p.select((0..n).map(|i| 2 * i)))
    }

    /// Sigmoid, Tanh, and Gelu (opset 20): its tanh form through the sigmoid, its exact
    /// form through the erf gadget.
    fn squash(&mut self, node: &NodeProto) -> Result<()> {
        let n: usize = self.shape.iter().product();
        match node.op_type.as_str() {
            "Sigmoid" => self.map = self.sigmoid(node, 1.0)?,
            "Tanh" => {
                let s = self.sigmoid(node, 2.0)?;
                let twice: Vec<Vec<(u32, f64)>> = (0..n as u32).map(|i| vec![(i, 2.0)]).collect();
                self.map = s.then(twice, vec![-1.0; n]);
            }
            _ => {
                let approx = attr(node, "approximate")
                    .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                    .unwrap_or_default();
                if approx != "tanh" {
                    // x (1 + erf(x / sqrt 2)) / 2.
                    let keep = format!("{}/x", node_name(node));
                    self.hold(&keep);
                    let e = self.erf(node, std::f64::consts::FRAC_1_SQRT_2)?;
                    // The product is the next layer's.
                    self.pending
                        .push((node.op_type.clone(), node_name(node).to_string()));
                    let x_now = self.env.remove(&keep).expect("carried");
                    let halves: Vec<Vec<(u32, f64)>> =
                        (0..n as u32).map(|i| vec![(i, 0.5)]).collect();
                    self.map = e.then(halves, vec![0.5; n]);
                    self.multiply(node, x_now)?;
                    return Ok(());
                }
                // x sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3)).
                let keep = format!("{}/x", node_name(node));
                self.hold(&keep);
                self.power(node, 3)?;
                let cube = std::mem::replace(&mut self.map, Map::Slice(0)).into_rows(n);
                let x_now = self.env.get(&keep).expect("carried").map.clone();
                let c = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
                let mut u = cube;
                u.scale(0.044715 * c);
                let mut xs = x_now.into_rows(n);
                xs.scale(c);
                self.map = add_rows(u, xs, 1.0);
                let s = self.sigmoid(node, 1.0)?;
                let x_now = self.env.remove(&keep).expect("carried");
                self.map = s;
                self.multiply(node, x_now)?;
            }
        }
        Ok(())
    }

    /// Keeps the current activation live under `key`, so the cuts that follow carry it, and
    /// returns it as it is now.
    fn hold(&mut self, key: &str) -> Sym {
        let x = Sym {
            shape: self.shape.clone(),
            map: self.map.clone(),
            born: self.born,
        };
        self.env.insert(key.to_string(), x.clone());
        self.born += 1;
        x
    }

    /// erf(a x) of the current activation: one layer of the erf gadget (see
    /// [`crate::gadgets`]), whose output the returned map reads.
    fn erf(&mut self, node: &NodeProto, a: f64) -> Result<Map> {
        let n: usize = self.shape.iter().product();
        let x = std::mem::replace(&mut self.map, Map::Slice(0));
        let scaled: Vec<Vec<(u32, f64)>> = (0..n as u32).map(|i| vec![(i, a)]).collect();
        let name = format!("{}/erf", node_name(node));
        self.layer_with(Some((
            Act::Gadget(Gadget::Erf),
            name.clone(),
            self.shape.clone(),
            x.then(scaled, vec![0.0; n]),
        )))?;
        Ok(self.env.remove(&name).map(|s| s.map).expect("just made"))
    }

    /// x^k for a constant integer k in 1..=3 (Pow, or x^3 in Gelu): products.
    fn power(&mut self, node: &NodeProto, k: i64) -> Result<()> {
        match k {
            1 => Ok(()),
            2 => {
                let x = Sym {
                    shape: self.shape.clone(),
                    map: self.map.clone(),
                    born: self.born,
                };
                self.multiply(node, x)
            }
            3 => {
                let keep = format!("{}/base", node_name(node));
                let x = self.hold(&keep);
                self.multiply(node, x)?;
                let x = self.env.remove(&keep).expect("carried");
                self.multiply(node, x)
            }
            _ => Err(unsupported(
                node,
                format!("exponent {k}: only 1, 2 and 3 are supported"),
            )),
        }
    }

    /// ReduceMean and ReduceSum over constant axes (an attribute, or from opset 18 an
    /// input), keepdims or not: affine, so free.
    fn reduce(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let full: Vec<usize> = std::iter::once(1)
            .chain(self.shape.iter().copied())
            .collect();
        let rank = full.len();
        let axes = match self.const_ints(node, 1)? {
            Some(a) => a,
            None => attr_ints(node, "axes").unwrap_or_default(),
        };
        let mut reduced = vec![false; rank];
        if axes.is_empty() {
            if attr_int(node, "noop_with_empty_axes").unwrap_or(0) != 0 {
                return Ok(());
            }
            reduced[1..].iter_mut().for_each(|r| *r = true);
        }
        for a in &axes {
            reduced[axis_index(*a, rank).map_err(err)?] = true;
        }
        if reduced[0] {
            return Err(err("cannot reduce over the batch".into()));
        }
        let keep = attr_int(node, "keepdims").unwrap_or(1) != 0;
        let kept: Vec<usize> = (0..rank)
            .map(|a| if reduced[a] { 1 } else { full[a] })
            .collect();
        let n_out: usize = kept.iter().product();
        let count: usize = (0..rank).filter(|a| reduced[*a]).map(|a| full[a]).product();
        let share = if node.op_type == "ReduceMean" {
            1.0 / count as f64
        } else {
            1.0
        };
        let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n_out];
        let n: usize = full.iter().product();
        for i in 0..n {
            // The output an input element sums into: its coordinates, reduced axes at 0.
            let (mut rem, mut out, mut stride) = (i, 0usize, 1usize);
            for a in (0..rank).rev() {
                let c = rem % full[a];
                rem /= full[a];
                if !reduced[a] {
                    out += c * stride;
                }
                stride *= kept[a];
            }
            rows[out].push((i as u32, share));
        }
        let shape: Vec<usize> = if keep {
            kept[1..].to_vec()
        } else {
            (1..rank)
                .filter(|a| !reduced[*a])
                .map(|a| full[a])
                .collect()
        };
        self.fold(node, rows, vec![0.0; n_out], shape)
    }

    /// Sqrt, held as its reciprocal: the reciprocal square root gadget (a layer), whose
    /// output a Div then multiplies by (see `inverted`).
    fn sqrt(&mut self, node: &NodeProto) -> Result<()> {
        let out = output_name(node)?;
        let v = std::mem::replace(&mut self.map, Map::Slice(0));
        let name = format!("{}/inv", node_name(node));
        self.layer_with(Some((
            Act::Gadget(Gadget::Rsqrt),
            name.clone(),
            self.shape.clone(),
            v,
        )))?;
        self.env.remove(&name);
        self.map = Map::Slice(0);
        self.inverted.insert(out);
        Ok(())
    }

    /// An axis given the ONNX way, of the full shape (batch included), as an index.
    fn axis(&self, node: &NodeProto, a: i64) -> Result<usize> {
        let rank = self.shape.len() + 1;
        match axis_index(a, rank) {
            Ok(i) if i > 0 => Ok(i - 1),
            _ => Err(unsupported(
                node,
                format!("axis {a} is out of range for rank {rank} (or is the batch)"),
            )),
        }
    }

    /// Concat of activations and constants along an axis: each output row is an input's
    /// row, so it is free.
    fn concat(&mut self, node: &NodeProto, others: Vec<Sym>) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let axis = self.axis(node, attr_int(node, "axis").unwrap_or(0))?;
        let first = Sym {
            shape: self.shape.clone(),
            map: std::mem::replace(&mut self.map, Map::Slice(0)),
            born: self.born,
        };
        let mut acts = std::iter::once(first).chain(others);
        // Each part: its shape and rows, in input order.
        let mut parts: Vec<(Vec<usize>, Rows)> = Vec::new();
        for name in node.input.iter().filter(|i| !i.is_empty()) {
            if self.inits.contains_key(name.as_str()) {
                let (dims, c) =
                    self.weight(node, node.input.iter().position(|i| i == name).unwrap_or(0))?;
                let dims = match dims.first() {
                    Some(1) => dims[1..].to_vec(),
                    _ => return Err(err(format!("constant '{name}' lacks the batch axis"))),
                };
                let n = c.len();
                parts.push((
                    dims,
                    Rows {
                        lin: vec![Vec::new(); n],
                        bias: c,
                        quad: Vec::new(),
                    },
                ));
            } else {
                let sym = acts.next().expect("one per activation input");
                let n: usize = sym.shape.iter().product();
                parts.push((sym.shape, sym.map.into_rows(n)));
            }
        }
        let base = &parts[0].0;
        if parts.iter().any(|(d, _)| {
            d.len() != base.len()
                || d.iter()
                    .zip(base)
                    .enumerate()
                    .any(|(a, (x, y))| a != axis && x != y)
        }) {
            return Err(err(format!(
                "shapes {:?} differ off the axis",
                parts.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()
            )));
        }
        let outer: usize = base[..axis].iter().product();
        let inner: usize = base[axis + 1..].iter().product();
        let mut shape = base.clone();
        shape[axis] = parts.iter().map(|(d, _)| d[axis]).sum();
        let mut out = Rows::default();
        for o in 0..outer {
            for (d, rows) in &parts {
                let block = d[axis] * inner;
                let (start, end) = (o * block, (o + 1) * block);
                append(
                    &mut out,
                    Rows {
                        lin: rows.lin[start..end].to_vec(),
                        bias: rows.bias[start..end].to_vec(),
                        quad: if rows.quad.is_empty() {
                            Vec::new()
                        } else {
                            rows.quad[start..end].to_vec()
                        },
                    },
                );
            }
        }
        self.map = Map::Rows(out);
        self.shape = shape;
        Ok(())
    }

    /// Split along an axis into parts (sizes from the `split` input or attribute, or equal
    /// parts): selections, so free. The first part is the node's output in hand; the others
    /// are filed under their names here.
    fn split(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let axis = self.axis(node, attr_int(node, "axis").unwrap_or(0))?;
        let len = self.shape[axis];
        let outs: Vec<&String> = node.output.iter().collect();
        let sizes: Vec<usize> = match self.const_ints(node, 1)? {
            Some(v) => v.iter().map(|x| *x as usize).collect(),
            None => match attr_ints(node, "split") {
                Some(v) => v.iter().map(|x| *x as usize).collect(),
                None if len % outs.len() == 0 => vec![len / outs.len(); outs.len()],
                None => {
                    return Err(err(format!(
                        "{len} does not split into {} equal parts",
                        outs.len()
                    )))
                }
            },
        };
        if sizes.len() != outs.len() || sizes.iter().sum::<usize>() != len {
            return Err(err(format!(
                "sizes {sizes:?} do not split {len} into {} parts",
                outs.len()
            )));
        }
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let x = std::mem::replace(&mut self.map, Map::Slice(0));
        let mut first = None;
        let mut at = 0;
        for (k, (size, out)) in sizes.iter().zip(outs).enumerate() {
            let source = (0..outer)
                .flat_map(|o| (0..size * inner).map(move |i| o * len * inner + at * inner + i));
            let mut shape = self.shape.clone();
            shape[axis] = *size;
            let sym = Sym {
                shape,
                map: x.select(source),
                born: self.born + k,
            };
            at += size;
            if k == 0 {
                first = Some(sym);
            } else if self.uses.get(out.as_str()).copied().unwrap_or(0) > 0 {
                self.env.insert(out.clone(), sym);
            }
        }
        self.born += sizes.len();
        let first = first.expect("at least one part");
        self.map = first.map;
        self.shape = first.shape;
        Ok(())
    }

    /// Pow with a constant exponent 1, 2 or 3.
    fn pow(&mut self, node: &NodeProto) -> Result<()> {
        let (_, e) = self.weight(node, 1)?;
        match e.as_slice() {
            [k] if k.fract() == 0.0 => self.power(node, *k as i64),
            _ => Err(unsupported(
                node,
                "the exponent must be one constant integer (1, 2 or 3)",
            )),
        }
    }

    /// ReLU ends a layer: the activation's rows through ReLU, then what else is live.
    fn relu(&mut self, node: &NodeProto) -> Result<()> {
        let out = output_name(node)?;
        let map = std::mem::replace(&mut self.map, Map::Slice(0));
        self.layer(Some((out.clone(), self.shape.clone(), map)))?;
        // The node's output is the new state's first tensor; `node` files it under its name.
        self.env.remove(&out);
        self.map = Map::Slice(0);
        Ok(())
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
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
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let err = |reason: String| unsupported(node, reason);
        let (c, h, w) = self.planes(node)?;
        if attr_int(node, "group").unwrap_or(1) != 1 {
            return Err(err("grouped convolution is not supported".into()));
        }
        explicit_pads(node).map_err(err)?;
        let (kd, kw_data) = self.weight(node, 1)?;
        if kd.len() != 4 || kd[1] != c {
            return Err(err(format!(
                "kernel shape {kd:?} does not fit {c} input channels"
            )));
        }
        let (m, kh, kw) = (kd[0], kd[2], kd[3]);
        let win = Window::of(node, h, w, kh, kw).map_err(err)?;
        let (oh, ow) = (win.oh, win.ow);
        let mut rows = Vec::with_capacity(m * oh * ow);
        for oc in 0..m {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut row = Vec::new();
                    for ic in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let Some(cell) = win.cell(oy, ox, ky, kx) else {
                                    continue;
                                };
                                let v = kw_data[((oc * c + ic) * kh + ky) * kw + kx];
                                if v != 0.0 {
                                    row.push(((ic * h * w + cell) as u32, v));
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
            // One bias per output channel.
            let (_, b) = self.weight(node, 2)?;
            bias = broadcast(&[b.len(), 1, 1], &b, &[m, oh, ow]).map_err(err)?;
        }
        self.fold(node, rows, bias, vec![m, oh, ow])
    }
}

/// A constant of shape `dims` broadcast (the ONNX way, aligned on the right) against the
/// activation `[1, shape...]`, flat.
fn broadcast(dims: &[usize], data: &[f64], shape: &[usize]) -> Result<Vec<f64>, String> {
    let full: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
    let refuse = || format!("a constant of shape {dims:?} does not broadcast to {full:?}");
    if dims.len() > full.len() {
        return Err(refuse());
    }
    let lead = full.len() - dims.len();
    let padded: Vec<usize> = std::iter::repeat_n(1, lead)
        .chain(dims.iter().copied())
        .collect();
    if padded.iter().zip(&full).any(|(d, f)| *d != 1 && d != f) {
        return Err(refuse());
    }
    let n: usize = full.iter().product();
    let mut coords = vec![0usize; full.len()];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // The element's coordinates; the constant's index drops the axes it broadcasts over.
        let mut rem = i;
        for a in (0..full.len()).rev() {
            coords[a] = rem % full[a];
            rem /= full[a];
        }
        let (mut idx, mut stride) = (0usize, 1usize);
        for a in (0..full.len()).rev() {
            if padded[a] != 1 {
                idx += coords[a] * stride;
            }
            stride *= padded[a];
        }
        out.push(data[idx]);
    }
    Ok(out)
}

/// For each element of a tensor of shape `to`, the element of a tensor of shape `from` that
/// broadcasts (the ONNX way) onto it.
fn broadcast_index(from: &[usize], to: &[usize]) -> Result<Vec<usize>, String> {
    let n: usize = from.iter().product();
    let index: Vec<f64> = (0..n).map(|i| i as f64).collect();
    Ok(broadcast(from, &index, to)?
        .into_iter()
        .map(|i| i as usize)
        .collect())
}

/// An axis given the ONNX way (negative from the end) of a rank-`rank` tensor, as an index.
fn axis_index(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(((a + r) % r) as usize)
}

/// A node's (first) output.
fn output_name(node: &NodeProto) -> Result<String> {
    node.output
        .first()
        .cloned()
        .ok_or_else(|| unsupported(node, "node has no output"))
}

/// Why `node` cannot be imported.
fn unsupported(node: &NodeProto, reason: impl Into<String>) -> KernelError {
    KernelError::Unsupported {
        node: node_name(node),
        op: node.op_type.clone(),
        reason: reason.into(),
    }
}

/// A pool's `kernel_shape` (2-D).
fn kernel_shape(node: &NodeProto) -> Result<(usize, usize), String> {
    match attr_ints(node, "kernel_shape").as_deref() {
        Some(&[kh, kw]) if kh >= 1 && kw >= 1 => Ok((kh as usize, kw as usize)),
        other => Err(format!("kernel_shape {other:?}: two sizes of at least 1")),
    }
}

/// Windowed ops take explicit pads (or none): ONNX's SAME padding modes are refused.
fn explicit_pads(node: &NodeProto) -> Result<(), String> {
    match attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()) {
        Some(pad) if !(pad.is_empty() || pad == "NOTSET" || pad == "VALID") => Err(format!(
            "auto_pad {pad} is not supported: use explicit pads"
        )),
        _ => Ok(()),
    }
}

/// A 2-D window sliding over one channel plane of `h x w`: kernel, strides, dilations and
/// pads the ONNX way (pads `[top, left, bottom, right]`).
struct Window {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    dil: [usize; 2],
    top: i64,
    left: i64,
    oh: usize,
    ow: usize,
}

impl Window {
    /// Reads `strides`, `dilations` and `pads` (ONNX defaults) for a `kh x kw` kernel.
    fn of(node: &NodeProto, h: usize, w: usize, kh: usize, kw: usize) -> Result<Window, String> {
        let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        if strides.len() != 2 || dil.len() != 2 || pads.len() != 4 {
            return Err("only 2-D windows are supported".into());
        }
        if kh == 0
            || kw == 0
            || strides.iter().chain(&dil).any(|v| *v < 1)
            || pads.iter().any(|v| *v < 0)
        {
            return Err("kernel, strides and dilations must be >= 1, pads >= 0".into());
        }
        let [sh, sw, dh, dw] = [strides[0], strides[1], dil[0], dil[1]].map(|v| v as usize);
        let eff_h = h as i64 + pads[0] + pads[2] - (dh * (kh - 1)) as i64;
        let eff_w = w as i64 + pads[1] + pads[3] - (dw * (kw - 1)) as i64;
        if eff_h < 1 || eff_w < 1 {
            return Err(format!("window {kh}x{kw} is larger than the padded input"));
        }
        Ok(Window {
            h,
            w,
            kh,
            kw,
            stride: [sh, sw],
            dil: [dh, dw],
            top: pads[0],
            left: pads[1],
            oh: (eff_h as usize - 1) / sh + 1,
            ow: (eff_w as usize - 1) / sw + 1,
        })
    }

    /// One window over the whole plane (a global pool).
    fn whole(h: usize, w: usize) -> Window {
        Window {
            h,
            w,
            kh: h,
            kw: w,
            stride: [1, 1],
            dil: [1, 1],
            top: 0,
            left: 0,
            oh: 1,
            ow: 1,
        }
    }

    /// The plane index of cell (ky, kx) of output (oy, ox)'s window; none in the padding.
    fn cell(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let iy = (oy * self.stride[0] + ky * self.dil[0]) as i64 - self.top;
        let ix = (ox * self.stride[1] + kx * self.dil[1]) as i64 - self.left;
        let inside = iy >= 0 && ix >= 0 && iy < self.h as i64 && ix < self.w as i64;
        inside.then(|| iy as usize * self.w + ix as usize)
    }

    /// Output (oy, ox)'s cells in the plane, in kernel order (padding left out).
    fn cells(&self, oy: usize, ox: usize) -> Vec<usize> {
        (0..self.kh)
            .flat_map(|ky| (0..self.kw).map(move |kx| (ky, kx)))
            .filter_map(|(ky, kx)| self.cell(oy, ox, ky, kx))
            .collect()
    }
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
