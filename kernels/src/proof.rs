//! Segment proofs: proving, the CBOR proof file, verification.

use std::path::Path;

use ark_bn254::{Bn254, Fr};
use ark_ff::{BigInteger, PrimeField};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_std::rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::binding::{binding, ProofContext};
use crate::circuit::{self, Assignment};
use crate::error::{KernelError, Result};
use crate::import::hex;
use crate::keys::SegmentKey;
use crate::model::{Model, Segment};
use crate::msm::FixedBaseTable;
use crate::prover::{self, ProverBackend};
use crate::r1cs::{Mode, R1cs};

pub const PROOF_VERSION: u32 = 1;
/// Size of a compressed BN254 Groth16 proof.
pub const PROOF_BYTES: usize = 128;

/// The proof file: CBOR, self-describing enough to verify against a model directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    pub version: u32,
    #[serde(with = "serde_bytes")]
    pub model_id: Vec<u8>,
    pub segment: u32,
    #[serde(with = "serde_bytes")]
    pub vk_id: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub challenge: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub miner: Vec<u8>,
    /// Quantized segment input and output.
    pub input: Vec<i64>,
    pub output: Vec<i64>,
    /// Public inputs as 32-byte little-endian field elements, circuit order.
    pub public_inputs: Vec<serde_bytes::ByteBuf>,
    /// Compressed Groth16 proof (128 bytes).
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

impl ProofFile {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_cbor::to_vec(self).expect("a proof file always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ProofFile> {
        let pf: ProofFile = serde_cbor::from_slice(bytes)
            .map_err(|e| KernelError::ProofFile(format!("not a provnet proof: {e}")))?;
        if pf.version != PROOF_VERSION {
            return Err(KernelError::ProofFile(format!(
                "unknown version {}",
                pf.version
            )));
        }
        let sized = [&pf.model_id, &pf.vk_id, &pf.challenge, &pf.nonce, &pf.miner]
            .iter()
            .all(|f| f.len() == 32);
        if !sized || pf.proof.len() != PROOF_BYTES || pf.public_inputs.iter().any(|p| p.len() != 32)
        {
            return Err(KernelError::ProofFile(
                "a field has the wrong length".into(),
            ));
        }
        Ok(pf)
    }

    /// A proof file for a claim that arrived without its public inputs (a network
    /// submission names the challenge; the challenge holds the input): the public inputs are
    /// computed from the claim here, and verification recomputes them again anyway. Fails if
    /// the segment does not exist or the input or output has the wrong length or range.
    pub fn from_claim(
        model: &Model,
        segment: usize,
        vk_id: &[u8; 32],
        ctx: &ProofContext,
        input: &[i64],
        output: &[i64],
        proof: &[u8],
    ) -> Result<ProofFile> {
        let seg = model.segment(segment)?;
        seg.check_ranges(input)?;
        if output.len() != seg.n_out() || output.iter().any(|v| !seg.output().contains(*v as i128))
        {
            return Err(KernelError::Rejected(
                "the claimed output has the wrong length or is out of range".into(),
            ));
        }
        let bind = binding(&model.id(), segment, ctx);
        let inputs = circuit::public_inputs(seg, input, output, bind);
        Ok(ProofFile {
            version: PROOF_VERSION,
            model_id: model.id().to_vec(),
            segment: segment as u32,
            vk_id: vk_id.to_vec(),
            challenge: ctx.challenge.to_vec(),
            nonce: ctx.nonce.to_vec(),
            miner: ctx.miner.to_vec(),
            input: input.to_vec(),
            output: output.to_vec(),
            public_inputs: inputs
                .iter()
                .map(|f| serde_bytes::ByteBuf::from(fr_bytes(f)))
                .collect(),
            proof: proof.to_vec(),
        })
    }

    pub fn read(path: &Path) -> Result<ProofFile> {
        let bytes = std::fs::read(path).map_err(|e| KernelError::io(path, e))?;
        Self::from_bytes(&bytes)
    }

    pub fn context(&self) -> ProofContext {
        let arr = |v: &[u8]| {
            let mut a = [0u8; 32];
            a.copy_from_slice(v);
            a
        };
        ProofContext {
            challenge: arr(&self.challenge),
            nonce: arr(&self.nonce),
            miner: arr(&self.miner),
        }
    }
}

/// A fresh segment proof and what it claims.
#[derive(Clone, Debug)]
pub struct SegmentProof {
    pub output: Vec<i64>,
    pub public_inputs: Vec<Fr>,
    pub proof: Proof<Bn254>,
}

/// Proves segment `seg` on quantized `input` for `ctx`.
pub fn prove_segment<R: RngCore + CryptoRng>(
    backend: &dyn ProverBackend,
    model: &Model,
    seg: &Segment,
    pk: &SegmentKey,
    input: &[i64],
    ctx: &ProofContext,
    rng: &mut R,
) -> Result<SegmentProof> {
    let mut v = prove_segment_many(backend, model, seg, pk, &[(input, ctx)], rng)?;
    Ok(v.pop().expect("one proof per job"))
}

/// Proves one segment for several (input, context) pairs at once: one batch per MSM on the
/// backend (see [`prover::prove_many`]). Results are in the order of `jobs`.
pub fn prove_segment_many<R: RngCore + CryptoRng>(
    backend: &dyn ProverBackend,
    model: &Model,
    seg: &Segment,
    pk: &SegmentKey,
    jobs: &[(&[i64], &ProofContext)],
    rng: &mut R,
) -> Result<Vec<SegmentProof>> {
    let mut circuits = Vec::with_capacity(jobs.len());
    for (input, ctx) in jobs {
        seg.check_input(input)?;
        let bind = binding(&model.id(), seg.index, ctx);
        circuits.push(circuit::synthesize(
            seg,
            Mode::Prove,
            bind,
            Some(Assignment {
                input,
                claimed_output: None,
            }),
        ));
    }
    let refs: Vec<&R1cs> = circuits.iter().collect();
    let proofs = prover::prove_many(backend, pk, &refs, rng).map_err(|e| match e {
        KernelError::BadKeys { reason, .. } => KernelError::BadKeys {
            segment: seg.index,
            reason,
        },
        other => other,
    })?;
    Ok(proofs
        .into_iter()
        .zip(circuits.iter().zip(jobs))
        .map(|(proof, (cs, (input, _)))| SegmentProof {
            public_inputs: cs.instance.clone(),
            output: seg.eval(input),
            proof,
        })
        .collect())
}

/// Serializes a field element as 32 little-endian bytes.
pub fn fr_bytes(f: &Fr) -> Vec<u8> {
    f.into_bigint().to_bytes_le()
}

impl SegmentProof {
    /// Packages the proof as a file.
    pub fn to_file(
        &self,
        model: &Model,
        seg: &Segment,
        vk_id: &[u8; 32],
        input: &[i64],
        ctx: &ProofContext,
    ) -> ProofFile {
        let mut proof = Vec::with_capacity(PROOF_BYTES);
        self.proof
            .serialize_compressed(&mut proof)
            .expect("serializing to memory cannot fail");
        ProofFile {
            version: PROOF_VERSION,
            model_id: model.id().to_vec(),
            segment: seg.index as u32,
            vk_id: vk_id.to_vec(),
            challenge: ctx.challenge.to_vec(),
            nonce: ctx.nonce.to_vec(),
            miner: ctx.miner.to_vec(),
            input: input.to_vec(),
            output: self.output.clone(),
            public_inputs: self
                .public_inputs
                .iter()
                .map(|f| serde_bytes::ByteBuf::from(fr_bytes(f)))
                .collect(),
            proof,
        }
    }
}

/// A verifying key ready for repeated use: pairing-prepared, with a window table for its
/// public-input bases.
pub struct SegmentVerifier {
    pub segment: usize,
    pub vk_id: [u8; 32],
    pub pvk: PreparedVerifyingKey<Bn254>,
    pub(crate) inputs_table: FixedBaseTable,
}

impl SegmentVerifier {
    pub fn new(segment: usize, vk: ark_groth16::VerifyingKey<Bn254>, vk_id: [u8; 32]) -> Self {
        let bases = vk.gamma_abc_g1.get(1..).unwrap_or(&[]);
        let inputs_table = FixedBaseTable::new(bases, FixedBaseTable::best_window(bases.len(), 1));
        SegmentVerifier {
            segment,
            vk_id,
            pvk: ark_groth16::prepare_verifying_key(&vk),
            inputs_table,
        }
    }

    /// Verifies a proof of this segment for exactly `expected` (challenge, nonce, miner).
    /// The public inputs are recomputed from the claimed input and output, never trusted.
    pub fn verify(&self, model: &Model, pf: &ProofFile, expected: &ProofContext) -> Result<()> {
        let (proof, inputs) = self.check_claims(model, pf, expected)?;
        self.verify_raw(&proof, &inputs)
    }

    /// Everything but the pairing check: the file's claims against what is expected. Returns
    /// the decoded proof and the recomputed public inputs, ready for [`Self::verify_raw`] or
    /// a batch.
    pub fn check_claims(
        &self,
        model: &Model,
        pf: &ProofFile,
        expected: &ProofContext,
    ) -> Result<(Proof<Bn254>, Vec<Fr>)> {
        let reject = |m: String| Err(KernelError::Rejected(m));
        if pf.model_id != model.id() {
            return reject("the proof is for a different model".into());
        }
        if pf.segment as usize != self.segment {
            return reject(format!(
                "the proof is for segment {}, not segment {}",
                pf.segment, self.segment
            ));
        }
        if pf.vk_id != self.vk_id {
            return reject("the proof names a different verifying key".into());
        }
        let claimed = pf.context();
        if claimed.challenge != expected.challenge {
            return reject(format!(
                "the proof is for challenge {}, not {}",
                hex(&claimed.challenge),
                hex(&expected.challenge)
            ));
        }
        if claimed.miner != expected.miner {
            return reject(format!(
                "the proof is bound to miner {}, not {}",
                hex(&claimed.miner),
                hex(&expected.miner)
            ));
        }
        if claimed.nonce != expected.nonce {
            return reject("the proof is for a different challenge nonce".into());
        }
        let seg = model.segment(self.segment)?;
        seg.check_ranges(&pf.input)
            .map_err(|e| KernelError::Rejected(e.to_string()))?;
        if pf.output.len() != seg.n_out()
            || pf.output.iter().any(|v| !seg.output().contains(*v as i128))
        {
            return reject("the claimed output has the wrong length or is out of range".into());
        }
        let bind = binding(&model.id(), seg.index, expected);
        let inputs = circuit::public_inputs(seg, &pf.input, &pf.output, bind);
        let stored: Vec<Vec<u8>> = pf.public_inputs.iter().map(|b| b.to_vec()).collect();
        if stored != inputs.iter().map(fr_bytes).collect::<Vec<_>>() {
            return reject(
                "public inputs do not match the claimed input, output and binding".into(),
            );
        }
        let proof = Proof::<Bn254>::deserialize_compressed(pf.proof.as_slice())
            .map_err(|e| KernelError::Rejected(format!("malformed proof bytes: {e}")))?;
        Ok((proof, inputs))
    }

    /// The pairing check alone.
    pub fn verify_raw(&self, proof: &Proof<Bn254>, inputs: &[Fr]) -> Result<()> {
        let gamma_abc = &self.pvk.vk.gamma_abc_g1;
        if inputs.len() + 1 != gamma_abc.len() {
            return Err(KernelError::Rejected(format!(
                "{} public inputs, the key takes {}",
                inputs.len(),
                gamma_abc.len() - 1
            )));
        }
        let prepared = self.inputs_table.msm(inputs)? + gamma_abc[0];
        match Groth16::<Bn254>::verify_proof_with_prepared_inputs(&self.pvk, proof, &prepared) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KernelError::Rejected("the pairing check failed".into())),
            Err(e) => Err(KernelError::Rejected(format!("verification error: {e}"))),
        }
    }
}
