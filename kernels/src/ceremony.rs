//! Phase 2 of the Groth16 setup, per segment circuit: a multi-party ceremony in which one
//! honest contributor is enough, with snarkjs' semantics (`zkey new`, `zkey contribute`,
//! `zkey beacon`, `zkey verify`) on arkworks' key layout.
//!
//! - **Initial parameters** ([`initial`]) come from the model and a phase-1 `.ptau` file
//!   alone, so anyone can derive them: each variable's A, B (G1 and G2) and
//!   (β A + α B + C) points are combinations of the file's Lagrange bases over the circuit's
//!   domain (arkworks' QAP: one extra row per public variable), the h query is
//!   τ^i (τ^m − 1) = [τ^(i+m)] − [τ^i], and δ = γ = 1. What is fixed from here on (α, β, γ,
//!   the A and B queries, the public-input points) never changes again.
//! - **A contribution** ([`contribute`]) draws x per segment and sets δ ← δ·x, scaling the L
//!   and H queries by x⁻¹. It publishes, per segment, δ after, a random point s, s·x and
//!   r·x where r = hash-to-G2 of the transcript so far, s and s·x: a proof of knowledge of x
//!   bound to everything before it (the circuit hash and every earlier contribution).
//! - **A beacon** ([`beacon`]) is a contribution whose x is derived from a public random
//!   value hashed 2^n times, so anyone can recompute it; it ends the ceremony.
//! - **Verification** ([`verify_step`], [`verify`]) checks each step: the proof of knowledge
//!   (same ratio s : s·x = r : r·x), the δ link (δ_prev : δ_after = r : r·x), δ in G2
//!   against δ in G1, the fixed parameters unchanged, and L and H moved by exactly δ_prev/δ
//!   (one random linear combination of all of them, checked by one pairing equation).
//!
//! One [`Transcript`] file covers every segment of a model: the current parameters and the
//! public keys of every contribution. Its points are read with full checks (on the curve, in
//! the subgroup); a transcript is something anyone may have sent.

use std::path::Path;

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup, VariableBaseMSM};
use ark_ff::{BigInteger, Field, One, PrimeField, UniformRand, Zero};
use ark_groth16::{ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize, Compress, Validate};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::circuit;
use crate::error::{KernelError, Result};
use crate::model::Model;
use crate::ptau::Ptau;
use crate::r1cs::{Mode, Var};

/// The transcript file's first bytes.
const MAGIC: &[u8; 16] = b"provnet-cerem/1\n";
/// Longest contributor name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest beacon value, in bytes.
pub const MAX_BEACON: usize = 64;
/// Most beacon hash iterations: 2^this.
pub const MAX_BEACON_EXP: u32 = 40;
/// Most contributions one transcript may hold.
pub const MAX_CONTRIBUTIONS: usize = 1024;

/// A beacon: a public random value and how many times it is hashed (2^iterations_exp).
#[derive(Clone, Debug, PartialEq, Eq, CanonicalSerialize, CanonicalDeserialize)]
pub struct Beacon {
    pub value: Vec<u8>,
    pub iterations_exp: u32,
}

/// What one contribution publishes for one segment.
#[derive(Clone, Debug, PartialEq, Eq, CanonicalSerialize, CanonicalDeserialize)]
pub struct SegmentPok {
    /// δ in G1 after this contribution.
    pub delta_after: G1Affine,
    /// A random point s and s·x.
    pub s: G1Affine,
    pub s_x: G1Affine,
    /// r·x, where r = hash-to-G2(transcript, segment, s, s·x).
    pub r_x: G2Affine,
}

/// One contribution: who, a beacon if it is one, and its per-segment public keys.
#[derive(Clone, Debug, PartialEq, Eq, CanonicalSerialize, CanonicalDeserialize)]
pub struct Contribution {
    pub name: String,
    pub beacon: Option<Beacon>,
    pub segments: Vec<SegmentPok>,
}

impl Contribution {
    /// The hash a contributor publishes to attest this contribution (over its public keys).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet ceremony contribution v1");
        h.update(&encode(self));
        *h.finalize().as_bytes()
    }
}

/// A model's phase-2 transcript: the current parameters of every segment and every
/// contribution so far.
#[derive(Clone, Debug, PartialEq, CanonicalSerialize, CanonicalDeserialize)]
pub struct Transcript {
    pub model_id: [u8; 32],
    /// Hash of the initial parameters (derived from the model and the ptau).
    pub cs_hash: [u8; 32],
    /// The `.ptau` path given at init: a hint for `finalize`, not trusted.
    pub ptau_hint: String,
    pub segments: Vec<ProvingKey<Bn254>>,
    pub contributions: Vec<Contribution>,
}

fn encode<T: CanonicalSerialize>(t: &T) -> Vec<u8> {
    let mut out = Vec::new();
    t.serialize_uncompressed(&mut out)
        .expect("serializing to memory cannot fail");
    out
}

fn fail(reason: impl Into<String>) -> KernelError {
    KernelError::Ceremony(reason.into())
}

/// `magic`, then `t` serialized uncompressed.
fn framed<T: CanonicalSerialize>(magic: &[u8; 16], t: &T) -> Vec<u8> {
    let mut out = magic.to_vec();
    t.serialize_uncompressed(&mut out)
        .expect("serializing to memory cannot fail");
    out
}

/// Reads what [`framed`] wrote, checking every point (on the curve, in the subgroup) and
/// refusing another magic or bytes after the end.
fn unframe<T: CanonicalDeserialize>(magic: &[u8; 16], what: &str, bytes: &[u8]) -> Result<T> {
    let mut reader = bytes
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| fail(format!("not a provnet ceremony {what} (bad magic)")))?;
    let t = T::deserialize_with_mode(&mut reader, Compress::No, Validate::Yes)
        .map_err(|e| fail(format!("malformed {what}: {e}")))?;
    if !reader.is_empty() {
        return Err(fail(format!(
            "malformed {what}: {} bytes after its end",
            reader.len()
        )));
    }
    Ok(t)
}

impl Transcript {
    /// The hash every next contribution's proofs of knowledge are bound to.
    pub fn challenge(&self) -> [u8; 32] {
        *chain(&self.cs_hash, &self.contributions)
            .finalize()
            .as_bytes()
    }

    /// The whole file's hash (what the key index records).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::Hasher::new()
            .update_rayon(&self.to_bytes())
            .finalize()
            .as_bytes()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        framed(MAGIC, self)
    }

    /// Parses a transcript, checking every point (on the curve, in the subgroup) and the
    /// bounds on names, beacons and counts.
    pub fn from_bytes(bytes: &[u8]) -> Result<Transcript> {
        let t: Transcript = unframe(MAGIC, "transcript", bytes)?;
        if t.contributions.len() > MAX_CONTRIBUTIONS {
            return Err(fail(format!(
                "{} contributions, more than the {MAX_CONTRIBUTIONS} allowed",
                t.contributions.len()
            )));
        }
        for (j, c) in t.contributions.iter().enumerate() {
            if c.name.len() > MAX_NAME {
                return Err(fail(format!(
                    "contribution {j}: name over {MAX_NAME} bytes"
                )));
            }
            if let Some(b) = &c.beacon {
                if b.value.len() > MAX_BEACON || b.iterations_exp > MAX_BEACON_EXP {
                    return Err(fail(format!(
                        "contribution {j}: beacon over {MAX_BEACON} bytes or 2^{MAX_BEACON_EXP} \
                         iterations"
                    )));
                }
            }
            if c.segments.len() != t.segments.len() {
                return Err(fail(format!(
                    "contribution {j} covers {} segments, the transcript {}",
                    c.segments.len(),
                    t.segments.len()
                )));
            }
        }
        Ok(t)
    }

    pub fn read(path: &Path) -> Result<Transcript> {
        let bytes = std::fs::read(path).map_err(|e| KernelError::io(path, e))?;
        Transcript::from_bytes(&bytes).map_err(|e| match e {
            KernelError::Ceremony(r) => fail(format!("{}: {r}", path.display())),
            other => other,
        })
    }

    /// Writes atomically (a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("transcript"),
            std::process::id()
        ));
        std::fs::write(&tmp, self.to_bytes()).map_err(|e| KernelError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            KernelError::io(path, e)
        })
    }

    /// The last contribution's beacon, if the ceremony ended with one.
    pub fn final_beacon(&self) -> Option<&Beacon> {
        self.contributions.last().and_then(|c| c.beacon.as_ref())
    }
}

/// The first bytes of a [`Step`].
const STEP_MAGIC: &[u8; 16] = b"provnet-cstep/1\n";

/// What one contribution changes, for sending over a network: its public keys and, per
/// segment, the new δ in G2 and the moved L and H queries. Everything else (α, β, γ, the A
/// and B queries, the public-input points) the receiver already holds, and the new δ in
/// G1 is the contribution's δ after. About half a transcript.
#[derive(Clone, Debug, PartialEq, CanonicalSerialize, CanonicalDeserialize)]
pub struct Step {
    pub contribution: Contribution,
    pub segments: Vec<StepSegment>,
}

/// One segment's part of a [`Step`].
#[derive(Clone, Debug, PartialEq, CanonicalSerialize, CanonicalDeserialize)]
pub struct StepSegment {
    pub delta_g2: G2Affine,
    pub l_query: Vec<G1Affine>,
    pub h_query: Vec<G1Affine>,
}

impl Step {
    pub fn to_bytes(&self) -> Vec<u8> {
        framed(STEP_MAGIC, self)
    }

    /// Parses a step, checking every point. Lengths are checked against the transcript it
    /// extends by [`Transcript::apply`], before anything is built from it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Step> {
        let step: Step = unframe(STEP_MAGIC, "step", bytes)?;
        if step.contribution.name.len() > MAX_NAME {
            return Err(fail(format!("a step's name is over {MAX_NAME} bytes")));
        }
        if step.contribution.beacon.is_some() {
            return Err(fail(
                "a step may not be a beacon: every node applies the beacon itself",
            ));
        }
        Ok(step)
    }
}

impl Transcript {
    /// The state's identity for a network ceremony: the running hash of the circuit hash
    /// and every contribution, which (with verified steps) fixes every parameter. Unlike
    /// [`Transcript::hash`] it leaves out the local `.ptau` path.
    pub fn state_id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet ceremony state v1");
        h.update(&self.model_id);
        h.update(&self.challenge());
        *h.finalize().as_bytes()
    }

    /// The last contribution as a [`Step`] (`None` before any).
    pub fn last_step(&self) -> Option<Step> {
        let contribution = self.contributions.last()?.clone();
        let segments = self
            .segments
            .iter()
            .map(|pk| StepSegment {
                delta_g2: pk.vk.delta_g2,
                l_query: pk.l_query.clone(),
                h_query: pk.h_query.clone(),
            })
            .collect();
        Some(Step {
            contribution,
            segments,
        })
    }

    /// This transcript plus `step`, unverified: check the result with [`verify_step`].
    /// Refuses a step whose shape does not fit this transcript.
    pub fn apply(&self, step: &Step) -> Result<Transcript> {
        let n = self.segments.len();
        if step.segments.len() != n || step.contribution.segments.len() != n {
            return Err(fail(format!(
                "the step covers {} segments, the transcript {n}",
                step.segments.len()
            )));
        }
        for (k, (pk, s)) in self.segments.iter().zip(&step.segments).enumerate() {
            if s.l_query.len() != pk.l_query.len() || s.h_query.len() != pk.h_query.len() {
                return Err(fail(format!(
                    "segment {k}: the step's L or H query has the wrong length"
                )));
            }
        }
        if self.contributions.len() >= MAX_CONTRIBUTIONS {
            return Err(fail(format!(
                "the transcript already holds {MAX_CONTRIBUTIONS} contributions"
            )));
        }
        let mut next = self.clone();
        for (k, (pk, s)) in next.segments.iter_mut().zip(&step.segments).enumerate() {
            pk.delta_g1 = step.contribution.segments[k].delta_after;
            pk.vk.delta_g2 = s.delta_g2;
            pk.l_query.clone_from(&s.l_query);
            pk.h_query.clone_from(&s.h_query);
        }
        next.contributions.push(step.contribution.clone());
        Ok(next)
    }

    /// `step`'s bytes applied to this transcript and verified ([`verify_step`]).
    pub fn accept(&self, step_bytes: &[u8]) -> Result<(Transcript, Verified)> {
        let step = Step::from_bytes(step_bytes)?;
        let next = self.apply(&step)?;
        let verified = verify_step(self, &next)?;
        Ok((next, verified))
    }
}

/// The running transcript hash: the circuit hash, then each contribution as it is added.
/// Its value after contribution j-1 is the challenge contribution j is bound to.
fn chain(cs_hash: &[u8; 32], before: &[Contribution]) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"provnet ceremony transcript v1");
    h.update(cs_hash);
    for c in before {
        h.update(&encode(c));
    }
    h
}

/// A point of G2 nobody knows the discrete log of, from a hash (a random x-coordinate on
/// the curve, cofactor cleared).
fn hash_to_g2(parts: &[&[u8]]) -> G2Affine {
    let mut h = blake3::Hasher::new();
    h.update(b"provnet ceremony hash-to-g2 v1");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    G2Projective::rand(&mut ChaCha20Rng::from_seed(*h.finalize().as_bytes())).into_affine()
}

fn pok_base(challenge: &[u8; 32], segment: usize, s: &G1Affine, s_x: &G1Affine) -> G2Affine {
    hash_to_g2(&[
        challenge,
        &(segment as u64).to_le_bytes(),
        &encode(s),
        &encode(s_x),
    ])
}

/// e(a1, b2) == e(b1, a2): the ratio a1 : b1 in G1 is the ratio a2 : b2 in G2.
fn same_ratio(a1: G1Affine, b1: G1Affine, a2: G2Affine, b2: G2Affine) -> bool {
    Bn254::multi_pairing([a1, -b1], [b2, a2]).is_zero()
}

/// c·p for a small coefficient (positive or negative): cost follows its bit length.
fn mul_small<A: AffineRepr<ScalarField = Fr>>(p: &A, c: &Fr) -> A::Group {
    let (pos, neg) = (c.into_bigint(), (-*c).into_bigint());
    if neg.num_bits() < pos.num_bits() {
        -p.mul_bigint(neg)
    } else {
        p.mul_bigint(pos)
    }
}

/// Σ c_j · bases[j] over a variable's terms.
fn combine<A: AffineRepr<ScalarField = Fr>>(bases: &[A], terms: &[(u32, Fr)]) -> A::Group
where
    A::Group: VariableBaseMSM<MulBase = A>,
{
    if terms.len() > 16 {
        let points: Vec<A> = terms.iter().map(|(j, _)| bases[*j as usize]).collect();
        let scalars: Vec<Fr> = terms.iter().map(|(_, c)| *c).collect();
        return A::Group::msm(&points, &scalars).expect("equal lengths");
    }
    terms
        .iter()
        .map(|(j, c)| mul_small(&bases[*j as usize], c))
        .sum()
}

/// A variable's A, B (G1), B (G2) and β A + α B + C points.
type VarPoints = (G1Projective, G1Projective, G2Projective, G1Projective);

/// A segment's initial phase-2 parameters (δ = γ = 1) from the ptau's Lagrange bases.
fn initial_segment(seg: &crate::model::Segment, ptau: &mut Ptau) -> Result<ProvingKey<Bn254>> {
    let cs = circuit::synthesize(seg, Mode::Setup, Default::default(), None);
    let (n_c, n_inst) = (cs.num_constraints(), cs.num_instance());
    let n_i = 1 + n_inst;
    let n_vars = n_i + cs.num_witness();
    let m = (n_c + n_i).next_power_of_two();
    ptau.require_domain(m)?;
    let k = m.trailing_zeros();
    let l1 = ptau.lagrange_g1(k)?;
    if l1.iter().map(|p| p.into_group()).sum::<G1Projective>() != G1Projective::generator() {
        return Err(fail(
            "the ptau's Lagrange bases do not sum to the standard generator",
        ));
    }
    let l2 = ptau.lagrange_g2(k)?;
    let al1 = ptau.lagrange_alpha_g1(k)?;
    let bl1 = ptau.lagrange_beta_g1(k)?;
    let tau = ptau.tau_g1(2 * m - 1)?;
    let alpha_g1 = ptau.alpha_tau_g1(1)?[0];
    let beta_g1 = ptau.beta_tau_g1(1)?[0];
    let beta_g2 = ptau.beta_g2()?;
    // Columns of A, B, C: each variable's (row, coefficient) terms.
    let index = |v: &Var| match v {
        Var::One => 0,
        Var::Instance(i) => 1 + *i as usize,
        Var::Witness(i) => n_i + *i as usize,
    };
    let mut cols: [Vec<Vec<(u32, Fr)>>; 3] = std::array::from_fn(|_| vec![Vec::new(); n_vars]);
    for (row, abc) in cs.constraints.iter().enumerate() {
        for (col, terms) in cols.iter_mut().zip(abc) {
            for (v, c) in terms {
                col[index(v)].push((row as u32, *c));
            }
        }
    }
    // arkworks' reduction: one row per public variable, A = that variable.
    for (i, col) in cols[0].iter_mut().enumerate().take(n_i) {
        col.push(((n_c + i) as u32, Fr::one()));
    }
    let [a_cols, b_cols, c_cols] = &cols;
    let per_var: Vec<VarPoints> = (0..n_vars)
        .into_par_iter()
        .map(|i| {
            let a = combine(&l1, &a_cols[i]);
            let b1 = combine(&l1, &b_cols[i]);
            let b2 = combine(&l2, &b_cols[i]);
            let k =
                combine(&bl1, &a_cols[i]) + combine(&al1, &b_cols[i]) + combine(&l1, &c_cols[i]);
            (a, b1, b2, k)
        })
        .collect();
    let normalize1 = |f: &dyn Fn(&VarPoints) -> G1Projective| {
        G1Projective::normalize_batch(&per_var.iter().map(f).collect::<Vec<_>>())
    };
    let a_query = normalize1(&|v| v.0);
    let b_g1_query = normalize1(&|v| v.1);
    let mut k_query = normalize1(&|v| v.3);
    let b_g2_query =
        G2Projective::normalize_batch(&per_var.iter().map(|v| v.2).collect::<Vec<_>>());
    let l_query = k_query.split_off(n_i);
    let h: Vec<G1Projective> = (0..m - 1)
        .into_par_iter()
        .map(|i| tau[i + m].into_group() - tau[i])
        .collect();
    let (g1, g2) = (G1Affine::generator(), G2Affine::generator());
    Ok(ProvingKey {
        vk: VerifyingKey {
            alpha_g1,
            beta_g2,
            gamma_g2: g2,
            delta_g2: g2,
            gamma_abc_g1: k_query,
        },
        beta_g1,
        delta_g1: g1,
        a_query,
        b_g1_query,
        b_g2_query,
        h_query: G1Projective::normalize_batch(&h),
        l_query,
    })
}

fn cs_hash(model_id: &[u8; 32], segments: &[ProvingKey<Bn254>]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"provnet ceremony circuit v1");
    h.update(model_id);
    for pk in segments {
        h.update_rayon(&encode(pk));
    }
    *h.finalize().as_bytes()
}

/// The ceremony's starting point for a model: derived from the model and the ptau only.
pub fn initial(model: &Model, ptau: &mut Ptau, ptau_hint: &str) -> Result<Transcript> {
    let segments = model
        .segments
        .iter()
        .map(|seg| {
            initial_segment(seg, ptau).map_err(|e| match e {
                KernelError::Ceremony(r) => fail(format!("segment {}: {r}", seg.index)),
                other => other,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let model_id = model.id();
    Ok(Transcript {
        model_id,
        cs_hash: cs_hash(&model_id, &segments),
        ptau_hint: ptau_hint.to_string(),
        segments,
        contributions: Vec::new(),
    })
}

/// Applies x to one segment's parameters; returns its public key.
fn apply(
    pk: &mut ProvingKey<Bn254>,
    challenge: &[u8; 32],
    segment: usize,
    x: Fr,
    s: G1Affine,
) -> SegmentPok {
    let x_inv = x.inverse().expect("x is not zero");
    let scale = |points: &mut Vec<G1Affine>| {
        let moved: Vec<G1Projective> = points.par_iter().map(|p| *p * x_inv).collect();
        *points = G1Projective::normalize_batch(&moved);
    };
    scale(&mut pk.l_query);
    scale(&mut pk.h_query);
    pk.delta_g1 = (pk.delta_g1 * x).into_affine();
    pk.vk.delta_g2 = (pk.vk.delta_g2 * x).into_affine();
    let s_x = (s * x).into_affine();
    let r = pok_base(challenge, segment, &s, &s_x);
    SegmentPok {
        delta_after: pk.delta_g1,
        s,
        s_x,
        r_x: (r * x).into_affine(),
    }
}

/// A nonzero scalar and a nonzero point from a randomness source.
fn draw(rng: &mut ChaCha20Rng) -> (Fr, G1Affine) {
    loop {
        let x = Fr::rand(rng);
        let s = G1Projective::rand(rng).into_affine();
        if !x.is_zero() && !s.is_zero() {
            return (x, s);
        }
    }
}

/// `t` plus one contribution drawn, per segment, from `rngs`.
fn extend(
    t: &Transcript,
    name: &str,
    beacon: Option<Beacon>,
    mut rngs: Vec<ChaCha20Rng>,
) -> Result<Transcript> {
    if name.len() > MAX_NAME {
        return Err(fail(format!(
            "a contributor name is at most {MAX_NAME} bytes"
        )));
    }
    if t.contributions.len() >= MAX_CONTRIBUTIONS {
        return Err(fail(format!(
            "the transcript already holds {MAX_CONTRIBUTIONS} contributions"
        )));
    }
    if t.final_beacon().is_some() {
        return Err(fail(
            "the ceremony ended with a beacon: nothing may follow it",
        ));
    }
    let challenge = t.challenge();
    let mut next = t.clone();
    let segments = next
        .segments
        .iter_mut()
        .zip(&mut rngs)
        .enumerate()
        .map(|(k, (pk, rng))| {
            let (x, s) = draw(rng);
            apply(pk, &challenge, k, x, s)
        })
        .collect();
    next.contributions.push(Contribution {
        name: name.to_string(),
        beacon,
        segments,
    });
    Ok(next)
}

/// Adds a contribution drawn from the operating system's randomness mixed with `entropy`.
/// The randomness lives only in this call: nothing of it is kept.
pub fn contribute(t: &Transcript, name: &str, entropy: &[u8]) -> Result<Transcript> {
    let mut os = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut os);
    let mut h = blake3::Hasher::new();
    h.update(b"provnet ceremony entropy v1");
    h.update(&os);
    h.update(entropy);
    let mut rng = ChaCha20Rng::from_seed(*h.finalize().as_bytes());
    let rngs = t
        .segments
        .iter()
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            ChaCha20Rng::from_seed(seed)
        })
        .collect();
    extend(t, name, None, rngs)
}

/// The beacon's per-segment randomness: the value hashed 2^exp times, then per segment.
fn beacon_rngs(b: &Beacon, segments: usize) -> Vec<ChaCha20Rng> {
    let mut h = *blake3::hash(&b.value).as_bytes();
    for _ in 0..(1u64 << b.iterations_exp) {
        h = *blake3::hash(&h).as_bytes();
    }
    (0..segments)
        .map(|k| {
            let mut s = blake3::Hasher::new();
            s.update(b"provnet ceremony beacon v1");
            s.update(&h);
            s.update(&(k as u64).to_le_bytes());
            ChaCha20Rng::from_seed(*s.finalize().as_bytes())
        })
        .collect()
}

/// Ends the ceremony with a public random value (e.g. a future block hash), hashed
/// 2^iterations_exp times: anyone can recompute this last step.
pub fn beacon(t: &Transcript, value: &[u8], iterations_exp: u32) -> Result<Transcript> {
    if value.is_empty() || value.len() > MAX_BEACON {
        return Err(fail(format!("a beacon value is 1 to {MAX_BEACON} bytes")));
    }
    if iterations_exp > MAX_BEACON_EXP {
        return Err(fail(format!(
            "at most 2^{MAX_BEACON_EXP} beacon iterations"
        )));
    }
    let b = Beacon {
        value: value.to_vec(),
        iterations_exp,
    };
    let rngs = beacon_rngs(&b, t.segments.len());
    extend(t, "beacon", Some(b), rngs)
}

/// Checks contribution `j` of `t` given the challenge it is bound to and δ before it, per
/// segment.
fn check_contribution(
    t: &Transcript,
    j: usize,
    challenge: &[u8; 32],
    before: &[G1Affine],
) -> Result<()> {
    let c = &t.contributions[j];
    let who = format!("contribution {j} ({:?})", c.name);
    let expected = c.beacon.as_ref().map(|b| beacon_rngs(b, t.segments.len()));
    c.segments.par_iter().enumerate().try_for_each(|(k, p)| {
        let bad = |r: &str| fail(format!("{who}, segment {k}: {r}"));
        if p.delta_after.is_zero() || p.s.is_zero() || p.s_x.is_zero() || p.r_x.is_zero() {
            return Err(bad("a point at infinity in its public key"));
        }
        let r = pok_base(challenge, k, &p.s, &p.s_x);
        if !same_ratio(p.s, p.s_x, r, p.r_x) {
            return Err(bad("its proof of knowledge does not verify"));
        }
        if !same_ratio(before[k], p.delta_after, r, p.r_x) {
            return Err(bad(
                "δ after is not δ before times its proven x (broken δ link)",
            ));
        }
        if let Some(rngs) = &expected {
            let (x, s) = draw(&mut rngs[k].clone());
            if p.s != s || p.delta_after != (before[k] * x).into_affine() {
                return Err(bad("not the contribution its beacon determines"));
            }
        }
        Ok(())
    })
}

/// Checks that `next` keeps `base`'s fixed parameters and moved L and H by exactly
/// δ_base / δ_next (one random linear combination, one pairing equation).
fn check_moved(k: usize, base: &ProvingKey<Bn254>, next: &ProvingKey<Bn254>) -> Result<()> {
    let bad = |r: String| fail(format!("segment {k}: {r}"));
    let fixed: [(&str, bool); 8] = [
        ("alpha_g1", base.vk.alpha_g1 == next.vk.alpha_g1),
        ("beta_g2", base.vk.beta_g2 == next.vk.beta_g2),
        ("gamma_g2", base.vk.gamma_g2 == next.vk.gamma_g2),
        ("beta_g1", base.beta_g1 == next.beta_g1),
        (
            "the public-input points (IC)",
            base.vk.gamma_abc_g1 == next.vk.gamma_abc_g1,
        ),
        ("the A query", base.a_query == next.a_query),
        ("the B query in G1", base.b_g1_query == next.b_g1_query),
        ("the B query in G2", base.b_g2_query == next.b_g2_query),
    ];
    if let Some((what, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(bad(format!(
            "{what} changed: a contribution may only move δ, L and H"
        )));
    }
    if base.l_query.len() != next.l_query.len() || base.h_query.len() != next.h_query.len() {
        return Err(bad("the L or H query changed length".into()));
    }
    if next.delta_g1.is_zero() {
        return Err(bad("δ is the point at infinity".into()));
    }
    if !same_ratio(
        G1Affine::generator(),
        next.delta_g1,
        G2Affine::generator(),
        next.vk.delta_g2,
    ) {
        return Err(bad("δ in G2 does not match δ in G1".into()));
    }
    // Σ r_i L_next,i · δ_next = Σ r_i L_base,i · δ_base, with r drawn here (128 bits each).
    let mut rng = ChaCha20Rng::from_rng(rand::rngs::OsRng).expect("os randomness");
    let r: Vec<Fr> = (0..base.l_query.len() + base.h_query.len())
        .map(|_| Fr::from(rng.next_u64() as u128 | ((rng.next_u64() as u128) << 64)))
        .collect();
    let rlc = |pk: &ProvingKey<Bn254>| {
        let points: Vec<G1Affine> = pk.l_query.iter().chain(&pk.h_query).copied().collect();
        G1Projective::msm(&points, &r)
            .expect("equal lengths")
            .into_affine()
    };
    let (b, n) = rayon::join(|| rlc(base), || rlc(next));
    if !same_ratio(b, n, next.vk.delta_g2, base.vk.delta_g2) {
        return Err(bad(
            "the L or H query was not moved by the contribution's x (a tampered point)".into(),
        ));
    }
    Ok(())
}

/// What a verification found.
#[derive(Clone, Debug)]
pub struct Verified {
    pub contributions: Vec<(String, [u8; 32])>,
    pub beacon: bool,
    pub vk_ids: Vec<[u8; 32]>,
}

fn report(t: &Transcript) -> Verified {
    Verified {
        contributions: t
            .contributions
            .iter()
            .map(|c| (c.name.clone(), c.hash()))
            .collect(),
        beacon: t.final_beacon().is_some(),
        vk_ids: t
            .segments
            .iter()
            .map(crate::keys::ModelKeys::embedded_vk_id)
            .collect(),
    }
}

/// Checks one step: `next` is `prev` plus one valid contribution, with nothing else changed.
pub fn verify_step(prev: &Transcript, next: &Transcript) -> Result<Verified> {
    if (prev.model_id, prev.cs_hash, &prev.ptau_hint)
        != (next.model_id, next.cs_hash, &next.ptau_hint)
        || prev.segments.len() != next.segments.len()
    {
        return Err(fail("not a transcript of the same ceremony"));
    }
    if next.contributions.len() != prev.contributions.len() + 1
        || next.contributions[..prev.contributions.len()] != prev.contributions[..]
    {
        return Err(fail("not the previous transcript plus one contribution"));
    }
    if prev.final_beacon().is_some() {
        return Err(fail("the previous transcript ended with a beacon"));
    }
    let j = prev.contributions.len();
    let before: Vec<G1Affine> = prev.segments.iter().map(|pk| pk.delta_g1).collect();
    check_contribution(next, j, &prev.challenge(), &before)?;
    for (k, (p, n)) in prev.segments.iter().zip(&next.segments).enumerate() {
        if n.delta_g1 != next.contributions[j].segments[k].delta_after {
            return Err(fail(format!(
                "segment {k}: δ is not the contribution's δ after"
            )));
        }
        check_moved(k, p, n)?;
    }
    Ok(report(next))
}

/// Verifies a transcript from scratch against the initial parameters (from [`initial`]):
/// the circuit hash, every contribution in order, and the current parameters.
pub fn verify(initial: &Transcript, t: &Transcript) -> Result<Verified> {
    if t.model_id != initial.model_id {
        return Err(fail("the transcript is for another model"));
    }
    if t.cs_hash != initial.cs_hash || t.segments.len() != initial.segments.len() {
        return Err(fail(
            "the transcript's circuit hash is not this model's with this ptau: it started from \
             other parameters",
        ));
    }
    let mut delta: Vec<G1Affine> = vec![G1Affine::generator(); t.segments.len()];
    let mut chain = chain(&t.cs_hash, &[]);
    for j in 0..t.contributions.len() {
        if j + 1 < t.contributions.len() && t.contributions[j].beacon.is_some() {
            return Err(fail(format!(
                "contribution {j} is a beacon but not the last"
            )));
        }
        check_contribution(t, j, chain.finalize().as_bytes(), &delta)?;
        chain.update(&encode(&t.contributions[j]));
        delta = t.contributions[j]
            .segments
            .iter()
            .map(|p| p.delta_after)
            .collect();
    }
    for (k, (base, pk)) in initial.segments.iter().zip(&t.segments).enumerate() {
        if pk.delta_g1 != delta[k] {
            return Err(fail(format!(
                "segment {k}: δ is not the last contribution's δ after"
            )));
        }
        check_moved(k, base, pk)?;
    }
    Ok(report(t))
}
