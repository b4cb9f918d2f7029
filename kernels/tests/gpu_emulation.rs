//! The GPU kernels' CUDA C, compiled for the host with the C++ compiler and run in emulation
//! (each kernel once per thread id, in launch order; see `cuda/bn254.cuh`), checked against
//! arkworks. This tests the field and curve arithmetic, the signed-digit and bucket logic of
//! the MSM and the NTTs on any machine; the `cuda` feature's device tests
//! (`tests/gpu_device.rs`) check the same on a GPU.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use ark_bn254::{Fq, Fq2, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
use ark_ff::{Field, UniformRand, Zero};
use ark_std::rand::{rngs::StdRng, Rng, SeedableRng};
use provnet_kernels::gpu::layout::{self, MsmPlan};
use provnet_kernels::{CpuBackend, ProverBackend};

/// Builds the emulation driver once per test binary.
fn driver() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("provnet-gpu-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("emu.cpp");
        let driver = include_str!("gpu_emulation/driver.cpp");
        std::fs::write(
            &src,
            format!("{}\n{driver}", provnet_kernels::gpu::source()),
        )
        .unwrap();
        let bin = dir.join("emu");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
        let out = Command::new(&cxx)
            .args(["-O2", "-std=c++17", "-w", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("running the C++ compiler {cxx:?} (set CXX): {e}"));
        assert!(
            out.status.success(),
            "the kernels do not compile for the host:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

fn run(input: &str) -> Vec<Vec<u64>> {
    let mut child = Command::new(driver())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| u64::from_str_radix(w, 16).unwrap())
                .collect()
        })
        .collect()
}

fn hex(words: &[u64]) -> String {
    words.iter().map(|w| format!("{w:x} ")).collect()
}

fn limbs_fq(f: &Fq) -> [u64; 4] {
    f.0 .0
}

#[test]
fn field_multiplication_matches_arkworks() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut input = String::new();
    let mut expect = Vec::new();
    let edge_fq = [Fq::zero(), Fq::from(1u64), -Fq::from(1u64), -Fq::from(2u64)];
    for i in 0..64 {
        let (a, b) = if i < 16 {
            (edge_fq[i % 4], edge_fq[i / 4])
        } else {
            (Fq::rand(&mut rng), Fq::rand(&mut rng))
        };
        input += &format!("fq_mul {}{}\n", hex(&limbs_fq(&a)), hex(&limbs_fq(&b)));
        expect.push(limbs_fq(&(a * b)).to_vec());
    }
    for _ in 0..32 {
        let (a, b) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        input += &format!("fr_mul {}{}\n", hex(&a.0 .0), hex(&b.0 .0));
        expect.push((a * b).0 .0.to_vec());
    }
    for _ in 0..32 {
        let (a, b) = (Fq2::rand(&mut rng), Fq2::rand(&mut rng));
        let w = |x: &Fq2| [limbs_fq(&x.c0), limbs_fq(&x.c1)].concat();
        input += &format!("fq2_mul {}{}\n", hex(&w(&a)), hex(&w(&b)));
        let r = a * b;
        expect.push(limbs_fq(&r.c0).to_vec());
        expect.push(limbs_fq(&r.c1).to_vec());
    }
    assert_eq!(run(&input), expect);
}

/// Runs the MSM pipeline over `sets` scalar vectors against the same bases; one result each.
fn emulated_msm_sets<G: CurveGroup>(
    op: &str,
    n: usize,
    c: u32,
    base_words: Vec<u64>,
    sets: &[Vec<Fr>],
    decode: impl Fn(&[u64]) -> provnet_kernels::Result<G>,
) -> Vec<G> {
    let all: Vec<Fr> = sets.concat();
    let input = format!(
        "{op} {n:x} {c:x} {:x}\n{}\n{}\n",
        sets.len(),
        hex(&base_words),
        hex(&layout::fr_words(&all))
    );
    let out = run(&input);
    let (windows, parts) = (out[0][0] as usize, out[0][1] as usize);
    assert_eq!(windows as u32, MsmPlan::with_window(n as u32, c).windows);
    out[1..]
        .chunks(windows + parts)
        .map(|lines| {
            let ws: Vec<G> = lines[..windows]
                .iter()
                .map(|w| decode(w).unwrap())
                .collect();
            let ps: Vec<G> = lines[windows..]
                .iter()
                .map(|w| decode(w).unwrap())
                .collect();
            layout::combine(&ws, &ps, c)
        })
        .collect()
}

fn emulated_msm<G: CurveGroup>(
    op: &str,
    n: usize,
    c: u32,
    base_words: Vec<u64>,
    sc: &[Fr],
    decode: impl Fn(&[u64]) -> provnet_kernels::Result<G>,
) -> G {
    let mut v = emulated_msm_sets(op, n, c, base_words, &[sc.to_vec()], decode);
    assert_eq!(v.len(), 1);
    v.remove(0)
}

#[test]
fn g1_msm_matches_arkworks() {
    let mut rng = StdRng::seed_from_u64(2);
    for (n, c) in [
        (1, 4),
        (2, 4),
        (13, 4),
        (100, 5),
        (700, 8),
        (3000, 0),
        (5000, 13),
    ] {
        let c = if c == 0 {
            MsmPlan::new(n).unwrap().c
        } else {
            c
        };
        let bases = common::edge_g1_bases(n, &mut rng);
        let sc = common::edge_scalars(n, &mut rng);
        let got = emulated_msm(
            "msm_g1",
            n,
            c,
            layout::g1_words(&bases),
            &sc,
            layout::g1_from_xyzz,
        );
        let want = G1Projective::msm(&bases, &sc).unwrap();
        assert_eq!(got.into_affine(), want.into_affine(), "n = {n}, c = {c}");
    }
}

#[test]
fn batched_msms_over_shared_bases_match_one_by_one() {
    // Several proofs' scalar vectors against one proving key's bases, in one pass.
    let mut rng = StdRng::seed_from_u64(7);
    let n = 600;
    let bases = common::edge_g1_bases(n, &mut rng);
    let sets: Vec<Vec<Fr>> = (0..5)
        .map(|k| match k {
            0 => vec![Fr::zero(); n],
            1 => (0..n).map(|_| Fr::from(rng.gen_range(0u64..2))).collect(),
            _ => common::edge_scalars(n, &mut rng),
        })
        .collect();
    let got = emulated_msm_sets(
        "msm_g1",
        n,
        7,
        layout::g1_words(&bases),
        &sets,
        layout::g1_from_xyzz,
    );
    assert_eq!(got.len(), sets.len());
    for (k, s) in sets.iter().enumerate() {
        assert_eq!(got[k], G1Projective::msm(&bases, s).unwrap(), "set {k}");
    }
}

#[test]
fn g1_msm_of_bits_only() {
    // A witness of bits: everything goes to the +-1 list and its tree of partial sums.
    let mut rng = StdRng::seed_from_u64(3);
    let n = 4100;
    let bases: Vec<G1Affine> = (0..n).map(|_| G1Affine::rand(&mut rng)).collect();
    let sc: Vec<Fr> = (0..n).map(|_| Fr::from(rng.gen_range(0u64..2))).collect();
    let c = MsmPlan::new(n).unwrap().c;
    let got = emulated_msm(
        "msm_g1",
        n,
        c,
        layout::g1_words(&bases),
        &sc,
        layout::g1_from_xyzz,
    );
    assert_eq!(got, G1Projective::msm(&bases, &sc).unwrap());
}

#[test]
fn g1_msm_of_all_zero_scalars_is_the_identity() {
    let mut rng = StdRng::seed_from_u64(4);
    let bases = common::edge_g1_bases(40, &mut rng);
    let sc = vec![Fr::zero(); 40];
    let got = emulated_msm(
        "msm_g1",
        40,
        4,
        layout::g1_words(&bases),
        &sc,
        layout::g1_from_xyzz,
    );
    assert!(got.is_zero());
}

#[test]
fn g2_msm_matches_arkworks() {
    let mut rng = StdRng::seed_from_u64(5);
    for (n, c) in [(1, 4), (29, 4), (300, 6)] {
        let distinct: Vec<G2Affine> = (0..8).map(|_| G2Affine::rand(&mut rng)).collect();
        let bases: Vec<G2Affine> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    G2Affine::zero()
                } else {
                    distinct[i % 8]
                }
            })
            .collect();
        let sc = common::edge_scalars(n, &mut rng);
        let got = emulated_msm(
            "msm_g2",
            n,
            c,
            layout::g2_words(&bases),
            &sc,
            layout::g2_from_xyzz,
        );
        let want = G2Projective::msm(&bases, &sc).unwrap();
        assert_eq!(got.into_affine(), want.into_affine(), "n = {n}, c = {c}");
    }
}

#[test]
fn quotient_matches_the_cpu_backend() {
    let mut rng = StdRng::seed_from_u64(6);
    for log_n in [1u32, 2, 5, 10] {
        let n = 1usize << log_n;
        let v = |rng: &mut StdRng| -> Vec<Fr> { (0..n).map(|_| Fr::rand(rng)).collect() };
        let (a, b, c) = (v(&mut rng), v(&mut rng), v(&mut rng));
        let t = layout::NttTables::new(log_n).unwrap();
        let input = format!(
            "quotient {log_n:x}\n{}{}{}{}{}{}{}{}\n",
            hex(&layout::fr_words(&a)),
            hex(&layout::fr_words(&b)),
            hex(&layout::fr_words(&c)),
            hex(&t.tw_fwd),
            hex(&t.tw_inv),
            hex(&t.scale_in),
            hex(&t.scale_out),
            hex(&t.z_inv),
        );
        let out = run(&input);
        let got = layout::fr_from_words(&out[0]);
        let want = CpuBackend.quotient(a, b, c).unwrap();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn a_point_off_the_curve_is_an_error_not_a_result() {
    let mut w = [0u64; 16];
    w[..4].copy_from_slice(&limbs_fq(&Fq::from(5u64)));
    w[4..8].copy_from_slice(&limbs_fq(&Fq::from(7u64)));
    w[8..12].copy_from_slice(&limbs_fq(&Fq::from(1u64)));
    w[12..16].copy_from_slice(&limbs_fq(&Fq::from(1u64)));
    let e = layout::g1_from_xyzz(&w).unwrap_err().to_string();
    assert!(e.contains("off the curve"), "{e}");
    assert!(Fq::from(1u64).inverse().is_some());
}
