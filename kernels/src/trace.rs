//! Native execution of a whole model and its trace commitment.
//!
//! The trace is the list of boundary tensors (model input, then each segment's output). Its
//! commitment is a blake3 Merkle root over one leaf per tensor; a later dispute game bisects
//! over these leaves to pick the segment to prove.

use crate::error::Result;
use crate::model::Model;

/// Domain separators for trace hashing.
const LEAF_DOMAIN: &[u8] = b"provnet/trace/leaf/v1";
const NODE_DOMAIN: &[u8] = b"provnet/trace/node/v1";

/// Boundary tensors of one run and their Merkle commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// tensors[0] is the model input; tensors[i + 1] is segment i's output.
    pub tensors: Vec<Vec<i64>>,
    pub leaves: Vec<[u8; 32]>,
    pub root: [u8; 32],
}

impl Trace {
    pub fn output(&self) -> &[i64] {
        self.tensors.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Runs every segment on a quantized input and commits to the boundary tensors.
pub fn run(model: &Model, input: &[i64]) -> Result<Trace> {
    let mut tensors = vec![input.to_vec()];
    for seg in &model.segments {
        let x = tensors.last().expect("starts non-empty");
        seg.check_input(x)?;
        let y = seg.eval(x);
        tensors.push(y);
    }
    let leaves: Vec<[u8; 32]> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| leaf(i, t))
        .collect();
    let root = merkle_root(&leaves);
    Ok(Trace {
        tensors,
        leaves,
        root,
    })
}

/// Leaf hash of boundary tensor `index`.
pub fn leaf(index: usize, tensor: &[i64]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(LEAF_DOMAIN);
    h.update(&(index as u64).to_le_bytes());
    h.update(&(tensor.len() as u64).to_le_bytes());
    for v in tensor {
        h.update(&v.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Binary Merkle root; an odd node at any level is carried up unchanged.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    if level.is_empty() {
        return *blake3::hash(NODE_DOMAIN).as_bytes();
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => {
                    let mut h = blake3::Hasher::new();
                    h.update(NODE_DOMAIN);
                    h.update(a);
                    h.update(b);
                    *h.finalize().as_bytes()
                }
                [a] => *a,
                _ => unreachable!("chunks(2)"),
            })
            .collect();
    }
    level[0]
}
