//! Groth16 keys per segment: single-party development setup, on-disk cache, loading.
//!
//! Proving keys are stored uncompressed and loaded without curve checks, pinned by their
//! blake3 hash in `keys/index.json` (checking every point would cost more than a proof).
//! Soundness rests on the verifying key, which is small: it is loaded with full checks and
//! named by its hash, the vk id.

use std::path::{Path, PathBuf};

use ark_bn254::Bn254;
use ark_groth16::{Groth16, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_std::rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::circuit::{self, CircuitShape};
use crate::error::{KernelError, Result};
use crate::import::hex;
use crate::model::Model;
use crate::msm::{self, FixedBaseTable};
use crate::r1cs::{Mode, Replay};

/// Threads the h-table window is tuned for (the 2-core machines we target).
const PROVER_THREADS: usize = 2;

pub const KEYS_DIR: &str = "keys";
pub const INDEX_FILE: &str = "index.json";
/// Printed by setup and stored in the key index.
pub const DEV_SETUP_WARNING: &str = "DEVELOPMENT SETUP ONLY: these Groth16 keys come from a \
single-party trusted setup run on this machine. Whoever ran it could have kept the toxic waste \
and forge proofs. A real network needs keys from a multi-party ceremony.";

/// `keys/index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIndex {
    pub model_id: String,
    pub ceremony: String,
    pub warning: String,
    pub segments: Vec<KeyEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub index: usize,
    pub constraints: usize,
    pub public_inputs: usize,
    pub pk_file: String,
    pub pk_bytes: usize,
    pub pk_blake3: String,
    pub vk_file: String,
    pub vk_id: String,
    /// Precomputed window table for the h-query MSM (see `msm`).
    pub h_table_file: String,
    pub h_table_blake3: String,
    pub setup_ms: u64,
}

/// A segment's proving key with its precomputed h-query table.
pub struct SegmentKey {
    pub pk: ProvingKey<Bn254>,
    pub h_table: FixedBaseTable,
}

/// Runs setup for every segment and writes `DIR/keys/` atomically (replacing old keys).
pub fn setup<R: RngCore + CryptoRng>(dir: &Path, model: &Model, rng: &mut R) -> Result<KeyIndex> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut entries = Vec::new();
    for seg in &model.segments {
        let start = std::time::Instant::now();
        let cs = circuit::synthesize(seg, Mode::Setup, Default::default(), None);
        let pk = Groth16::<Bn254>::generate_random_parameters_with_reduction(Replay(cs), rng)
            .map_err(|e| KernelError::BadKeys {
                segment: seg.index,
                reason: format!("setup failed: {e}"),
            })?;
        let c = FixedBaseTable::best_window(pk.h_query.len(), PROVER_THREADS);
        let table_bytes = msm::table_to_bytes(&FixedBaseTable::new(&pk.h_query, c));
        let setup_ms = start.elapsed().as_millis() as u64;
        let mut pk_bytes = Vec::new();
        pk.serialize_uncompressed(&mut pk_bytes)
            .expect("serializing to memory cannot fail");
        let mut vk_bytes = Vec::new();
        pk.vk
            .serialize_compressed(&mut vk_bytes)
            .expect("serializing to memory cannot fail");
        let shape = CircuitShape::of(seg);
        let (pk_file, vk_file, h_file) = (
            format!("segment-{}.pk", seg.index),
            format!("segment-{}.vk", seg.index),
            format!("segment-{}.htable", seg.index),
        );
        entries.push(KeyEntry {
            index: seg.index,
            constraints: shape.constraints,
            public_inputs: shape.public_inputs,
            pk_file: pk_file.clone(),
            pk_bytes: pk_bytes.len(),
            pk_blake3: hex(blake3::hash(&pk_bytes).as_bytes()),
            vk_file: vk_file.clone(),
            vk_id: hex(blake3::hash(&vk_bytes).as_bytes()),
            h_table_file: h_file.clone(),
            h_table_blake3: hex(blake3::hash(&table_bytes).as_bytes()),
            setup_ms,
        });
        files.push((PathBuf::from(h_file), table_bytes));
        files.push((PathBuf::from(pk_file), pk_bytes));
        files.push((PathBuf::from(vk_file), vk_bytes));
    }
    let index = KeyIndex {
        model_id: hex(&model.id()),
        ceremony: "single-party development setup".into(),
        warning: DEV_SETUP_WARNING.into(),
        segments: entries,
    };
    files.push((
        PathBuf::from(INDEX_FILE),
        serde_json::to_vec_pretty(&index).expect("index serializes"),
    ));
    let keys = dir.join(KEYS_DIR);
    let old = dir.join(format!(".keys.old-{}", std::process::id()));
    let had_keys = keys.exists();
    if had_keys {
        std::fs::rename(&keys, &old).map_err(|e| KernelError::io(&keys, e))?;
    }
    match crate::model::write_dir_atomically(&keys, &files, false) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&old);
            Ok(index)
        }
        Err(e) => {
            if had_keys {
                let _ = std::fs::rename(&old, &keys);
            }
            Err(e)
        }
    }
}

/// The key index of a model directory, checked against the model.
#[derive(Clone, Debug)]
pub struct ModelKeys {
    dir: PathBuf,
    pub index: KeyIndex,
}

impl ModelKeys {
    pub fn open(dir: &Path, model: &Model) -> Result<ModelKeys> {
        let keys = dir.join(KEYS_DIR);
        let path = keys.join(INDEX_FILE);
        let missing = || KernelError::MissingKeys {
            segment: 0,
            dir: dir.to_path_buf(),
        };
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(),
            _ => KernelError::io(&path, e),
        })?;
        let index: KeyIndex = serde_json::from_slice(&bytes).map_err(|e| {
            KernelError::model(
                &path,
                format!("unreadable key index ({e}): run `provnet model setup` again"),
            )
        })?;
        if index.model_id != hex(&model.id()) {
            return Err(KernelError::model(
                &path,
                "these keys were made for a different model: run `provnet model setup` again",
            ));
        }
        if index.segments.len() != model.segments.len()
            || index.segments.iter().enumerate().any(|(i, e)| e.index != i)
        {
            return Err(KernelError::model(
                &path,
                "key index does not list every segment",
            ));
        }
        Ok(ModelKeys { dir: keys, index })
    }

    fn entry(&self, segment: usize) -> Result<&KeyEntry> {
        self.index
            .segments
            .get(segment)
            .ok_or(KernelError::NoSuchSegment {
                segment,
                count: self.index.segments.len(),
            })
    }

    fn read(&self, segment: usize, file: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(file);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KernelError::MissingKeys {
                segment,
                dir: self.dir.parent().unwrap_or(&self.dir).to_path_buf(),
            },
            _ => KernelError::io(&path, e),
        })
    }

    /// Reads a key file and checks it against its pinned hash.
    fn read_pinned(&self, segment: usize, file: &str, hash: &str) -> Result<Vec<u8>> {
        let bytes = self.read(segment, file)?;
        if hex(blake3::Hasher::new()
            .update_rayon(&bytes)
            .finalize()
            .as_bytes())
            != hash
        {
            return Err(KernelError::BadKeys {
                segment,
                reason: format!(
                    "{file} does not match its pinned hash: the file is corrupt or was replaced; \
                     run `provnet model setup` again"
                ),
            });
        }
        Ok(bytes)
    }

    /// Loads a proving key and its h table: hash-pinned, deserialized without curve checks.
    pub fn proving_key(&self, segment: usize) -> Result<SegmentKey> {
        let entry = self.entry(segment)?;
        let bad = |reason: String| KernelError::BadKeys { segment, reason };
        let (pk, table) = rayon::join(
            || -> Result<ProvingKey<Bn254>> {
                let bytes = self.read_pinned(segment, &entry.pk_file, &entry.pk_blake3)?;
                ProvingKey::deserialize_uncompressed_unchecked(bytes.as_slice())
                    .map_err(|e| bad(format!("{}: {e}", entry.pk_file)))
            },
            || -> Result<FixedBaseTable> {
                let bytes =
                    self.read_pinned(segment, &entry.h_table_file, &entry.h_table_blake3)?;
                msm::table_from_bytes(&bytes)
                    .ok_or_else(|| bad(format!("{}: malformed table", entry.h_table_file)))
            },
        );
        let (pk, h_table) = (pk?, table?);
        if h_table.bases != pk.h_query.len() {
            return Err(bad("the h table does not match the proving key".into()));
        }
        Ok(SegmentKey { pk, h_table })
    }

    /// The vk id the index pins for a segment (what a prover stamps into its proofs; the
    /// verifier checks it against the key it loads).
    pub fn vk_id(&self, segment: usize) -> Result<[u8; 32]> {
        let entry = self.entry(segment)?;
        crate::import::unhex32(&entry.vk_id).ok_or_else(|| KernelError::BadKeys {
            segment,
            reason: "the key index holds a malformed vk id".into(),
        })
    }

    /// The id of the verifying key embedded in a proving key: what its proofs verify under.
    pub fn embedded_vk_id(pk: &ProvingKey<Bn254>) -> [u8; 32] {
        let mut vk_bytes = Vec::new();
        pk.vk
            .serialize_compressed(&mut vk_bytes)
            .expect("serializing to memory cannot fail");
        *blake3::hash(&vk_bytes).as_bytes()
    }

    /// Loads and fully checks a verifying key; returns it with its id.
    pub fn verifying_key(&self, segment: usize) -> Result<(VerifyingKey<Bn254>, [u8; 32])> {
        let entry = self.entry(segment)?;
        let bytes = self.read(segment, &entry.vk_file)?;
        let id = *blake3::hash(&bytes).as_bytes();
        let bad = |reason: String| KernelError::BadKeys { segment, reason };
        if hex(&id) != entry.vk_id {
            return Err(bad(format!("{} does not match its vk id", entry.vk_file)));
        }
        let vk = VerifyingKey::deserialize_compressed(bytes.as_slice())
            .map_err(|e| bad(format!("{}: {e}", entry.vk_file)))?;
        if vk.gamma_abc_g1.len() != entry.public_inputs + 1 {
            return Err(bad(
                "verifying key has the wrong number of public inputs".into()
            ));
        }
        Ok((vk, id))
    }
}
