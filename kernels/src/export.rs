//! Exports for checkers outside provnet: snarkjs' JSON files (`verification_key.json`,
//! `proof.json`, `public.json`) and a Solidity verifier in the shape of snarkjs' Groth16
//! template, taking our public inputs (packed input words, packed output words, the binding)
//! as its `_pubSignals`.
//!
//! Encodings, which differ between the two: snarkjs' JSON writes a G1 point as decimal
//! `[x, y, "1"]` and a G2 point as `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]`; the EVM's
//! pairing precompile (EIP-197), and so the contract's constants and its `_pB` argument,
//! takes G2 coordinates imaginary part first: `[x.c1, x.c0]`. The point at infinity is
//! `["0", "1", "0"]` in snarkjs and `(0, 0)` on the EVM.

use ark_bn254::{Bn254, Fq, Fq2, Fr, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInteger, PrimeField, Zero};
use ark_groth16::{Proof, VerifyingKey};
use serde_json::{json, Value};
use std::fmt::Write as _;

use crate::error::{KernelError, Result};

fn dec<F: PrimeField>(f: &F) -> String {
    f.into_bigint().to_string()
}

fn g1_json(p: &G1Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([dec(&x), dec(&y), "1"]),
        None => json!(["0", "1", "0"]),
    }
}

fn fq2_json(f: &Fq2) -> Value {
    json!([dec(&f.c0), dec(&f.c1)])
}

fn g2_json(p: &G2Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([fq2_json(&x), fq2_json(&y), ["1", "0"]]),
        None => json!([["0", "0"], ["1", "0"], ["0", "0"]]),
    }
}

/// snarkjs' `verification_key.json` for a Groth16 key over BN254 (`curve: "bn128"`). The
/// optional `vk_alphabeta_12`, which snarkjs' verifier does not read, is left out.
pub fn snarkjs_vk(vk: &VerifyingKey<Bn254>) -> Value {
    json!({
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": vk.gamma_abc_g1.len().saturating_sub(1),
        "vk_alpha_1": g1_json(&vk.alpha_g1),
        "vk_beta_2": g2_json(&vk.beta_g2),
        "vk_gamma_2": g2_json(&vk.gamma_g2),
        "vk_delta_2": g2_json(&vk.delta_g2),
        "IC": vk.gamma_abc_g1.iter().map(g1_json).collect::<Vec<_>>(),
    })
}

/// snarkjs' `proof.json`.
pub fn snarkjs_proof(proof: &Proof<Bn254>) -> Value {
    json!({
        "pi_a": g1_json(&proof.a),
        "pi_b": g2_json(&proof.b),
        "pi_c": g1_json(&proof.c),
        "protocol": "groth16",
        "curve": "bn128",
    })
}

/// snarkjs' `public.json`: the public inputs as decimal strings, circuit order.
pub fn snarkjs_public(inputs: &[Fr]) -> Value {
    Value::Array(inputs.iter().map(|f| Value::String(dec(f))).collect())
}

fn parse_dec<F: PrimeField>(v: &Value, what: &str) -> Result<F> {
    let bad = || KernelError::ProofFile(format!("{what}: not a decimal field element"));
    let s = v.as_str().ok_or_else(bad)?;
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Reject non-canonical values (≥ the modulus) rather than reduce them.
    let f = F::from_str(s).map_err(|_| bad())?;
    if dec(&f) != s {
        return Err(bad());
    }
    Ok(f)
}

fn items<'a>(v: &'a Value, n: usize, what: &str) -> Result<&'a [Value]> {
    match v.as_array() {
        Some(a) if a.len() == n => Ok(a),
        _ => Err(KernelError::ProofFile(format!(
            "{what}: expected an array of {n}"
        ))),
    }
}

fn g1_from_json(v: &Value, what: &str) -> Result<G1Affine> {
    let a = items(v, 3, what)?;
    let (x, y, z): (Fq, Fq, Fq) = (
        parse_dec(&a[0], what)?,
        parse_dec(&a[1], what)?,
        parse_dec(&a[2], what)?,
    );
    if z.is_zero() {
        return Ok(G1Affine::zero());
    }
    if z != Fq::from(1u8) {
        return Err(KernelError::ProofFile(format!(
            "{what}: only affine points (z = 1) are read"
        )));
    }
    let p = G1Affine::new_unchecked(x, y);
    if !p.is_on_curve() || !p.is_in_correct_subgroup_assuming_on_curve() {
        return Err(KernelError::ProofFile(format!("{what}: not a point of G1")));
    }
    Ok(p)
}

fn fq2_from_json(v: &Value, what: &str) -> Result<Fq2> {
    let a = items(v, 2, what)?;
    Ok(Fq2::new(parse_dec(&a[0], what)?, parse_dec(&a[1], what)?))
}

fn g2_from_json(v: &Value, what: &str) -> Result<G2Affine> {
    let a = items(v, 3, what)?;
    let (x, y, z) = (
        fq2_from_json(&a[0], what)?,
        fq2_from_json(&a[1], what)?,
        fq2_from_json(&a[2], what)?,
    );
    if z.is_zero() {
        return Ok(G2Affine::zero());
    }
    if z != Fq2::new(Fq::from(1u8), Fq::zero()) {
        return Err(KernelError::ProofFile(format!(
            "{what}: only affine points (z = 1) are read"
        )));
    }
    let p = G2Affine::new_unchecked(x, y);
    if !p.is_on_curve() || !p.is_in_correct_subgroup_assuming_on_curve() {
        return Err(KernelError::ProofFile(format!("{what}: not a point of G2")));
    }
    Ok(p)
}

/// Reads snarkjs' `verification_key.json` back (every point checked on the curve and in
/// its subgroup): for checking an export, or a key published by someone else.
pub fn vk_from_snarkjs(v: &Value) -> Result<VerifyingKey<Bn254>> {
    if v["protocol"] != "groth16" || v["curve"] != "bn128" {
        return Err(KernelError::ProofFile(
            "not a snarkjs Groth16 key over bn128".into(),
        ));
    }
    let ic = v["IC"]
        .as_array()
        .ok_or_else(|| KernelError::ProofFile("IC: expected an array".into()))?;
    let vk = VerifyingKey {
        alpha_g1: g1_from_json(&v["vk_alpha_1"], "vk_alpha_1")?,
        beta_g2: g2_from_json(&v["vk_beta_2"], "vk_beta_2")?,
        gamma_g2: g2_from_json(&v["vk_gamma_2"], "vk_gamma_2")?,
        delta_g2: g2_from_json(&v["vk_delta_2"], "vk_delta_2")?,
        gamma_abc_g1: ic
            .iter()
            .enumerate()
            .map(|(i, p)| g1_from_json(p, &format!("IC[{i}]")))
            .collect::<Result<_>>()?,
    };
    if v["nPublic"].as_u64() != Some(vk.gamma_abc_g1.len().saturating_sub(1) as u64) {
        return Err(KernelError::ProofFile(
            "nPublic does not match the length of IC".into(),
        ));
    }
    Ok(vk)
}

/// Reads snarkjs' `proof.json` back.
pub fn proof_from_snarkjs(v: &Value) -> Result<Proof<Bn254>> {
    Ok(Proof {
        a: g1_from_json(&v["pi_a"], "pi_a")?,
        b: g2_from_json(&v["pi_b"], "pi_b")?,
        c: g1_from_json(&v["pi_c"], "pi_c")?,
    })
}

/// Reads snarkjs' `public.json` back (canonical decimals below the scalar field's modulus).
pub fn public_from_snarkjs(v: &Value) -> Result<Vec<Fr>> {
    v.as_array()
        .ok_or_else(|| KernelError::ProofFile("public signals: expected an array".into()))?
        .iter()
        .enumerate()
        .map(|(i, s)| parse_dec(s, &format!("public signal {i}")))
        .collect()
}

/// The EVM's words for a G1 point: (x, y), with (0, 0) for infinity.
fn g1_words(p: &G1Affine) -> [String; 2] {
    match p.xy() {
        Some((x, y)) => [dec(&x), dec(&y)],
        None => ["0".into(), "0".into()],
    }
}

/// The EVM's words for a G2 point: (x.c1, x.c0, y.c1, y.c0), all zero for infinity.
fn g2_words(p: &G2Affine) -> [String; 4] {
    match p.xy() {
        Some((x, y)) => [dec(&x.c1), dec(&x.c0), dec(&y.c1), dec(&y.c0)],
        None => std::array::from_fn(|_| "0".into()),
    }
}

/// Where a contract comes from, written into its header.
pub struct ContractInfo<'a> {
    pub model_name: &'a str,
    pub model_id: &'a str,
    pub segment: usize,
    pub vk_id: &'a str,
    /// The public inputs in order, described (e.g. "2 packed input words, ...").
    pub layout: &'a str,
    /// Where the keys come from (the key index's warning or ceremony record).
    pub provenance: &'a str,
}

/// A Solidity verifier for one segment's key: `verifyProof(uint[2] _pA, uint[2][2] _pB,
/// uint[2] _pC, uint[N] _pubSignals) returns (bool)`, as snarkjs' template has it, so the
/// calldata `snarkjs zkey export soliditycalldata` prints for our exported files is what it
/// takes. It checks every public signal is below the scalar field's modulus, folds them into
/// the IC points with the ecMul/ecAdd precompiles and runs one 4-pair ecPairing:
/// e(−A, B)·e(α, β)·e(vk_x, γ)·e(C, δ) = 1. A failing precompile (a point off the curve or
/// out of the subgroup, a coordinate not below q) makes it return false, never revert.
pub fn solidity(vk: &VerifyingKey<Bn254>, info: &ContractInfo) -> String {
    let n = vk.gamma_abc_g1.len().saturating_sub(1);
    let r = Fr::MODULUS.to_string();
    let q = Fq::MODULUS.to_string();
    let comment = |s: &str| s.replace(['\n', '\r'], " ").replace("*/", "* /");
    let mut s = String::new();
    let w = &mut s;
    // `write!` into a String cannot fail.
    let _ = writeln!(w, "// SPDX-License-Identifier: Apache-2.0");
    let _ = writeln!(w, "// Written by `provnet export solidity`.");
    let _ = writeln!(w, "pragma solidity >=0.7.0 <0.9.0;");
    let _ = writeln!(w);
    let _ = writeln!(w, "/*");
    let _ = writeln!(w, " * Groth16 (BN254) verifier for one provnet segment.");
    let _ = writeln!(
        w,
        " *   model:   {} ({})",
        comment(info.model_name),
        comment(info.model_id)
    );
    let _ = writeln!(w, " *   segment: {}", info.segment);
    let _ = writeln!(w, " *   vk id:   {}", comment(info.vk_id));
    let _ = writeln!(w, " *   public signals ({n}): {}", comment(info.layout));
    let _ = writeln!(w, " *   keys:    {}", comment(info.provenance));
    let _ = writeln!(w, " */");
    let _ = writeln!(w, "contract Groth16Verifier {{");
    let _ = writeln!(w, "    // Scalar field size");
    let _ = writeln!(w, "    uint256 constant r = {r};");
    let _ = writeln!(w, "    // Base field size");
    let _ = writeln!(w, "    uint256 constant q = {q};");
    let _ = writeln!(w);
    let g1 = |w: &mut String, name: &str, p: &G1Affine| {
        let [x, y] = g1_words(p);
        let _ = writeln!(w, "    uint256 constant {name}x = {x};");
        let _ = writeln!(w, "    uint256 constant {name}y = {y};");
    };
    let g2 = |w: &mut String, name: &str, p: &G2Affine| {
        let [x1, x2, y1, y2] = g2_words(p);
        let _ = writeln!(w, "    uint256 constant {name}x1 = {x1};");
        let _ = writeln!(w, "    uint256 constant {name}x2 = {x2};");
        let _ = writeln!(w, "    uint256 constant {name}y1 = {y1};");
        let _ = writeln!(w, "    uint256 constant {name}y2 = {y2};");
    };
    let _ = writeln!(w, "    // Verification key");
    g1(w, "alpha", &vk.alpha_g1);
    g2(w, "beta", &vk.beta_g2);
    g2(w, "gamma", &vk.gamma_g2);
    g2(w, "delta", &vk.delta_g2);
    let _ = writeln!(w);
    for (i, p) in vk.gamma_abc_g1.iter().enumerate() {
        g1(w, &format!("IC{i}"), p);
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "    // Memory: the vk_x accumulator, then the pairing input"
    );
    let _ = writeln!(w, "    uint16 constant pVk = 0;");
    let _ = writeln!(w, "    uint16 constant pPairing = 128;");
    let _ = writeln!(w, "    uint16 constant pLastMem = 896;");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "    function verifyProof(uint[2] calldata _pA, uint[2][2] calldata _pB, \
         uint[2] calldata _pC, uint[{n}] calldata _pubSignals) public view returns (bool) {{"
    );
    let body = r#"        assembly {
            function fail() {
                mstore(0, 0)
                return(0, 0x20)
            }

            function checkField(v) {
                if iszero(lt(v, r)) { fail() }
            }

            // (pR) += s * (x, y)
            function g1_mulAccC(pR, x, y, s) {
                let mIn := mload(0x40)
                mstore(mIn, x)
                mstore(add(mIn, 32), y)
                mstore(add(mIn, 64), s)
                if iszero(staticcall(sub(gas(), 2000), 7, mIn, 96, mIn, 64)) { fail() }
                mstore(add(mIn, 64), mload(pR))
                mstore(add(mIn, 96), mload(add(pR, 32)))
                if iszero(staticcall(sub(gas(), 2000), 6, mIn, 128, pR, 64)) { fail() }
            }

            function checkPairing(pA, pB, pC, pubSignals, pMem) -> isOk {
                let _pPairing := add(pMem, pPairing)
                let _pVk := add(pMem, pVk)

                mstore(_pVk, IC0x)
                mstore(add(_pVk, 32), IC0y)
"#;
    s.push_str(body);
    for i in 1..=n {
        let _ = writeln!(
            s,
            "                g1_mulAccC(_pVk, IC{i}x, IC{i}y, calldataload(add(pubSignals, {})))",
            (i - 1) * 32
        );
    }
    let tail = r#"
                // -A
                mstore(_pPairing, calldataload(pA))
                mstore(add(_pPairing, 32), mod(sub(q, calldataload(add(pA, 32))), q))
                // B
                mstore(add(_pPairing, 64), calldataload(pB))
                mstore(add(_pPairing, 96), calldataload(add(pB, 32)))
                mstore(add(_pPairing, 128), calldataload(add(pB, 64)))
                mstore(add(_pPairing, 160), calldataload(add(pB, 96)))
                // alpha, beta
                mstore(add(_pPairing, 192), alphax)
                mstore(add(_pPairing, 224), alphay)
                mstore(add(_pPairing, 256), betax1)
                mstore(add(_pPairing, 288), betax2)
                mstore(add(_pPairing, 320), betay1)
                mstore(add(_pPairing, 352), betay2)
                // vk_x, gamma
                mstore(add(_pPairing, 384), mload(add(pMem, pVk)))
                mstore(add(_pPairing, 416), mload(add(pMem, add(pVk, 32))))
                mstore(add(_pPairing, 448), gammax1)
                mstore(add(_pPairing, 480), gammax2)
                mstore(add(_pPairing, 512), gammay1)
                mstore(add(_pPairing, 544), gammay2)
                // C, delta
                mstore(add(_pPairing, 576), calldataload(pC))
                mstore(add(_pPairing, 608), calldataload(add(pC, 32)))
                mstore(add(_pPairing, 640), deltax1)
                mstore(add(_pPairing, 672), deltax2)
                mstore(add(_pPairing, 704), deltay1)
                mstore(add(_pPairing, 736), deltay2)

                let success := staticcall(sub(gas(), 2000), 8, _pPairing, 768, _pPairing, 0x20)
                isOk := and(success, mload(_pPairing))
            }

            let pMem := mload(0x40)
            mstore(0x40, add(pMem, pLastMem))

            // Every public signal is a field element
"#;
    s.push_str(tail);
    let _ = writeln!(
        s,
        "            for {{ let i := 0 }} lt(i, {n}) {{ i := add(i, 1) }} {{\n                \
         checkField(calldataload(add(_pubSignals, mul(i, 32))))\n            }}"
    );
    let end = r#"
            let isValid := checkPairing(_pA, _pB, _pC, _pubSignals, pMem)
            mstore(0, isValid)
            return(0, 0x20)
        }
    }
}
"#;
    s.push_str(end);
    s
}

/// The calldata words `verifyProof` takes for a proof, in order (without the selector):
/// A, B (imaginary parts first), C, then the public signals.
pub fn solidity_words(proof: &Proof<Bn254>, inputs: &[Fr]) -> Vec<[u8; 32]> {
    let be = |f: &dyn Fn() -> Vec<u8>| {
        let mut w = [0u8; 32];
        let b = f();
        w[32 - b.len()..].copy_from_slice(&b);
        w
    };
    let fq = |x: Fq| be(&|| x.into_bigint().to_bytes_be());
    let mut out = Vec::with_capacity(8 + inputs.len());
    let (ax, ay) = proof.a.xy().unwrap_or((Fq::zero(), Fq::zero()));
    out.extend([fq(ax), fq(ay)]);
    let zero2 = Fq2::zero();
    let (bx, by) = proof.b.xy().unwrap_or((zero2, zero2));
    out.extend([fq(bx.c1), fq(bx.c0), fq(by.c1), fq(by.c0)]);
    let (cx, cy) = proof.c.xy().unwrap_or((Fq::zero(), Fq::zero()));
    out.extend([fq(cx), fq(cy)]);
    out.extend(inputs.iter().map(|f| be(&|| f.into_bigint().to_bytes_be())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ec::{CurveGroup, PrimeGroup};
    use ark_std::UniformRand;

    #[test]
    fn generators_print_as_snarkjs_prints_them() {
        let g1 = G1Affine::generator();
        assert_eq!(g1_json(&g1), json!(["1", "2", "1"]));
        // snarkjs' bn128 G2 generator, x = [c0, c1].
        let g2 = g2_json(&G2Affine::generator());
        assert_eq!(
            g2[0],
            json!([
                "10857046999023057135944570762232829481370756359578518086990519993285655852781",
                "11559732032986387107991004021392285783925812861821192530917403151452391805634"
            ])
        );
        assert_eq!(g2[2], json!(["1", "0"]));
        assert_eq!(g1_json(&G1Affine::zero()), json!(["0", "1", "0"]));
    }

    #[test]
    fn json_round_trips_and_refuses_junk() {
        let mut rng = ark_std::test_rng();
        let vk = VerifyingKey::<Bn254> {
            alpha_g1: (ark_bn254::G1Projective::generator() * Fr::rand(&mut rng)).into_affine(),
            beta_g2: (ark_bn254::G2Projective::generator() * Fr::rand(&mut rng)).into_affine(),
            gamma_g2: G2Affine::generator(),
            delta_g2: (ark_bn254::G2Projective::generator() * Fr::rand(&mut rng)).into_affine(),
            gamma_abc_g1: vec![
                G1Affine::generator(),
                G1Affine::zero(),
                (ark_bn254::G1Projective::generator() * Fr::rand(&mut rng)).into_affine(),
            ],
        };
        let v = snarkjs_vk(&vk);
        assert_eq!(v["nPublic"], 2);
        assert_eq!(vk_from_snarkjs(&v).unwrap(), vk);
        let inputs = vec![Fr::from(0u8), Fr::from(7u8), -Fr::from(1u8)];
        assert_eq!(
            public_from_snarkjs(&snarkjs_public(&inputs)).unwrap(),
            inputs
        );

        let r = Fr::MODULUS.to_string();
        for junk in [
            json!([r]),
            json!(["-1"]),
            json!(["0x10"]),
            json!(["01"]),
            json!([1]),
        ] {
            assert!(public_from_snarkjs(&junk).is_err(), "{junk}");
        }
        let mut off = v.clone();
        off["vk_alpha_1"][1] = json!("3");
        assert!(vk_from_snarkjs(&off)
            .unwrap_err()
            .to_string()
            .contains("not a point"));
        let mut short = v.clone();
        short["nPublic"] = json!(5);
        assert!(vk_from_snarkjs(&short).is_err());
    }

    #[test]
    fn solidity_takes_g2_imaginary_part_first() {
        let b = G2Affine::generator();
        let proof = Proof::<Bn254> {
            a: G1Affine::generator(),
            b,
            c: G1Affine::generator(),
        };
        let words = solidity_words(&proof, &[Fr::from(5u8)]);
        assert_eq!(words.len(), 9);
        let (x, _) = b.xy().unwrap();
        assert_eq!(words[2].to_vec(), x.c1.into_bigint().to_bytes_be());
        assert_eq!(words[3].to_vec(), x.c0.into_bigint().to_bytes_be());
        assert_eq!(words[8][31], 5);
        let vk = VerifyingKey::<Bn254> {
            alpha_g1: G1Affine::generator(),
            beta_g2: b,
            gamma_g2: b,
            delta_g2: b,
            gamma_abc_g1: vec![G1Affine::generator(); 3],
        };
        let info = ContractInfo {
            model_name: "m */ evil",
            model_id: "00",
            segment: 0,
            vk_id: "11",
            layout: "x",
            provenance: "line\nbreak",
        };
        let sol = solidity(&vk, &info);
        assert!(sol.contains("uint[2] calldata _pubSignals"));
        assert!(sol.contains(&format!("betax1 = {}", dec(&x.c1))));
        assert!(sol.contains("IC2y"));
        assert!(
            !sol.contains("m */ evil"),
            "a header field cannot end the comment"
        );
    }
}
