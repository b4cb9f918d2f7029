//! The binding value that ties a proof to one challenge and one miner.

use ark_bn254::Fr;
use ark_ff::PrimeField;

const DOMAIN: &[u8] = b"provnet/binding/v1";

/// Who a proof is for: the challenge id, its nonce, and the miner's ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofContext {
    pub challenge: [u8; 32],
    pub nonce: [u8; 32],
    pub miner: [u8; 32],
}

/// binding = blake3(domain, model id, segment, challenge, nonce, miner) as 64 bytes, reduced
/// into the BN254 scalar field (64 bytes keep the reduction bias negligible).
pub fn binding(model_id: &[u8; 32], segment: usize, ctx: &ProofContext) -> Fr {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(model_id);
    h.update(&(segment as u64).to_le_bytes());
    h.update(&ctx.challenge);
    h.update(&ctx.nonce);
    h.update(&ctx.miner);
    let mut wide = [0u8; 64];
    h.finalize_xof().fill(&mut wide);
    Fr::from_le_bytes_mod_order(&wide)
}
