//! The messages roles exchange. Each has stateless rules ([`Message::check`]) that any node
//! can apply before forwarding; rules that need state (is this model known, is this
//! challenge open) belong to the roles.

use serde::{Deserialize, Serialize};

use crate::ceremony::CeremonyMessage;
use crate::dispute::{Attestation, Claim, DisputeOpen, DisputeReveal};
use crate::envelope::Kind;
use crate::{codec, PublicKey, WireError};

/// Most values in one input or output tensor.
pub const MAX_TENSOR: usize = 16 * 1024;
/// Longest a challenge may stay open after it is published. A segment proof takes seconds
/// at most; a long deadline only lets a sender pin memory and queue slots.
pub const MAX_CHALLENGE_TTL_MS: u64 = 10 * 60 * 1000;
/// Most miners in one weights reveal.
pub const MAX_WEIGHTS: usize = 4096;
/// Most validators a reveal may vouch for.
pub const MAX_VALIDATORS: usize = 1024;
/// Groth16 over BN254, compressed: A (32) + B (64) + C (32).
pub const GROTH16_BN254_PROOF_LEN: usize = 128;

/// A proof request for one segment of one model.
///
/// Sent by a validator, it is a challenge that validator issues and scores: miners prove
/// only those. Sent by a challenger the genesis admits, it is a request: validators adopt
/// it by issuing a challenge of their own on the same segment and input, naming the
/// request in [`Challenge::request`], so the requester can pick out the proofs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(with = "serde_bytes")]
    pub model_id: [u8; 32],
    pub segment: u32,
    /// The segment's quantized input tensor.
    pub input: Vec<i64>,
    /// Fresh randomness so no earlier proof can answer this challenge.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
    /// Unix ms after which proofs no longer count.
    pub deadline_ms: u64,
    /// The id of the challenger's request this validator's challenge adopts. Left out of
    /// the encoding when empty (a benchmark challenge, or a request itself).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_id")]
    pub request: Option<[u8; 32]>,
}

/// `Option<[u8; 32]>` as CBOR bytes.
mod opt_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let b: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        b.map(|b| {
            <[u8; 32]>::try_from(b.as_slice())
                .map_err(|_| serde::de::Error::custom("a request id is 32 bytes"))
        })
        .transpose()
    }
}

impl Challenge {
    /// The challenge id proofs refer to: a hash of the challenger's key and every field.
    pub fn id(&self, challenger: &PublicKey) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/challenge/v1");
        h.update(challenger);
        h.update(&self.model_id);
        h.update(&self.segment.to_le_bytes());
        h.update(&self.nonce);
        h.update(&self.deadline_ms.to_le_bytes());
        h.update(&(self.input.len() as u64).to_le_bytes());
        for v in &self.input {
            h.update(&v.to_le_bytes());
        }
        if let Some(r) = &self.request {
            h.update(b"request");
            h.update(r);
        }
        *h.finalize().as_bytes()
    }
}

crate::tag::byte_tag! {
    /// Which proof system a submission uses (a seam for Halo2 later).
    pub enum ProofSystem("proof system") {
        Groth16Bn254 = 1 => "groth16_bn254",
    }
}

/// A miner's answer to a challenge; the miner is the envelope's sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofSubmission {
    #[serde(with = "serde_bytes")]
    pub challenge_id: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub model_id: [u8; 32],
    pub segment: u32,
    #[serde(with = "serde_bytes")]
    pub vk_id: [u8; 32],
    pub system: ProofSystem,
    /// The segment's quantized output tensor the proof claims.
    pub output: Vec<i64>,
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// A validator's commitment to its weights for an epoch, revealed in the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsCommit {
    pub epoch: u64,
    #[serde(with = "serde_bytes")]
    pub commitment: [u8; 32],
}

/// One miner's weight, out of `u16::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinerWeight {
    #[serde(with = "serde_bytes")]
    pub miner: PublicKey,
    pub weight: u16,
}

/// The weights behind an earlier commit, with the salt that opens it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsReveal {
    pub epoch: u64,
    #[serde(with = "serde_bytes")]
    pub salt: [u8; 32],
    /// Sorted by miner key, no duplicates.
    pub weights: Vec<MinerWeight>,
    /// The commitments for this epoch that the revealer accepted in the commit window,
    /// sorted by validator key. A node that was down through the commit window accepts a
    /// reveal it has no commit for when validators holding most of the stake attest the
    /// commitment here. Not part of the commitment. Left out of the encoding when empty,
    /// so such a reveal is byte for byte what nodes before this field sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_commits: Vec<SeenCommit>,
}

/// One validator's commitment, as another validator saw it in the commit window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenCommit {
    #[serde(with = "serde_bytes")]
    pub validator: PublicKey,
    #[serde(with = "serde_bytes")]
    pub commitment: [u8; 32],
}

impl WeightsReveal {
    /// The commitment this reveal opens.
    pub fn commitment(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/weights/v1");
        h.update(&self.epoch.to_le_bytes());
        h.update(&self.salt);
        h.update(&(self.weights.len() as u64).to_le_bytes());
        for w in &self.weights {
            h.update(&w.miner);
            h.update(&w.weight.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
}

crate::tag::byte_tag! {
    /// A node's role on the network.
    pub enum Role("role") {
        Challenger = 1 => "challenger",
        Miner = 2 => "miner",
        Validator = 3 => "validator",
        Inference = 4 => "inference",
    }
}

/// Who a node is and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// Sorted, no duplicates; empty for a plain relay.
    pub roles: Vec<Role>,
    pub listen_addrs: Vec<String>,
    pub software_version: String,
}

/// A miner's registration: the sender's hotkey asks for a slot in the metagraph, paying
/// with a proof of work over its key, the network and a recent epoch (the embedded stand-in
/// for Bittensor's burn). See [`Register::work_bits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The epoch the work was done for: registrations older than the previous epoch are
    /// stale, so work cannot be stockpiled.
    pub epoch: u64,
    pub nonce: u64,
}

impl Register {
    /// The work's hash: `blake3("provnet/register/v1" ‖ genesis id ‖ hotkey ‖ epoch ‖
    /// nonce)`.
    pub fn work_hash(&self, genesis: &[u8; 8], hotkey: &PublicKey) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/register/v1");
        h.update(genesis);
        h.update(hotkey);
        h.update(&self.epoch.to_le_bytes());
        h.update(&self.nonce.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Leading zero bits of the work's hash: the work done, on average `2^bits` hashes.
    pub fn work_bits(&self, genesis: &[u8; 8], hotkey: &PublicKey) -> u32 {
        let hash = self.work_hash(genesis, hotkey);
        let mut bits = 0;
        for b in hash {
            if b == 0 {
                bits += 8;
            } else {
                bits += b.leading_zeros();
                break;
            }
        }
        bits
    }

    /// Finds a registration with at least `bits` bits of work for `epoch` (about `2^bits`
    /// hashes; `start` spreads searches apart).
    pub fn solve(
        genesis: &[u8; 8],
        hotkey: &PublicKey,
        epoch: u64,
        bits: u32,
        start: u64,
    ) -> Register {
        let mut r = Register {
            epoch,
            nonce: start,
        };
        while r.work_bits(genesis, hotkey) < bits {
            r.nonce = r.nonce.wrapping_add(1);
        }
        r
    }
}

/// Any message, tagged by its [`Kind`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Challenge(Challenge),
    ProofSubmission(ProofSubmission),
    WeightsCommit(WeightsCommit),
    WeightsReveal(WeightsReveal),
    Announce(Announce),
    Register(Register),
    Claim(Claim),
    DisputeOpen(DisputeOpen),
    DisputeReveal(DisputeReveal),
    Attestation(Attestation),
    Ceremony(CeremonyMessage),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Challenge(_) => Kind::Challenge,
            Message::ProofSubmission(_) => Kind::ProofSubmission,
            Message::WeightsCommit(_) => Kind::WeightsCommit,
            Message::WeightsReveal(_) => Kind::WeightsReveal,
            Message::Announce(_) => Kind::Announce,
            Message::Register(_) => Kind::Register,
            Message::Claim(_) => Kind::Claim,
            Message::DisputeOpen(_) => Kind::DisputeOpen,
            Message::DisputeReveal(_) => Kind::DisputeReveal,
            Message::Attestation(_) => Kind::Attestation,
            Message::Ceremony(_) => Kind::Ceremony,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Message::Challenge(m) => codec::encode(m),
            Message::ProofSubmission(m) => codec::encode(m),
            Message::WeightsCommit(m) => codec::encode(m),
            Message::WeightsReveal(m) => codec::encode(m),
            Message::Announce(m) => codec::encode(m),
            Message::Register(m) => codec::encode(m),
            Message::Claim(m) => codec::encode(m),
            Message::DisputeOpen(m) => codec::encode(m),
            Message::DisputeReveal(m) => codec::encode(m),
            Message::Attestation(m) => codec::encode(m),
            Message::Ceremony(m) => codec::encode(m),
        }
    }

    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Message, WireError> {
        Ok(match kind {
            Kind::Challenge => Message::Challenge(codec::decode(payload)?),
            Kind::ProofSubmission => Message::ProofSubmission(codec::decode(payload)?),
            Kind::WeightsCommit => Message::WeightsCommit(codec::decode(payload)?),
            Kind::WeightsReveal => Message::WeightsReveal(codec::decode(payload)?),
            Kind::Announce => Message::Announce(codec::decode(payload)?),
            Kind::Register => Message::Register(codec::decode(payload)?),
            Kind::Claim => Message::Claim(codec::decode(payload)?),
            Kind::DisputeOpen => Message::DisputeOpen(codec::decode(payload)?),
            Kind::DisputeReveal => Message::DisputeReveal(codec::decode(payload)?),
            Kind::Attestation => Message::Attestation(codec::decode(payload)?),
            Kind::Ceremony => Message::Ceremony(codec::decode(payload)?),
        })
    }

    /// Stateless rules; `sent_ms` is the envelope's timestamp.
    pub fn check(&self, sent_ms: u64) -> Result<(), WireError> {
        let kind = self.kind().as_str();
        let invalid = |reason: String| Err(WireError::Invalid { kind, reason });
        match self {
            Message::Challenge(c) => {
                if c.input.is_empty() || c.input.len() > MAX_TENSOR {
                    return invalid(format!(
                        "input has {} values (1 to {MAX_TENSOR})",
                        c.input.len()
                    ));
                }
                if c.deadline_ms <= sent_ms || c.deadline_ms - sent_ms > MAX_CHALLENGE_TTL_MS {
                    return invalid(format!(
                        "deadline {} is not within {} s after the send time {sent_ms}",
                        c.deadline_ms,
                        MAX_CHALLENGE_TTL_MS / 1000
                    ));
                }
            }
            Message::ProofSubmission(p) => {
                if p.output.is_empty() || p.output.len() > MAX_TENSOR {
                    return invalid(format!(
                        "output has {} values (1 to {MAX_TENSOR})",
                        p.output.len()
                    ));
                }
                let want = match p.system {
                    ProofSystem::Groth16Bn254 => GROTH16_BN254_PROOF_LEN,
                };
                if p.proof.len() != want {
                    return invalid(format!(
                        "proof is {} bytes, {:?} proofs are {want}",
                        p.proof.len(),
                        p.system
                    ));
                }
            }
            Message::WeightsCommit(_)
            | Message::Register(_)
            | Message::DisputeOpen(_)
            | Message::Attestation(_) => {}
            Message::Claim(c) => return c.check().or_else(invalid),
            Message::Ceremony(c) => return c.check().or_else(invalid),
            Message::DisputeReveal(r) => return r.check().or_else(invalid),
            Message::WeightsReveal(r) => {
                if r.weights.len() > MAX_WEIGHTS {
                    return invalid(format!(
                        "{} weights (at most {MAX_WEIGHTS})",
                        r.weights.len()
                    ));
                }
                if r.weights.windows(2).any(|w| w[0].miner >= w[1].miner) {
                    return invalid("weights are not sorted by miner without duplicates".into());
                }
                if r.seen_commits.len() > MAX_VALIDATORS {
                    return invalid(format!(
                        "{} seen commits (at most {MAX_VALIDATORS})",
                        r.seen_commits.len()
                    ));
                }
                if r.seen_commits
                    .windows(2)
                    .any(|w| w[0].validator >= w[1].validator)
                {
                    return invalid(
                        "seen commits are not sorted by validator without duplicates".into(),
                    );
                }
            }
            Message::Announce(a) => {
                if a.roles.windows(2).any(|w| w[0] >= w[1]) {
                    return invalid("roles are not sorted without duplicates".into());
                }
                if a.listen_addrs.len() > 16 || a.listen_addrs.iter().any(|s| s.len() > 256) {
                    return invalid("more than 16 listen addresses or one over 256 bytes".into());
                }
                if a.software_version.len() > 64 {
                    return invalid("software version over 64 bytes".into());
                }
            }
        }
        Ok(())
    }
}
