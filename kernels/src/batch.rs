//! Batch verification: many proofs of one segment, one final exponentiation.
//!
//! For proofs (A_i, B_i, C_i) with public-input points L_i and random 128-bit r_i, every
//! Groth16 equation holds (except with probability about 2^-128) when
//!
//!   prod_i e(r_i A_i, B_i) * e(sum_i r_i L_i, -gamma) * e(sum_i r_i C_i, -delta)
//!     == e(alpha, beta)^(sum_i r_i).
//!
//! That is n + 2 Miller loops and one final exponentiation instead of 3n Miller loops and n final
//! exponentiations, and sum_i r_i L_i is one MSM over the key's input bases with combined
//! scalars. A failing batch falls back to checking each of its proofs on its own (on every
//! core), so a flood of bad proofs costs at most one batch more than checking each once:
//! bisecting would cost more Miller loops than that when most proofs are bad.

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective};
use ark_ec::pairing::{Pairing, PairingOutput};
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::Zero;
use ark_groth16::Proof;
use ark_std::rand::RngCore;
use rayon::prelude::*;

use crate::binding::ProofContext;
use crate::error::{KernelError, Result};
use crate::model::Model;
use crate::proof::{ProofFile, SegmentVerifier};

type G2Prepared = <Bn254 as Pairing>::G2Prepared;

impl SegmentVerifier {
    /// Whether every `(proof, public inputs)` pair verifies, checked together. `rng` must be
    /// unpredictable to whoever made the proofs.
    pub fn verify_batch<R: RngCore>(
        &self,
        items: &[(Proof<Bn254>, Vec<Fr>)],
        rng: &mut R,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let gamma_abc = &self.pvk.vk.gamma_abc_g1;
        let m = gamma_abc.len() - 1;
        if let Some((_, x)) = items.iter().find(|(_, x)| x.len() != m) {
            return Err(KernelError::Rejected(format!(
                "{} public inputs, the key takes {m}",
                x.len()
            )));
        }
        let r: Vec<u128> = items.iter().map(|_| random_u128(rng)).collect();
        let rf: Vec<Fr> = r.iter().map(|&v| Fr::from(v)).collect();

        // sum_i r_i L_i = (sum_i r_i) IC_0 + sum_j (sum_i r_i x_ij) IC_j
        let mut combined = vec![Fr::zero(); m];
        let mut r_sum = Fr::zero();
        for ((_, x), ri) in items.iter().zip(&rf) {
            r_sum += ri;
            for (c, xj) in combined.iter_mut().zip(x) {
                *c += *ri * xj;
            }
        }
        let l = self.inputs_table.msm(&combined)? + G1Projective::from(gamma_abc[0]) * r_sum;
        let c_points: Vec<G1Affine> = items.iter().map(|(p, _)| p.c).collect();
        let c = G1Projective::msm(&c_points, &rf)
            .map_err(|_| KernelError::Rejected("batch size mismatch".into()))?;

        let scaled: Vec<G1Projective> = items
            .par_iter()
            .zip(&r)
            .map(|((p, _), &ri)| p.a * Fr::from(ri))
            .collect();
        let mut g1 = G1Projective::normalize_batch(&scaled);
        g1.push(l.into_affine());
        g1.push(c.into_affine());
        let mut g2: Vec<G2Prepared> = items.par_iter().map(|(p, _)| p.b.into()).collect();
        g2.push(self.pvk.gamma_g2_neg_pc.clone());
        g2.push(self.pvk.delta_g2_neg_pc.clone());

        let lhs = Bn254::multi_miller_loop(g1, g2);
        let lhs = Bn254::final_exponentiation(lhs)
            .ok_or_else(|| KernelError::Rejected("final exponentiation failed".into()))?;
        let rhs = PairingOutput::<Bn254>(self.pvk.alpha_g1_beta_g2) * r_sum;
        if lhs == rhs {
            Ok(())
        } else {
            Err(KernelError::Rejected(format!(
                "the batch pairing check failed for {} proofs",
                items.len()
            )))
        }
    }

    /// Verifies many proof files of this segment, each for its own expected context, and
    /// gives one verdict per file (in order). Claims are checked one by one; the pairing
    /// checks run as a batch, and one by one when the batch fails, so each bad proof gets
    /// its own error.
    pub fn verify_files<R: RngCore>(
        &self,
        model: &Model,
        items: &[(&ProofFile, ProofContext)],
        rng: &mut R,
    ) -> Vec<Result<()>> {
        // Claims (binding, public inputs, proof decompression and subgroup checks) are
        // independent per file: check them on every core.
        let checked: Vec<Result<(Proof<Bn254>, Vec<Fr>)>> = items
            .par_iter()
            .map(|(pf, ctx)| self.check_claims(model, pf, ctx))
            .collect();
        let mut verdicts = Vec::with_capacity(items.len());
        let mut ready = Vec::new();
        let mut index = Vec::new();
        for (k, c) in checked.into_iter().enumerate() {
            match c {
                Ok(pair) => {
                    ready.push(pair);
                    index.push(k);
                    verdicts.push(Ok(()));
                }
                Err(e) => verdicts.push(Err(e)),
            }
        }
        let batch_ok = match ready.len() {
            0 => true,
            1 => false, // one proof: its own check is the batch
            _ => self.verify_batch(&ready, rng).is_ok(),
        };
        if !batch_ok {
            let each: Vec<Result<()>> = ready
                .par_iter()
                .map(|(proof, inputs)| self.verify_raw(proof, inputs))
                .collect();
            for (k, r) in index.into_iter().zip(each) {
                verdicts[k] = r;
            }
        }
        verdicts
    }
}

fn random_u128<R: RngCore>(rng: &mut R) -> u128 {
    // Never zero: a zero coefficient would drop its proof from the check.
    loop {
        let v = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if v != 0 {
            return v;
        }
    }
}
