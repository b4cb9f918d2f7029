//! NVRTC compiles the GPU kernels' source, for the GPU generations miners run. Needs only
//! the NVRTC library, not a GPU: `.ci/run` fetches the nvidia-cuda-nvrtc-cu12 wheel, puts it
//! on LD_LIBRARY_PATH and runs this with `--ignored`.
#![cfg(feature = "cuda")]

use provnet_kernels::gpu::cuda_compile as compile;

#[test]
#[ignore = "needs NVRTC (libnvrtc.so); .ci/run provides it and runs this"]
fn nvrtc_compiles_the_kernels() {
    // The oldest and newest generations we target: Turing (RTX 20xx) and Hopper (H100/H200).
    // PROVNET_NVRTC_ARCHS=compute_86,compute_89 picks others.
    let archs =
        std::env::var("PROVNET_NVRTC_ARCHS").unwrap_or_else(|_| "compute_75,compute_90".into());
    for arch in archs.split(',') {
        let ptx = compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let text = ptx.to_src();
        for k in [
            "msm_digits",
            "msm_accumulate_g1",
            "msm_accumulate_g2",
            "ntt_stage",
        ] {
            assert!(
                text.contains(&format!(".entry {k}")),
                "{arch}: no kernel {k}"
            );
        }
    }
}

#[test]
#[ignore = "needs NVRTC (libnvrtc.so); .ci/run provides it and runs this"]
fn a_broken_kernel_is_a_compile_error_not_a_panic() {
    let e = provnet_kernels::gpu::cuda_compile_source(
        "extern \"C\" __global__ void k() { undefined_thing(); }",
        "compute_75",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("NVRTC"), "{e}");
}
