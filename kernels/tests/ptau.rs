//! Reading snarkjs `.ptau` files: the shared pot14 file (snarkjs 0.7.6, one contribution and
//! a beacon, prepared for phase 2) reads and is self-consistent; damaged files are refused
//! with the reason.

mod common;

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Affine};
use ark_ec::{pairing::Pairing, AffineRepr, CurveGroup, VariableBaseMSM};
use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
use provnet_kernels::ptau::Ptau;
use provnet_kernels::KernelError;

fn pot14() -> std::path::PathBuf {
    common::fixture("pot14_final.ptau")
}

fn reason(r: provnet_kernels::Result<Ptau>) -> String {
    match r {
        Err(KernelError::Ptau { reason, .. }) => reason,
        other => panic!("expected a ptau error, got {other:?}"),
    }
}

#[test]
fn the_shared_file_reads_and_its_powers_agree() {
    let mut p = Ptau::open(&pot14()).unwrap();
    assert_eq!((p.power(), p.ceremony_power()), (14, 14));
    assert!(p.prepared());
    let (g1, g2) = (G1Affine::generator(), G2Affine::generator());
    let t1 = p.tau_g1(4).unwrap();
    let t2 = p.tau_g2(4).unwrap();
    assert_eq!((t1[0], t2[0]), (g1, g2), "tau^0 is the generator");
    // e([tau^i]1, [1]2) = e([1]1, [tau^i]2), and e([tau^(i+1)]1, [1]2) = e([tau^i]1, [tau]2).
    for i in 0..4 {
        assert_eq!(
            Bn254::pairing(t1[i], g2),
            Bn254::pairing(g1, t2[i]),
            "tau^{i}"
        );
    }
    for i in 0..3 {
        assert_eq!(Bn254::pairing(t1[i + 1], g2), Bn254::pairing(t1[i], t2[1]));
    }
    // [beta tau^i]1 against [beta]2, [alpha tau^i]1 against [alpha]1 = [alpha tau^0]1.
    let beta = p.beta_g2().unwrap();
    let b1 = p.beta_tau_g1(3).unwrap();
    let a1 = p.alpha_tau_g1(3).unwrap();
    for i in 0..3 {
        assert_eq!(Bn254::pairing(b1[i], g2), Bn254::pairing(t1[i], beta));
        assert_eq!(Bn254::pairing(a1[i], g2), Bn254::pairing(a1[0], t2[i]));
    }
    // The last power of each section is there too.
    assert_eq!(p.tau_g1((1 << 15) - 1).unwrap().len(), (1 << 15) - 1);
    assert!(p.tau_g1(1 << 15).is_err());
}

/// The sum of a basis's points.
fn sum<A: AffineRepr>(points: &[A]) -> A {
    points
        .iter()
        .map(|q| q.into_group())
        .sum::<A::Group>()
        .into_affine()
}

#[test]
fn the_lagrange_bases_sum_to_one() {
    // sum_i L_i(tau) = 1 on every domain: the basis points add up to the generator (and
    // the alpha and beta ones to [alpha]1 and [beta]1).
    let mut p = Ptau::open(&pot14()).unwrap();
    let (a, b) = (p.alpha_tau_g1(1).unwrap()[0], p.beta_tau_g1(1).unwrap()[0]);
    for k in [0u32, 3, 10, 14] {
        assert_eq!(
            sum(&p.lagrange_g1(k).unwrap()),
            G1Affine::generator(),
            "G1, 2^{k}"
        );
        assert_eq!(sum(&p.lagrange_alpha_g1(k).unwrap()), a, "alpha, 2^{k}");
        assert_eq!(sum(&p.lagrange_beta_g1(k).unwrap()), b, "beta, 2^{k}");
    }
    // And sum_i w^i L_i(tau) = tau with arkworks' own root of unity w: the file's bases are
    // over the same domain, in the same order, as the evaluation domains our QAP uses (what
    // a phase 2 built on this file needs).
    let tau = p.tau_g1(2).unwrap()[1];
    for k in [1u32, 3, 10] {
        let w = Radix2EvaluationDomain::<Fr>::new(1 << k)
            .unwrap()
            .group_gen();
        let basis = p.lagrange_g1(k).unwrap();
        let scalars: Vec<Fr> = std::iter::successors(Some(Fr::from(1u64)), |x| Some(*x * w))
            .take(basis.len())
            .collect();
        let sum = G1Projective::msm(&basis, &scalars).unwrap();
        assert_eq!(sum.into_affine(), tau, "2^{k}");
    }
    assert_eq!(sum(&p.lagrange_g2(6).unwrap()), G2Affine::generator());
    // The G1 basis goes one power further (the h query's domain doubles).
    assert_eq!(p.lagrange_g1(15).unwrap().len(), 1 << 15);
    let err = p.lagrange_g1(16).unwrap_err().to_string();
    assert!(err.contains("power 15 or more"), "{err}");
    let err = p.lagrange_g2(15).unwrap_err().to_string();
    assert!(err.contains("power 15 or more"), "{err}");
}

#[test]
fn a_circuit_past_the_file_is_refused_naming_the_power_it_needs() {
    let p = Ptau::open(&pot14()).unwrap();
    p.require_domain(1 << 14).unwrap();
    p.require_domain(3000).unwrap();
    let err = p.require_domain((1 << 14) + 1).unwrap_err().to_string();
    assert!(
        err.contains("2^15") && err.contains("power 15 or more") && err.contains("power 14"),
        "{err}"
    );
}

#[test]
fn damaged_files_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(pot14()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    assert!(
        reason(Ptau::open(&write("magic", b"zkey\x01\0\0\0\x0b\0\0\0"))).contains("not a snarkjs")
    );
    assert!(reason(Ptau::open(&write("empty", b""))).contains("shorter"));
    let cut = write("cut", &good[..good.len() / 2]);
    assert!(reason(Ptau::open(&cut)).contains("truncated"));
    // The header's power says 15: every section is the wrong size for it.
    let mut power = good.clone();
    power[24 + 36] = 15;
    assert!(reason(Ptau::open(&write("power", &power))).contains("expected for power 15"));
    // A wrong field modulus.
    let mut field = good.clone();
    field[24 + 4] ^= 1;
    assert!(reason(Ptau::open(&write("field", &field))).contains("not BN254's"));
    // A flipped byte in [tau^1]1 (section 2 starts at byte 80) and in [tau^2]2: the header
    // still opens, the point does not read.
    let mut point = good.clone();
    point[80 + 64 + 5] ^= 0x10;
    point[2097180 + 2 * 128 + 70] ^= 0x01;
    let mut p = Ptau::open(&write("point", &point)).unwrap();
    let err = p.tau_g1(2).unwrap_err().to_string();
    assert!(
        err.contains("TauG1 point 1") && err.contains("curve"),
        "{err}"
    );
    let err = p.tau_g2(3).unwrap_err().to_string();
    assert!(err.contains("TauG2 point 2"), "{err}");
    // A coordinate at or above the modulus.
    let mut big = good;
    big[80 + 64..80 + 96].fill(0xff);
    let mut p = Ptau::open(&write("big", &big)).unwrap();
    let err = p.tau_g1(2).unwrap_err().to_string();
    assert!(err.contains("modulus"), "{err}");
}
