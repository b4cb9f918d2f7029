//! Groth16 keys per segment: single-party development setup, on-disk cache, loading.
//!
//! Proving keys and their h tables are stored as points in their raw form ([`crate::raw`]:
//! Montgomery limbs) and mapped, not read: the MSMs decode each point where it lies, with
//! no curve checks, no field arithmetic and no copy, so loading a key costs about as much
//! as opening its files. They are pinned by their blake3 hash in `keys/index.json` (checking every point
//! would cost more than a proof). The hash itself is checked once per file: `keys/
//! checked.json` records each file's length and modification time when its hash last
//! matched, and a file that has not changed since is not hashed again (a file replaced or
//! rewritten is). Soundness rests on the verifying key, which is small: it is loaded with
//! full checks every time and named by its hash, the vk id. The h query is not in the
//! proving key file: the h table's first window is it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ark_bn254::{Bn254, G1Affine, G2Affine};
use ark_groth16::{Groth16, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_std::rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::circuit::{self, CircuitShape};
use crate::error::{KernelError, Result};
use crate::import::hex;
use crate::model::{Model, Staged};
use crate::msm::{self, FixedBaseTable};
use crate::r1cs::{Mode, Replay};
use crate::raw::{self, Points};

/// Threads the h-table window is tuned for (the 2-core machines we target).
pub(crate) const PROVER_THREADS: usize = 2;

pub const KEYS_DIR: &str = "keys";
pub const INDEX_FILE: &str = "index.json";
/// Files whose pinned hash was checked, with their length and modification time then.
pub const CHECKED_FILE: &str = "checked.json";
/// The proving key file's first bytes.
const PK_MAGIC: &[u8; 16] = b"provnet-pk/raw/1";
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

/// A segment's proving key with its precomputed h-query table (the key's own `h_query`
/// is empty: the table's first window holds it). Loaded from its files, the key's query
/// vectors are empty too: their points stay in the mapped key file and the MSMs read them
/// there (see the query accessors).
pub struct SegmentKey {
    pub pk: ProvingKey<Bn254>,
    pub h_table: FixedBaseTable,
    mapped: Option<MappedQueries>,
}

/// A mapped proving key file and where its queries lie in it.
struct MappedQueries {
    file: raw::Mapping,
    a: Range<usize>,
    b_g1: Range<usize>,
    b_g2: Range<usize>,
    l: Range<usize>,
}

impl SegmentKey {
    /// A key held in memory (as setup or a ceremony makes it).
    pub fn in_memory(pk: ProvingKey<Bn254>, h_table: FixedBaseTable) -> SegmentKey {
        SegmentKey {
            pk,
            h_table,
            mapped: None,
        }
    }

    fn g1<'a>(
        &'a self,
        mem: &'a [G1Affine],
        pick: fn(&MappedQueries) -> &Range<usize>,
    ) -> Points<'a, G1Affine> {
        match &self.mapped {
            Some(m) => Points::Raw(&m.file.bytes()[pick(m).clone()]),
            None => Points::Slice(mem),
        }
    }

    pub fn a_query(&self) -> Points<'_, G1Affine> {
        self.g1(&self.pk.a_query, |m| &m.a)
    }

    pub fn b_g1_query(&self) -> Points<'_, G1Affine> {
        self.g1(&self.pk.b_g1_query, |m| &m.b_g1)
    }

    pub fn l_query(&self) -> Points<'_, G1Affine> {
        self.g1(&self.pk.l_query, |m| &m.l)
    }

    pub fn b_g2_query(&self) -> Points<'_, G2Affine> {
        match &self.mapped {
            Some(m) => Points::Raw(&m.file.bytes()[m.b_g2.clone()]),
            None => Points::Slice(&self.pk.b_g2_query),
        }
    }
}

/// Runs setup for every segment and writes `DIR/keys/` atomically (replacing old keys).
/// Each segment's key is written as soon as it is made, so a model's keys never need to
/// fit in memory together.
pub fn setup<R: RngCore + CryptoRng>(dir: &Path, model: &Model, rng: &mut R) -> Result<KeyIndex> {
    let keys = model.segments.iter().map(|seg| {
        let start = std::time::Instant::now();
        let cs = circuit::synthesize(seg, Mode::Setup, Default::default(), None);
        let pk = Groth16::<Bn254>::generate_random_parameters_with_reduction(Replay(cs), rng)
            .map_err(|e| KernelError::BadKeys {
                segment: seg.index,
                reason: format!("setup failed: {e}"),
            })?;
        Ok((pk, start.elapsed().as_millis() as u64))
    });
    install_each(
        dir,
        model,
        keys,
        "single-party development setup",
        DEV_SETUP_WARNING,
    )
}

/// Writes one proving key per segment (with its h query) to `DIR/keys/` atomically,
/// replacing old keys: the key files, the h tables the prover precomputes, the verifying
/// keys and the index, which records where the keys came from (`ceremony`) and what to
/// trust (`warning`). `setup_ms` is how long each key took to make.
pub fn install(
    dir: &Path,
    model: &Model,
    keys: Vec<(ProvingKey<Bn254>, u64)>,
    ceremony: &str,
    warning: &str,
) -> Result<KeyIndex> {
    if keys.len() != model.segments.len() {
        return Err(KernelError::model(
            dir,
            format!("{} keys for {} segments", keys.len(), model.segments.len()),
        ));
    }
    install_each(dir, model, keys.into_iter().map(Ok), ceremony, warning)
}

/// [`install`] from keys made one at a time, in segment order: each is written (and
/// dropped) before the next is made. The first error stops it and nothing is installed.
pub fn install_each(
    dir: &Path,
    model: &Model,
    keys: impl IntoIterator<Item = Result<(ProvingKey<Bn254>, u64)>>,
    ceremony: &str,
    warning: &str,
) -> Result<KeyIndex> {
    let keys_dir = dir.join(KEYS_DIR);
    let staged = Staged::new(&keys_dir, true)?;
    let mut entries = Vec::new();
    let mut keys = keys.into_iter();
    for seg in &model.segments {
        let (pk, ms) = keys.next().ok_or_else(|| {
            KernelError::model(
                dir,
                format!("{} keys for {} segments", seg.index, model.segments.len()),
            )
        })??;
        let start = std::time::Instant::now();
        let shape = CircuitShape::of(seg);
        if pk.vk.gamma_abc_g1.len() != shape.public_inputs + 1
            || pk.h_query.len() + 1 != shape.domain()
        {
            return Err(KernelError::BadKeys {
                segment: seg.index,
                reason: "the key does not fit this segment's circuit".into(),
            });
        }
        let c = FixedBaseTable::best_window(pk.h_query.len(), PROVER_THREADS);
        let table_bytes = msm::table_to_bytes(&FixedBaseTable::new(&pk.h_query, c));
        let setup_ms = ms + start.elapsed().as_millis() as u64;
        let pk_bytes = pk_to_bytes(&pk);
        let mut vk_bytes = Vec::new();
        pk.vk
            .serialize_compressed(&mut vk_bytes)
            .expect("serializing to memory cannot fail");
        drop(pk);
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
        staged.write(Path::new(&h_file), &table_bytes)?;
        staged.write(Path::new(&pk_file), &pk_bytes)?;
        staged.write(Path::new(&vk_file), &vk_bytes)?;
    }
    if keys.next().is_some() {
        return Err(KernelError::model(
            dir,
            format!(
                "more keys than the model's {} segments",
                model.segments.len()
            ),
        ));
    }
    let index = KeyIndex {
        model_id: hex(&model.id()),
        ceremony: ceremony.into(),
        warning: warning.into(),
        segments: entries,
    };
    staged.write(
        Path::new(INDEX_FILE),
        &serde_json::to_vec_pretty(&index).expect("index serializes"),
    )?;
    let old = dir.join(format!(".keys.old-{}", std::process::id()));
    let had_keys = keys_dir.exists();
    if had_keys {
        std::fs::rename(&keys_dir, &old).map_err(|e| KernelError::io(&keys_dir, e))?;
    }
    match staged.commit() {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&old);
            Ok(index)
        }
        Err(e) => {
            if had_keys {
                let _ = std::fs::rename(&old, &keys_dir);
            }
            Err(e)
        }
    }
}

/// `keys/checked.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checked {
    files: std::collections::BTreeMap<String, CheckedFile>,
}

/// A key file as it was when its hash last matched the pinned one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CheckedFile {
    len: u64,
    modified_ns: u128,
    blake3: String,
}

impl CheckedFile {
    fn of(meta: &std::fs::Metadata, hash: &str) -> CheckedFile {
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        CheckedFile {
            len: meta.len(),
            modified_ns,
            blake3: hash.to_string(),
        }
    }
}

/// A proving key as its file holds it: [`PK_MAGIC`], the embedded verifying key
/// (uncompressed, length-prefixed), beta and delta in G1, the lengths of the a, b (G1), b
/// (G2) and l queries (u64 LE), then their points in their in-memory form
/// ([`crate::raw`]). The h query is left out: the h table holds it.
pub fn pk_to_bytes(pk: &ProvingKey<Bn254>) -> Vec<u8> {
    let mut vk = Vec::new();
    pk.vk
        .serialize_uncompressed(&mut vk)
        .expect("serializing to memory cannot fail");
    let mut out = PK_MAGIC.to_vec();
    out.extend_from_slice(&(vk.len() as u32).to_le_bytes());
    out.extend_from_slice(&vk);
    raw::g1_to(&mut out, &pk.beta_g1);
    raw::g1_to(&mut out, &pk.delta_g1);
    for n in [
        pk.a_query.len(),
        pk.b_g1_query.len(),
        pk.b_g2_query.len(),
        pk.l_query.len(),
    ] {
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    for p in pk.a_query.iter().chain(&pk.b_g1_query) {
        raw::g1_to(&mut out, p);
    }
    for p in &pk.b_g2_query {
        raw::g2_to(&mut out, p);
    }
    for p in &pk.l_query {
        raw::g1_to(&mut out, p);
    }
    out
}

/// A proving key file's parts: the small ones decoded, the queries as byte ranges of the
/// file ([`pk_to_bytes`]'s layout).
struct PkFile {
    vk: VerifyingKey<Bn254>,
    beta_g1: G1Affine,
    delta_g1: G1Affine,
    a: Range<usize>,
    b_g1: Range<usize>,
    b_g2: Range<usize>,
    l: Range<usize>,
}

/// Parses a proving key file's framing; `Err` says what is wrong with it.
fn pk_parse(bytes: &[u8]) -> std::result::Result<PkFile, String> {
    let len = bytes.len();
    let head = bytes
        .get(..20)
        .ok_or_else(|| "too short for a proving key".to_string())?;
    if &head[..16] != PK_MAGIC {
        return Err(
            "not a proving key file of this version: run `provnet model setup` again".into(),
        );
    }
    let vk_len = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
    let malformed = || "malformed proving key".to_string();
    let fixed = 20usize.checked_add(vk_len).ok_or_else(malformed)?;
    let rest = bytes
        .get(fixed..fixed + 2 * raw::G1_BYTES + 32)
        .ok_or_else(malformed)?;
    let vk = VerifyingKey::<Bn254>::deserialize_uncompressed_unchecked(&bytes[20..fixed])
        .map_err(|e| format!("its verifying key: {e}"))?;
    let beta_g1 = raw::g1_from(&rest[..raw::G1_BYTES]);
    let delta_g1 = raw::g1_from(&rest[raw::G1_BYTES..2 * raw::G1_BYTES]);
    let count = |i: usize| {
        let at = 2 * raw::G1_BYTES + i * 8;
        u64::from_le_bytes(rest[at..at + 8].try_into().expect("8 bytes"))
    };
    let body = fixed + 2 * raw::G1_BYTES + 32;
    // Each query's byte range, checked against overflow and the file's length.
    let mut at = body;
    let mut next = |n: u64, size: usize| -> Option<Range<usize>> {
        let end = usize::try_from(n)
            .ok()?
            .checked_mul(size)?
            .checked_add(at)?;
        let r = at..end;
        at = end;
        Some(r)
    };
    let sized = (|| {
        let a = next(count(0), raw::G1_BYTES)?;
        let b_g1 = next(count(1), raw::G1_BYTES)?;
        let b_g2 = next(count(2), raw::G2_BYTES)?;
        let l = next(count(3), raw::G1_BYTES)?;
        Some((a, b_g1, b_g2, l))
    })();
    match sized {
        Some((a, b_g1, b_g2, l)) if l.end == len => Ok(PkFile {
            vk,
            beta_g1,
            delta_g1,
            a,
            b_g1,
            b_g2,
            l,
        }),
        _ => Err(format!("{len} bytes, not the size its header says")),
    }
}

/// Reads a proving key file ([`pk_to_bytes`]) whole; `Err` says what is wrong with it.
/// (The prover maps the file instead: [`ModelKeys::proving_key`].)
pub fn pk_from_file(path: &Path) -> std::result::Result<ProvingKey<Bn254>, String> {
    let m = raw::Mapping::open(path).map_err(|e| e.to_string())?;
    let b = m.bytes();
    let f = pk_parse(b)?;
    Ok(ProvingKey {
        vk: f.vk,
        beta_g1: f.beta_g1,
        delta_g1: f.delta_g1,
        a_query: Points::<G1Affine>::Raw(&b[f.a]).to_vec(),
        b_g1_query: Points::<G1Affine>::Raw(&b[f.b_g1]).to_vec(),
        b_g2_query: Points::<G2Affine>::Raw(&b[f.b_g2]).to_vec(),
        h_query: Vec::new(),
        l_query: Points::<G1Affine>::Raw(&b[f.l]).to_vec(),
    })
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

    /// Checks key files against their pinned hashes: those `checked.json` says were
    /// checked and have not changed since are not read; the others are read, hashed and,
    /// when they match, recorded there (if the directory is writable).
    fn check_pinned(&self, segment: usize, files: &[(&str, &str)]) -> Result<()> {
        let checked_path = self.dir.join(CHECKED_FILE);
        let mut checked: Checked = std::fs::read(&checked_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut changed = false;
        for (file, hash) in files {
            let path = self.dir.join(file);
            let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => KernelError::MissingKeys {
                    segment,
                    dir: self.dir.parent().unwrap_or(&self.dir).to_path_buf(),
                },
                _ => KernelError::io(&path, e),
            })?;
            let now = CheckedFile::of(&meta, hash);
            if checked.files.get(*file) == Some(&now) {
                continue;
            }
            let bytes = self.read(segment, file)?;
            if hex(blake3::Hasher::new()
                .update_rayon(&bytes)
                .finalize()
                .as_bytes())
                != *hash
            {
                return Err(KernelError::BadKeys {
                    segment,
                    reason: format!(
                        "{file} does not match its pinned hash: the file is corrupt or was replaced; \
                         run `provnet model setup` again"
                    ),
                });
            }
            checked.files.insert(file.to_string(), now);
            changed = true;
        }
        if changed {
            // Best effort: a read-only key directory just hashes again next time.
            let tmp = self
                .dir
                .join(format!(".{CHECKED_FILE}.{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&checked).expect("serializes");
            if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &checked_path).is_err()
            {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(())
    }

    /// Loads a proving key and its h table: hash-pinned, read straight into place.
    pub fn proving_key(&self, segment: usize) -> Result<SegmentKey> {
        let entry = self.entry(segment)?;
        let bad = |reason: String| KernelError::BadKeys { segment, reason };
        self.check_pinned(
            segment,
            &[
                (&entry.pk_file, &entry.pk_blake3),
                (&entry.h_table_file, &entry.h_table_blake3),
            ],
        )?;
        let (pk_path, table_path) = (
            self.dir.join(&entry.pk_file),
            self.dir.join(&entry.h_table_file),
        );
        let file =
            raw::Mapping::open(&pk_path).map_err(|e| bad(format!("{}: {e}", entry.pk_file)))?;
        let f = pk_parse(file.bytes()).map_err(|e| bad(format!("{}: {e}", entry.pk_file)))?;
        let h_table = msm::table_from_file(&table_path)
            .map_err(|e| bad(format!("{}: {e}", entry.h_table_file)))?;
        if f.vk.gamma_abc_g1.len() != entry.public_inputs + 1 {
            return Err(bad("the proving key does not match its index entry".into()));
        }
        let pk = ProvingKey {
            vk: f.vk,
            beta_g1: f.beta_g1,
            delta_g1: f.delta_g1,
            a_query: Vec::new(),
            b_g1_query: Vec::new(),
            b_g2_query: Vec::new(),
            h_query: Vec::new(),
            l_query: Vec::new(),
        };
        Ok(SegmentKey {
            pk,
            h_table,
            mapped: Some(MappedQueries {
                file,
                a: f.a,
                b_g1: f.b_g1,
                b_g2: f.b_g2,
                l: f.l,
            }),
        })
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
