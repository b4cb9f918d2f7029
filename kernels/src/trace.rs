//! Native execution of a whole model and its trace commitment.
//!
//! A *cut* is a point between segments: cut 0 is the model input, cut k the output of
//! segment k - 1, cut L (L segments) the model output. The *state* at a cut is every tensor
//! live across it (today's chain models: one). Its hash `s_k` ([`state_hash`]) is a blake3
//! Merkle root over those tensors, and the trace commitment is the Merkle root over
//! `s_0..s_L` ([`merkle_root`]). A dispute bisects over the `s_k`, each revealed with a
//! [`MerkleProof`] against the root, to find the one segment to prove.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};
use crate::model::{Model, Segment};

/// Domain separators for trace hashing.
const LEAF_DOMAIN: &[u8] = b"provnet/trace/leaf/v1";
const NODE_DOMAIN: &[u8] = b"provnet/trace/node/v1";
/// Most levels a Merkle proof may have (2^40 leaves): longer ones are refused unread.
pub const MAX_PROOF_DEPTH: usize = 40;

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

    /// Cuts in the trace (segments + 1).
    pub fn cuts(&self) -> usize {
        self.leaves.len()
    }

    /// The Merkle tree over the state hashes (its root is [`Trace::root`]).
    pub fn tree(&self) -> MerkleTree {
        MerkleTree::new(&self.leaves)
    }
}

/// Runs every segment on a quantized input and commits to the boundary tensors.
pub fn run(model: &Model, input: &[i64]) -> Result<Trace> {
    run_with(model, input, |_, _| {})
}

/// A state the model reaches at the input of segment `segment`: a model input drawn
/// anywhere in the first segment's ranges, run through the segments before it. (A point
/// drawn anywhere in a later segment's own input ranges need not be one: a LayerNorm
/// bounds its values jointly, see [`crate::model::Norm`], and such an input is refused.)
pub fn random_state(model: &Model, segment: usize, rng: &mut impl Rng) -> Result<Vec<i64>> {
    let first = model
        .segments
        .first()
        .ok_or_else(|| KernelError::Input("the model has no segments".into()))?;
    if segment >= model.segments.len() {
        return Err(KernelError::Input(format!(
            "segment {segment} out of range: the model has {}",
            model.segments.len()
        )));
    }
    let mut x: Vec<i64> = first
        .input_bounds()
        .into_iter()
        .map(|(lo, hi)| rng.gen_range(lo as i64..=hi as i64))
        .collect();
    for seg in &model.segments[..segment] {
        seg.check_input(&x)?;
        x = seg.eval(&x);
    }
    Ok(x)
}

/// [`run`], with `after(segment, output)` called on each segment's output before the next
/// segment takes it (a test's corner-cutting node changes it there).
pub fn run_with(
    model: &Model,
    input: &[i64],
    mut after: impl FnMut(&Segment, &mut Vec<i64>),
) -> Result<Trace> {
    let mut tensors = vec![input.to_vec()];
    for seg in &model.segments {
        let x = tensors.last().expect("starts non-empty");
        seg.check_input(x)?;
        let mut y = seg.eval(x);
        after(seg, &mut y);
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

/// The state hash `s_k` at cut `cut`: a Merkle root over the live tensors, each hashed
/// with the cut and its position.
pub fn state_hash(cut: usize, tensors: &[&[i64]]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_hash(cut, i, t))
        .collect();
    merkle_root(&leaves)
}

/// The state hash of a cut with one live tensor (every model today).
pub fn leaf(cut: usize, tensor: &[i64]) -> [u8; 32] {
    state_hash(cut, &[tensor])
}

fn tensor_hash(cut: usize, position: usize, tensor: &[i64]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(LEAF_DOMAIN);
    h.update(&(cut as u64).to_le_bytes());
    h.update(&(position as u64).to_le_bytes());
    h.update(&(tensor.len() as u64).to_le_bytes());
    for v in tensor {
        h.update(&v.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

fn node(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(NODE_DOMAIN);
    h.update(a);
    h.update(b);
    *h.finalize().as_bytes()
}

/// Binary Merkle root; an odd node at any level is carried up unchanged.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    if level.is_empty() {
        return *blake3::hash(NODE_DOMAIN).as_bytes();
    }
    while level.len() > 1 {
        level = parents(&level);
    }
    level[0]
}

/// The level above `level`: each pair hashed, an odd last node carried up unchanged.
fn parents(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => node(a, b),
            [a] => *a,
            _ => unreachable!("chunks(2)"),
        })
        .collect()
}

/// Every level of a Merkle tree, leaves first, so each proof is read off in `log n`
/// (a side of a dispute answers many of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    pub fn new(leaves: &[[u8; 32]]) -> MerkleTree {
        let mut levels = vec![leaves.to_vec()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let next = parents(&levels[levels.len() - 1]);
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// The root ([`merkle_root`] of the leaves).
    pub fn root(&self) -> [u8; 32] {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) if !self.levels[0].is_empty() => *r,
            _ => merkle_root(&[]),
        }
    }

    pub fn leaves(&self) -> &[[u8; 32]] {
        &self.levels[0]
    }

    /// The proof for leaf `index`; `None` when out of range.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        if index >= self.levels[0].len() {
            return None;
        }
        let mut i = index;
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(s) = level.get(i ^ 1) {
                siblings.push(*s);
            }
            i /= 2;
        }
        Some(MerkleProof { siblings })
    }
}

/// The siblings from a leaf up to the root of a tree of `n` leaves ([`merkle_root`]'s
/// shape: a carried node has no sibling at that level, and none is listed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    pub siblings: Vec<[u8; 32]>,
}

impl MerkleProof {
    /// The proof for leaf `index` of `leaves`; `None` when out of range. (Builds the tree:
    /// for many proofs of one tree, use [`MerkleTree::proof`].)
    pub fn new(leaves: &[[u8; 32]], index: usize) -> Option<MerkleProof> {
        MerkleTree::new(leaves).proof(index)
    }

    /// Whether `leaf` is leaf `index` of a tree of `n` leaves with root `root`.
    pub fn verify(&self, root: &[u8; 32], n: usize, index: usize, leaf: &[u8; 32]) -> bool {
        if index >= n || self.siblings.len() > MAX_PROOF_DEPTH {
            return false;
        }
        let (mut acc, mut i, mut width) = (*leaf, index, n);
        let mut siblings = self.siblings.iter();
        while width > 1 {
            let sibling = i ^ 1;
            if sibling < width {
                let Some(s) = siblings.next() else {
                    return false;
                };
                acc = if i % 2 == 0 {
                    node(&acc, s)
                } else {
                    node(s, &acc)
                };
            }
            i /= 2;
            width = width.div_ceil(2);
        }
        siblings.next().is_none() && acc == *root
    }
}
