//! provnet's provable inference kernels: ONNX import, quantized integer segments, native
//! execution with a trace commitment, one R1CS circuit per segment, Groth16 (BN254) keys,
//! proving over a pluggable backend, and verification.
//!
//! Synchronous and free of networking: it depends on arkworks, blake3 and serde only. The
//! node, miner and validator crates call into it from worker threads.

pub mod batch;
pub mod binding;
pub mod ceremony;
pub mod circuit;
pub mod error;
pub mod export;
pub mod fft;
pub mod gadgets;
pub mod gpu;
pub mod import;
pub mod keys;
pub mod model;
pub mod msm;
pub mod onnx;
pub mod onnx_proto;
pub mod proof;
pub mod prover;
pub mod ptau;
pub mod r1cs;
pub mod raw;
pub mod split;
pub mod trace;
pub mod witness_msm;

pub use binding::{binding, ProofContext};
pub use error::{KernelError, Result};
pub use import::{import, ImportOptions, ModelSummary};
pub use keys::{setup, ModelKeys};
pub use model::{Model, Range, Segment};
pub use proof::{prove_segment, prove_segment_many, ProofFile, SegmentProof, SegmentVerifier};
pub use prover::{CpuBackend, ProverBackend};
pub use trace::Trace;
