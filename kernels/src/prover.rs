//! Groth16 proving over a pluggable backend.
//!
//! [`ProverBackend`] is the seam where the heavy work happens: the multi-scalar
//! multiplications (G1 and G2) and the FFTs that compute the quotient polynomial h. The CPU
//! backend uses arkworks (rayon-parallel); a CUDA backend plugs in behind the same trait.
//! The protocol around it (assembling A, B, C from the proving key) lives here once.

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::CurveGroup;
use ark_ff::{Field, UniformRand, Zero};
use ark_groth16::{Proof, ProvingKey};
use ark_std::rand::{CryptoRng, RngCore};

use crate::error::{KernelError, Result};
use crate::keys::SegmentKey;
use crate::msm::FixedBaseTable;
use crate::r1cs::R1cs;
use crate::raw::{Points, RawPoint};

/// The operations a proving backend accelerates.
pub trait ProverBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// sum_i scalars[i] * bases[i] in G1 (lengths equal).
    fn msm_g1(&self, bases: &[G1Affine], scalars: &[Fr]) -> Result<G1Projective>;
    /// sum_i scalars[i] * bases[i] in G2 (lengths equal).
    fn msm_g2(&self, bases: &[G2Affine], scalars: &[Fr]) -> Result<G2Projective>;
    /// sum_i scalars[i] * bases[i] over bases precomputed into a window table.
    fn msm_g1_fixed(&self, table: &FixedBaseTable, scalars: &[Fr]) -> Result<G1Projective> {
        table.msm(scalars)
    }
    /// Given the evaluations of A·z, B·z and C·z over a power-of-two domain, returns the
    /// coefficients of h = (A·B - C) / Z_H (length = domain size; the last is zero).
    fn quotient(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>>;

    // Batches: several proofs for one proving key at once. A GPU runs each as one pass over
    // the bases it keeps resident; the defaults do them one by one.

    /// [`ProverBackend::msm_g1`] for each scalar vector, against the same bases (in memory
    /// or in a mapped key file: the default decodes raw bases into a vector first).
    fn msm_g1_many(
        &self,
        bases: Points<'_, G1Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G1Projective>> {
        bases.with_slice(|b| sets.iter().map(|s| self.msm_g1(b, s)).collect())
    }
    /// [`ProverBackend::msm_g2`] for each scalar vector, against the same bases.
    fn msm_g2_many(
        &self,
        bases: Points<'_, G2Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G2Projective>> {
        bases.with_slice(|b| sets.iter().map(|s| self.msm_g2(b, s)).collect())
    }
    /// [`ProverBackend::msm_g1_fixed`] for each scalar vector.
    fn msm_g1_fixed_many(
        &self,
        table: &FixedBaseTable,
        sets: &[&[Fr]],
    ) -> Result<Vec<G1Projective>> {
        sets.iter().map(|s| self.msm_g1_fixed(table, s)).collect()
    }
}

/// arkworks on the CPU, parallel over rayon's pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl ProverBackend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn msm_g1(&self, bases: &[G1Affine], scalars: &[Fr]) -> Result<G1Projective> {
        self.witness_one(Points::Slice(bases), scalars)
    }

    fn msm_g2(&self, bases: &[G2Affine], scalars: &[Fr]) -> Result<G2Projective> {
        self.witness_one(Points::Slice(bases), scalars)
    }

    fn msm_g1_many(
        &self,
        bases: Points<'_, G1Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G1Projective>> {
        self.witness_many(bases, sets)
    }

    fn msm_g2_many(
        &self,
        bases: Points<'_, G2Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G2Projective>> {
        self.witness_many(bases, sets)
    }

    fn quotient(&self, mut a: Vec<Fr>, mut b: Vec<Fr>, mut c: Vec<Fr>) -> Result<Vec<Fr>> {
        let n = a.len();
        let domain = crate::fft::Domain::cached(n)
            .filter(|_| b.len() == n && c.len() == n)
            .ok_or_else(|| KernelError::Backend {
                backend: self.name().into(),
                reason: format!("no FFT domain of size {n}"),
            })?;
        // Interpolate on H and evaluate on the coset g·H, where Z_H is a non-zero constant
        // (the coset evaluations come back in bit-reversed order, the same for all three).
        rayon::join(
            || domain.evals_to_coset(&mut a),
            || {
                rayon::join(
                    || domain.evals_to_coset(&mut b),
                    || domain.evals_to_coset(&mut c),
                )
            },
        );
        let z_inv = domain
            .coset_vanishing()
            .inverse()
            .expect("Z_H is non-zero off the subgroup");
        use rayon::prelude::*;
        a.par_iter_mut()
            .zip(b.par_iter())
            .zip(c.par_iter())
            .with_min_len(1 << 12)
            .for_each(|((a, b), c)| *a = (*a * b - c) * z_inv);
        domain.coset_to_coeffs(&mut a);
        Ok(a)
    }
}

impl CpuBackend {
    /// The witness MSM ([`crate::witness_msm`]) of each scalar vector, over bases wherever
    /// they lie.
    fn witness_many<P>(
        &self,
        bases: Points<'_, Affine<P>>,
        sets: &[&[Fr]],
    ) -> Result<Vec<Projective<P>>>
    where
        P: SWCurveConfig<ScalarField = Fr>,
        Affine<P>: RawPoint,
    {
        sets.iter().map(|s| self.witness_one(bases, s)).collect()
    }

    fn witness_one<P>(&self, bases: Points<'_, Affine<P>>, scalars: &[Fr]) -> Result<Projective<P>>
    where
        P: SWCurveConfig<ScalarField = Fr>,
        Affine<P>: RawPoint,
    {
        self.same_len(bases.len(), scalars.len())?;
        Ok(crate::witness_msm::msm(scalars, |i| bases.get(i)))
    }

    fn same_len(&self, bases: usize, scalars: usize) -> Result<()> {
        if bases == scalars {
            return Ok(());
        }
        Err(KernelError::Backend {
            backend: self.name().into(),
            reason: format!("MSM over {bases} bases got {scalars} scalars"),
        })
    }
}

/// Proves a satisfied circuit (built in `Prove` or `Check` mode) with `pk`.
pub fn prove<R: RngCore + CryptoRng>(
    backend: &dyn ProverBackend,
    key: &SegmentKey,
    cs: &R1cs,
    rng: &mut R,
) -> Result<Proof<Bn254>> {
    let mut v = prove_many(backend, key, &[cs], rng)?;
    Ok(v.pop().expect("one proof per circuit"))
}

/// One circuit's assignment and the evaluations of A·z, B·z, C·z over the FFT domain.
struct Prepared {
    z: Vec<Fr>,
    abc: [Vec<Fr>; 3],
}

fn prepare(key: &SegmentKey, cs: &R1cs) -> Result<Prepared> {
    let pk: &ProvingKey<Bn254> = &key.pk;
    if let Some(err) = cs.first_unsatisfied() {
        return Err(err);
    }
    let z = cs.full_assignment();
    let (n_c, n_i) = (cs.num_constraints(), 1 + cs.num_instance());
    let size = (n_c + n_i).next_power_of_two();
    let shape_ok = key.a_query().len() == z.len()
        && key.b_g2_query().len() == z.len()
        && key.b_g1_query().len() == z.len()
        && key.l_query().len() == cs.num_witness()
        && key.h_table.bases + 1 == size;
    if !shape_ok || pk.vk.gamma_abc_g1.len() != n_i {
        return Err(KernelError::BadKeys {
            segment: usize::MAX,
            reason: "the proving key does not match this circuit: run `provnet model setup`".into(),
        });
    }
    // One column per task (each touches its own fresh pages), zero-padded to the domain.
    let column = |k: usize| {
        let mut v = Vec::with_capacity(size);
        v.extend(cs.abc.iter().map(|row| row[k]));
        v.resize(size, Fr::zero());
        v
    };
    let (mut a, (b, c)) = rayon::join(|| column(0), || rayon::join(|| column(1), || column(2)));
    // arkworks' reduction adds one row per public variable (A = z_i, B = C = 0).
    a[n_c..n_c + n_i].copy_from_slice(&z[..n_i]);
    Ok(Prepared { z, abc: [a, b, c] })
}

/// Proves several satisfied circuits of the same shape with one key. Each proof draws its
/// own randomness; the backend sees every MSM as one batch over the key's bases.
pub fn prove_many<R: RngCore + CryptoRng>(
    backend: &dyn ProverBackend,
    key: &SegmentKey,
    circuits: &[&R1cs],
    rng: &mut R,
) -> Result<Vec<Proof<Bn254>>> {
    let pk: &ProvingKey<Bn254> = &key.pk;
    let vk = &pk.vk;
    let n_i = vk.gamma_abc_g1.len();
    let started = std::time::Instant::now();
    let prepared = circuits
        .iter()
        .map(|cs| prepare(key, cs))
        .collect::<Result<Vec<_>>>()?;
    let size = prepared.first().map_or(0, |p| p.abc[0].len());
    let (zs, abcs): (Vec<Vec<Fr>>, Vec<[Vec<Fr>; 3]>) =
        prepared.into_iter().map(|p| (p.z, p.abc)).unzip();
    let z_refs: Vec<&[Fr]> = zs.iter().map(|z| z.as_slice()).collect();
    let w_refs: Vec<&[Fr]> = zs.iter().map(|z| &z[n_i..]).collect();
    // The witness MSMs do not depend on h: run them beside the FFTs so both cores stay busy.
    let prepare_ms = ms(started);
    let joined = std::time::Instant::now();
    let ((hs, quotient_ms), (msms, witness_msm_ms)) = rayon::join(
        || {
            timed(|| {
                abcs.into_iter()
                    .map(|[a, b, c]| backend.quotient(a, b, c))
                    .collect::<Result<Vec<Vec<Fr>>>>()
            })
        },
        || {
            timed(|| -> Result<_> {
                Ok((
                    backend.msm_g1_many(key.a_query(), &z_refs)?,
                    backend.msm_g1_many(key.b_g1_query(), &z_refs)?,
                    backend.msm_g2_many(key.b_g2_query(), &z_refs)?,
                    backend.msm_g1_many(key.l_query(), &w_refs)?,
                ))
            })
        },
    );
    let joined_ms = ms(joined);
    let (hs, (a_acc, b1_acc, b2_acc, l)) = (hs?, msms?);
    let h_refs = hs
        .iter()
        .map(|h| {
            h.get(..key.h_table.bases)
                .ok_or_else(|| KernelError::Backend {
                    backend: backend.name().into(),
                    reason: format!(
                        "quotient returned {} coefficients for domain {size}",
                        h.len()
                    ),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let (h_acc, h_msm_ms) = timed(|| backend.msm_g1_fixed_many(&key.h_table, &h_refs));
    let h_acc = h_acc?;
    let count = circuits.len();
    // Where a proof's time goes (RUST_LOG=provnet_kernels=debug): the quotient's FFTs and
    // the witness MSMs run side by side, so `joined_ms` is the slower of the two.
    tracing::debug!(
        backend = backend.name(),
        circuits = count,
        domain = size,
        prepare_ms,
        quotient_ms,
        witness_msm_ms,
        joined_ms,
        h_msm_ms,
        total_ms = ms(started),
        "proved"
    );
    if [
        a_acc.len(),
        b1_acc.len(),
        b2_acc.len(),
        l.len(),
        h_acc.len(),
    ] != [count; 5]
    {
        return Err(KernelError::Backend {
            backend: backend.name().into(),
            reason: "a batched MSM returned the wrong number of results".into(),
        });
    }
    Ok((0..count)
        .map(|i| {
            let r = Fr::rand(rng);
            let s = Fr::rand(rng);
            let g_a = a_acc[i] + vk.alpha_g1 + pk.delta_g1 * r;
            let g1_b = b1_acc[i] + pk.beta_g1 + pk.delta_g1 * s;
            let g2_b = b2_acc[i] + vk.beta_g2 + vk.delta_g2 * s;
            let g_c = l[i] + h_acc[i] + g_a * s + g1_b * r - pk.delta_g1 * (r * s);
            Proof {
                a: g_a.into_affine(),
                b: g2_b.into_affine(),
                c: g_c.into_affine(),
            }
        })
        .collect())
}

/// Milliseconds since `t`.
fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `f`'s result and how long it took, in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = std::time::Instant::now();
    (f(), ms(t))
}
