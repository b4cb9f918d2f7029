//! The setup ceremony. Phase 1: reading snarkjs `.ptau` files: the shared pot14 file
//! (snarkjs 0.7.6, one contribution and a beacon, prepared for phase 2) reads and is
//! self-consistent; damaged files are refused with the reason. Phase 2: a three-party
//! ceremony and a beacon yield keys under which proofs verify; every kind of bad
//! contribution is refused with its reason; transcripts re-verify from scratch.

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

// ---- Phase 2 ----

use provnet_kernels::ceremony::{self, Transcript};
use provnet_kernels::{keys, prove_segment, trace, CpuBackend, ModelKeys, ProofContext};
use provnet_kernels::{Model, SegmentVerifier};

const CTX: ProofContext = ProofContext {
    challenge: [4; 32],
    nonce: [5; 32],
    miner: [6; 32],
};

fn start(tmp: &std::path::Path, name: &str) -> (std::path::PathBuf, Model, Transcript) {
    let (dir, model, _) = common::import_fixture(tmp, name);
    let mut p = Ptau::open(&pot14()).unwrap();
    let t0 = ceremony::initial(&model, &mut p, "pot14_final.ptau").unwrap();
    (dir, model, t0)
}

fn refusal(r: provnet_kernels::Result<ceremony::Verified>) -> String {
    match r {
        Err(KernelError::Ceremony(reason)) => reason,
        other => panic!("expected a ceremony refusal, got {other:?}"),
    }
}

#[test]
fn a_three_party_ceremony_and_beacon_yield_keys_that_prove_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, t0) = start(tmp.path(), "deep_mlp");
    assert!(model.segments.len() > 1);
    // The initial parameters re-derive to the same bytes, and verify against themselves.
    let again = ceremony::initial(&model, &mut Ptau::open(&pot14()).unwrap(), "pot14").unwrap();
    assert_eq!((again.cs_hash, &again.segments), (t0.cs_hash, &t0.segments));
    ceremony::verify(&t0, &t0).unwrap();
    let mut t = t0.clone();
    for name in ["alice", "bob", "carol"] {
        let next = ceremony::contribute(&t, name, name.as_bytes()).unwrap();
        let step = ceremony::verify_step(&t, &next).unwrap();
        assert_eq!(step.contributions.last().unwrap().0, name);
        // Through the file format, as an operator passes it on.
        let path = tmp.path().join(format!("{name}.transcript"));
        next.write(&path).unwrap();
        t = Transcript::read(&path).unwrap();
        assert_eq!(t, next);
    }
    let done = ceremony::beacon(&t, b"block 123456 hash", 4).unwrap();
    // Anyone recomputes the beacon step.
    assert_eq!(ceremony::beacon(&t, b"block 123456 hash", 4).unwrap(), done);
    ceremony::verify_step(&t, &done).unwrap();
    let report = ceremony::verify(&t0, &done).unwrap();
    assert_eq!(report.contributions.len(), 4);
    assert!(report.beacon);
    assert!(
        ceremony::contribute(&done, "late", b"").is_err(),
        "nothing after a beacon"
    );
    // Every contribution moved delta: the keys are not the initial ones.
    for (a, b) in t0.segments.iter().zip(&done.segments) {
        assert_ne!(a.vk.delta_g2, b.vk.delta_g2);
    }

    keys::install(
        &dir,
        &model,
        done.segments.iter().map(|pk| (pk.clone(), 0)).collect(),
        "test ceremony",
        "",
    )
    .unwrap();
    // Keys are written as they come: a stream that fails part-way installs nothing and
    // leaves the installed keys as they were, with no staging directory behind.
    let failing = done
        .segments
        .iter()
        .take(2)
        .map(|pk| Ok((pk.clone(), 0)))
        .chain(std::iter::once(Err(provnet_kernels::KernelError::Input(
            "setup interrupted".into(),
        ))));
    assert!(keys::install_each(&dir, &model, failing, "partial", "").is_err());
    let short = done.segments[..3].iter().map(|pk| Ok((pk.clone(), 0)));
    assert!(keys::install_each(&dir, &model, short, "short", "").is_err());
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let mk = ModelKeys::open(&dir, &model).unwrap();
    let x = model.quantize(&common::read_floats("deep_mlp_input.json", "input_data"));
    let tr = trace::run(&model, &x).unwrap();
    let mut rng = rand::rngs::OsRng;
    for seg in &model.segments {
        let (vk, id) = mk.verifying_key(seg.index).unwrap();
        assert_eq!(id, report.vk_ids[seg.index]);
        let pk = mk.proving_key(seg.index).unwrap();
        let input = &tr.tensors[seg.index];
        let proof = prove_segment(&CpuBackend, &model, seg, &pk, input, &CTX, &mut rng).unwrap();
        let file = proof.to_file(&model, seg, &id, input, &CTX);
        let v = SegmentVerifier::new(seg.index, vk, id);
        v.verify(&model, &file, &CTX).unwrap();
        let mut other = CTX;
        other.nonce[0] ^= 1;
        assert!(v.verify(&model, &file, &other).is_err());
    }
}

/// A change made to a transcript.
type Edit = Box<dyn Fn(&mut Transcript)>;

#[test]
fn bad_contributions_are_refused_with_the_reason() {
    use ark_ec::PrimeGroup;
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, t0) = start(tmp.path(), "dense_16");
    let t1 = ceremony::contribute(&t0, "honest", b"").unwrap();
    let step = |edit: &dyn Fn(&mut Transcript)| {
        let mut bad = t1.clone();
        edit(&mut bad);
        (
            refusal(ceremony::verify_step(&t0, &bad)),
            refusal(ceremony::verify(&t0, &bad)),
        )
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "wrong proof of knowledge",
            Box::new(|t| {
                let p = &mut t.contributions[0].segments[0];
                p.r_x = (p.r_x + G2Affine::generator()).into_affine();
            }),
            "proof of knowledge does not verify",
        ),
        (
            "broken delta link",
            Box::new(|t| {
                // A consistent-looking key for some other delta (not x times the previous).
                let y = Fr::from(7u64);
                let p = &mut t.contributions[0].segments[0];
                p.delta_after = (p.delta_after * y).into_affine();
                t.segments[0].delta_g1 = p.delta_after;
                t.segments[0].vk.delta_g2 = (t.segments[0].vk.delta_g2 * y).into_affine();
            }),
            "broken δ link",
        ),
        (
            "tampered L point",
            Box::new(|t| {
                let l = &mut t.segments[0].l_query[3];
                *l = (*l + G1Affine::generator()).into_affine();
            }),
            "L or H query was not moved",
        ),
        (
            "tampered H point",
            Box::new(|t| {
                let h = &mut t.segments[0].h_query[0];
                *h = (h.into_group() + *h).into_affine();
            }),
            "L or H query was not moved",
        ),
        (
            "changed A query",
            Box::new(|t| {
                let a = &mut t.segments[0].a_query[1];
                *a = (*a + G1Affine::generator()).into_affine();
            }),
            "the A query changed",
        ),
        (
            "changed public-input points",
            Box::new(|t| {
                t.segments[0].vk.gamma_abc_g1[0] = G1Projective::generator().into_affine();
            }),
            "public-input points (IC) changed",
        ),
        (
            "delta in G2 off",
            Box::new(|t| {
                t.segments[0].vk.delta_g2 = G2Affine::generator();
            }),
            "δ in G2 does not match",
        ),
    ];
    for (what, edit, want) in &cases {
        let (s, f) = step(edit.as_ref());
        assert!(s.contains(want), "{what}: step said {s:?}");
        assert!(f.contains(want), "{what}: full verify said {f:?}");
    }
    // A contribution built on another ceremony's transcript, or with its history rewritten.
    let other = ceremony::contribute(&t0, "other", b"").unwrap();
    let two = ceremony::contribute(&t1, "second", b"").unwrap();
    let mut swapped = two.clone();
    swapped.contributions[0] = other.contributions[0].clone();
    assert!(refusal(ceremony::verify(&t0, &swapped)).contains("contribution"));
    assert!(refusal(ceremony::verify_step(&t1, &swapped)).contains("previous transcript"));
    // A transcript started from other parameters.
    let mut forged = t1.clone();
    forged.cs_hash[0] ^= 1;
    assert!(refusal(ceremony::verify(&t0, &forged)).contains("circuit hash"));
}

#[test]
fn damaged_transcript_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, t0) = start(tmp.path(), "dense_16");
    let bytes = ceremony::contribute(&t0, "x", b"").unwrap().to_bytes();
    let parse = |b: &[u8]| match Transcript::from_bytes(b) {
        Err(KernelError::Ceremony(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(parse(b"not a transcript").contains("bad magic"));
    assert!(parse(&bytes[..bytes.len() - 10]).contains("malformed"));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(parse(&longer).contains("after its end"));
    // A coordinate changed inside the first point: off the curve.
    let mut flipped = bytes.clone();
    flipped[16 + 32 + 32 + 8 + 16 + 8 + 3] ^= 0x40;
    assert!(parse(&flipped).contains("malformed"));
    // A huge declared length does not allocate it.
    let mut huge = bytes[..16 + 64].to_vec();
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(&huge).contains("malformed"));
}

#[test]
fn steps_travel_as_deltas_and_rebuild_the_same_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, t0) = start(tmp.path(), "dense_16");
    assert!(t0.last_step().is_none());
    let t1 = ceremony::contribute(&t0, "alice", b"").unwrap();
    let bytes = t1.last_step().unwrap().to_bytes();
    assert!(
        bytes.len() < t1.to_bytes().len(),
        "a step is smaller than a transcript"
    );
    let (rebuilt, verified) = t0.accept(&bytes).unwrap();
    assert_eq!(rebuilt, t1);
    assert_eq!(verified.contributions[0].0, "alice");
    // The state id moves with every contribution and ignores the local .ptau path.
    assert_ne!(t0.state_id(), t1.state_id());
    let mut elsewhere = t1.clone();
    elsewhere.ptau_hint = "/somewhere/else.ptau".into();
    assert_eq!(elsewhere.state_id(), t1.state_id());
    assert_ne!(elsewhere.hash(), t1.hash());

    let refused = |b: &[u8]| match t0.accept(b) {
        Err(KernelError::Ceremony(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A moved L point: the step parses and applies, and verification refuses it.
    let mut step = t1.last_step().unwrap();
    let l = &mut step.segments[0].l_query[0];
    *l = (*l + G1Affine::generator()).into_affine();
    assert!(refused(&step.to_bytes()).contains("L or H query was not moved"));
    // A step for another shape, a step on the wrong base, a beacon, junk.
    let mut short = t1.last_step().unwrap();
    short.segments[0].h_query.pop();
    assert!(refused(&short.to_bytes()).contains("wrong length"));
    let t2 = ceremony::contribute(&t1, "bob", b"").unwrap();
    let on_t1 = t2.last_step().unwrap().to_bytes();
    assert!(refused(&on_t1).contains("proof of knowledge"));
    let beacon = ceremony::beacon(&t1, b"x", 1).unwrap().last_step().unwrap();
    assert!(refused(&beacon.to_bytes()).contains("beacon"));
    assert!(refused(b"junk").contains("bad magic"));
    assert!(refused(&bytes[..bytes.len() - 1]).contains("malformed"));
}
