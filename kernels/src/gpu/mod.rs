//! The GPU proving backend: provnet's own CUDA kernels for BN254 (G1 and G2 MSM, the NTTs of
//! Groth16's quotient), compiled at run time with NVRTC and driven through cudarc's dynamic
//! loading, so a binary built with the `cuda` feature still runs, on the CPU, where there is
//! no GPU or no driver.
//!
//! - [`source`]: the kernels' CUDA C text (always built; tests run it in emulation).
//! - [`layout`]: buffers, launch geometry and conversions (always built).
//! - `CudaBackend` (feature `cuda`): the [`crate::ProverBackend`] on a GPU.
//! - [`select`]: `auto | cpu | cuda`, as the CLI offers it.

pub mod layout;
mod source;

#[cfg(feature = "cuda")]
mod cuda;

#[cfg(feature = "cuda")]
pub use cuda::{
    compile as cuda_compile, compile_source as cuda_compile_source, nvrtc_present, CudaBackend,
};
pub use source::{source, source_digest};

use std::str::FromStr;
use std::sync::Arc;

use crate::prover::{CpuBackend, ProverBackend};

/// Which proving backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" | "gpu" => Ok(BackendChoice::Cuda),
            _ => Err(format!("unknown backend {s:?}: expected auto, cpu or cuda")),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// The backend `choice` asks for. `Cuda` without a usable GPU is an error saying why;
/// `Auto` then falls back to the CPU and logs the reason.
pub fn select(choice: BackendChoice) -> Result<Arc<dyn ProverBackend>, String> {
    match choice {
        BackendChoice::Cpu => Ok(Arc::new(CpuBackend)),
        BackendChoice::Cuda => open_gpu(),
        BackendChoice::Auto => match open_gpu() {
            Ok(b) => {
                tracing::info!(target: "prover", backend = b.name(), "proving on the GPU");
                Ok(b)
            }
            Err(why) => {
                tracing::info!(target: "prover", "proving on the CPU: {why}");
                Ok(Arc::new(CpuBackend))
            }
        },
    }
}

#[cfg(feature = "cuda")]
fn open_gpu() -> Result<Arc<dyn ProverBackend>, String> {
    CudaBackend::open(0)
        .map(|b| Arc::new(b) as Arc<dyn ProverBackend>)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn open_gpu() -> Result<Arc<dyn ProverBackend>, String> {
    Err("this provnet was built without the `cuda` feature (cargo build --features cuda)".into())
}
