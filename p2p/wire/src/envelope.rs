//! The signed envelope every gossip message travels in.
//!
//! The signature covers domain-separated bytes, not the CBOR: `"provnet/v1"`, then the
//! version, netuid, genesis id, kind, sender, timestamp and sequence at fixed widths, then the payload
//! with its length. A message signed for one network or kind never verifies as another.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::{codec, PublicKey, WireError};

/// The envelope format this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

const DOMAIN: &[u8] = b"provnet/v1";

/// Room for the envelope's own fields around the largest payload.
pub const ENVELOPE_OVERHEAD: usize = 192;

crate::tag::byte_tag! {
    /// What a payload is. The discriminant is the byte on the wire and in the signature.
    pub enum Kind("message kind") {
        Challenge = 1 => "challenge",
        ProofSubmission = 2 => "proof_submission",
        WeightsCommit = 3 => "weights_commit",
        WeightsReveal = 4 => "weights_reveal",
        Announce = 5 => "announce",
        Register = 6 => "register",
        Claim = 7 => "claim",
        DisputeOpen = 8 => "dispute_open",
        DisputeReveal = 9 => "dispute_reveal",
        // 10 was the leaf state on gossip; it is fetched by request-response now.
        Attestation = 11 => "attestation",
        Ceremony = 12 => "ceremony",
    }
}

impl Kind {
    /// Largest payload accepted for this kind, in bytes.
    pub fn max_payload(self) -> usize {
        match self {
            // Input tensors of up to 16k values at 9 CBOR bytes each, plus ids.
            Kind::Challenge => 160 * 1024,
            // Output tensor and the proof bytes.
            Kind::ProofSubmission => 160 * 1024,
            Kind::WeightsCommit => 128,
            // 4096 miners at ~40 bytes each.
            Kind::WeightsReveal => 192 * 1024,
            Kind::Announce => 4 * 1024,
            Kind::Register => 64,
            // An input and an output tensor of up to 16k values each.
            Kind::Claim => 320 * 1024,
            Kind::DisputeOpen => 256,
            // 4,096 hashes, or 129 hashes with their Merkle proofs.
            Kind::DisputeReveal => 160 * 1024,
            Kind::Attestation => 256,
            // A final state with up to 1,024 vk ids.
            Kind::Ceremony => 40 * 1024,
        }
    }

    /// Largest encoded envelope of any kind.
    pub fn max_envelope() -> usize {
        Kind::ALL.iter().map(|k| k.max_payload()).max().unwrap_or(0) + ENVELOPE_OVERHEAD
    }
}

/// Which network a message belongs to: the netuid, and the first bytes of the hash of the
/// network's genesis (its models, validator set and parameters). Nodes that disagree on
/// either refuse each other's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Network {
    pub netuid: u16,
    #[serde(with = "serde_bytes")]
    pub genesis: [u8; 8],
}

impl Network {
    /// A network without a genesis file (development): genesis id all zeros.
    pub fn dev(netuid: u16) -> Network {
        Network {
            netuid,
            genesis: [0; 8],
        }
    }

    /// The network whose genesis hashes to `genesis_hash`.
    pub fn with_genesis(netuid: u16, genesis_hash: &[u8; 32]) -> Network {
        let mut genesis = [0; 8];
        genesis.copy_from_slice(&genesis_hash[..8]);
        Network { netuid, genesis }
    }
}

/// A signed message. `payload` is the CBOR of the [`Message`] named by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u8,
    pub netuid: u16,
    #[serde(with = "serde_bytes")]
    pub genesis: [u8; 8],
    pub kind: Kind,
    #[serde(with = "serde_bytes")]
    pub sender: PublicKey,
    pub timestamp_ms: u64,
    pub sequence: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl Envelope {
    /// Builds and signs an envelope around an already encoded payload.
    pub fn seal(
        key: &SigningKey,
        net: Network,
        kind: Kind,
        timestamp_ms: u64,
        sequence: u64,
        payload: Vec<u8>,
    ) -> Envelope {
        let mut env = Envelope {
            version: PROTOCOL_VERSION,
            netuid: net.netuid,
            genesis: net.genesis,
            kind,
            sender: key.verifying_key().to_bytes(),
            timestamp_ms,
            sequence,
            payload,
            signature: [0; 64],
        };
        env.sign(key);
        env
    }

    /// (Re)signs the envelope as it stands with `key`, which must be the sender's.
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = key.sign(&self.signing_bytes()).to_bytes();
    }

    /// The exact bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(DOMAIN.len() + 64 + self.payload.len());
        b.extend_from_slice(DOMAIN);
        b.push(self.version);
        b.extend_from_slice(&self.netuid.to_be_bytes());
        b.extend_from_slice(&self.genesis);
        b.push(self.kind as u8);
        b.extend_from_slice(&self.sender);
        b.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        b.extend_from_slice(&self.sequence.to_be_bytes());
        b.extend_from_slice(&(self.payload.len() as u64).to_be_bytes());
        b.extend_from_slice(&self.payload);
        b
    }

    /// Checks the signature against the sender key (strict: no malleable signatures, no
    /// small-order keys).
    pub fn verify(&self) -> Result<(), WireError> {
        let key = VerifyingKey::from_bytes(&self.sender).map_err(|_| WireError::BadSignature)?;
        key.verify_strict(
            &self.signing_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| WireError::BadSignature)
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        codec::encode(self)
    }

    /// Decodes an envelope (canonical CBOR only). Does not check the signature.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        codec::decode(bytes)
    }

    /// Decodes the payload as the message `kind` names, and checks its own rules.
    pub fn message(&self) -> Result<Message, WireError> {
        if self.payload.len() > self.kind.max_payload() {
            return Err(WireError::Oversize {
                kind: self.kind.as_str(),
                len: self.payload.len(),
                max: self.kind.max_payload(),
            });
        }
        let msg = Message::decode(self.kind, &self.payload)?;
        msg.check(self.timestamp_ms)?;
        Ok(msg)
    }
}

/// Seals messages for one node on one network, numbering them.
///
/// Sequences start at the current time in microseconds and count up, so they keep rising
/// across restarts and peers' replay windows never mistake a restarted node for a replay.
pub struct Signer {
    key: SigningKey,
    net: Network,
    next_sequence: u64,
}

impl Signer {
    pub fn new(key: SigningKey, net: Network, now_ms: u64) -> Signer {
        Signer {
            key,
            net,
            next_sequence: now_ms.saturating_mul(1000),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.verifying_key().to_bytes()
    }

    pub fn network(&self) -> Network {
        self.net
    }

    /// Encodes, signs and numbers `msg`; returns the envelope's bytes.
    pub fn seal(&mut self, msg: &Message, now_ms: u64) -> Result<Vec<u8>, WireError> {
        let payload = msg.encode()?;
        let kind = msg.kind();
        if payload.len() > kind.max_payload() {
            return Err(WireError::Oversize {
                kind: kind.as_str(),
                len: payload.len(),
                max: kind.max_payload(),
            });
        }
        let seq = self.next_sequence;
        self.next_sequence += 1;
        Envelope::seal(&self.key, self.net, kind, now_ms, seq, payload).encode()
    }
}
