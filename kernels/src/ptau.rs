//! Phase 1 input: snarkjs `.ptau` files (powers of tau over BN254), the format of the public
//! Perpetual Powers of Tau and of `snarkjs powersoftau`.
//!
//! The file is a binary container: `"ptau"`, a version (1), a section count, then sections of
//! (type u32, size u64, bytes), all little-endian. Field elements are 32 bytes, little-endian,
//! in Montgomery form (arkworks' own representation, R = 2^256); a G1 point is x then y, a G2
//! point x.c0, x.c1, y.c0, y.c1; the point at infinity is all zeros. Sections, for a file of
//! power p:
//!
//! | type | holds | points |
//! |---|---|---|
//! | 1 | header: n8 = 32, the base field's modulus, p, the ceremony's power | |
//! | 2 | [τ^i]₁ | 2^(p+1) - 1 |
//! | 3 | [τ^i]₂ | 2^p |
//! | 4, 5 | [α τ^i]₁, [β τ^i]₁ | 2^p each |
//! | 6 | [β]₂ | 1 |
//! | 7 | the contributions (not read here) | |
//! | 12 | [L_i(τ)]₁ over domains 2^0 .. 2^(p+1), one after another | 2^(p+2) - 1 |
//! | 13, 14, 15 | [L_i(τ)]₂, [α L_i(τ)]₁, [β L_i(τ)]₁ over 2^0 .. 2^p | 2^(p+1) - 1 each |
//!
//! Sections 12-15 are what `snarkjs powersoftau prepare phase2` adds. [`Ptau`] reads the
//! header and the section table only, then reads the points a caller asks for, straight from
//! their offsets (a public file of power 28 is over 100 GB; a circuit needs a few of its
//! powers). Every point read is checked: coordinates below the modulus, on the curve, and for
//! G2 in the prime-order subgroup.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ff::{BigInt, BigInteger, PrimeField, Zero};

use crate::error::{KernelError, Result};

const G1_BYTES: u64 = 64;
const G2_BYTES: u64 = 128;
/// The most sections a file may declare (snarkjs writes at most 15).
const MAX_SECTIONS: u32 = 64;
/// The largest power a BN254 file can have: the scalar field's two-adicity is 28.
pub const MAX_POWER: u32 = 28;

/// The sections of a `.ptau` file that hold points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    TauG1 = 2,
    TauG2 = 3,
    AlphaTauG1 = 4,
    BetaTauG1 = 5,
    BetaG2 = 6,
    LagrangeG1 = 12,
    LagrangeG2 = 13,
    LagrangeAlphaG1 = 14,
    LagrangeBetaG1 = 15,
}

impl Section {
    fn g2(self) -> bool {
        matches!(self, Section::TauG2 | Section::BetaG2 | Section::LagrangeG2)
    }

    /// The section's size for a file of power p.
    fn expected_bytes(self, p: u32) -> u64 {
        let n = 1u64 << p;
        let points = match self {
            Section::TauG1 => 2 * n - 1,
            Section::TauG2 | Section::AlphaTauG1 | Section::BetaTauG1 => n,
            Section::BetaG2 => 1,
            Section::LagrangeG1 => 4 * n - 1,
            Section::LagrangeG2 | Section::LagrangeAlphaG1 | Section::LagrangeBetaG1 => 2 * n - 1,
        };
        points * if self.g2() { G2_BYTES } else { G1_BYTES }
    }

    const ALL: [Section; 9] = [
        Section::TauG1,
        Section::TauG2,
        Section::AlphaTauG1,
        Section::BetaTauG1,
        Section::BetaG2,
        Section::LagrangeG1,
        Section::LagrangeG2,
        Section::LagrangeAlphaG1,
        Section::LagrangeBetaG1,
    ];
}

/// An open `.ptau` file: its header and section table; points are read on demand.
#[derive(Debug)]
pub struct Ptau {
    path: PathBuf,
    file: File,
    power: u32,
    ceremony_power: u32,
    /// Section type -> (offset of its bytes, size).
    sections: HashMap<u32, (u64, u64)>,
}

impl Ptau {
    /// Opens a file and checks its header and section table (not its points).
    pub fn open(path: &Path) -> Result<Ptau> {
        let bad = |reason: String| KernelError::Ptau {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| KernelError::io(path, e))?;
        let len = file.metadata().map_err(|e| KernelError::io(path, e))?.len();
        let mut head = [0u8; 12];
        file.read_exact(&mut head)
            .map_err(|_| bad("shorter than a ptau header".into()))?;
        if &head[..4] != b"ptau" {
            return Err(bad(
                "not a snarkjs .ptau file (it does not start with \"ptau\")".into(),
            ));
        }
        let version = u32_le(&head[4..8]);
        if version != 1 {
            return Err(bad(format!("format version {version} (expected 1)")));
        }
        let count = u32_le(&head[8..12]);
        if count > MAX_SECTIONS {
            return Err(bad(format!("{count} sections (at most {MAX_SECTIONS})")));
        }
        let mut sections = HashMap::new();
        let mut at = 12u64;
        for _ in 0..count {
            let mut sh = [0u8; 12];
            file.seek(SeekFrom::Start(at))
                .and_then(|_| file.read_exact(&mut sh))
                .map_err(|_| bad(format!("truncated: a section header at byte {at}")))?;
            let (kind, size) = (u32_le(&sh[..4]), u64_le(&sh[4..]));
            let start = at + 12;
            let end = start
                .checked_add(size)
                .filter(|e| *e <= len)
                .ok_or_else(|| {
                    bad(format!(
                        "truncated: section {kind} declares {size} bytes at byte {start}, \
                         past the end ({len} bytes)"
                    ))
                })?;
            if sections.insert(kind, (start, size)).is_some() {
                return Err(bad(format!("section {kind} appears twice")));
            }
            at = end;
        }
        let &(h_at, h_size) = sections
            .get(&1)
            .ok_or_else(|| bad("no header section".into()))?;
        let mut header = vec![0u8; h_size.min(256) as usize];
        file.seek(SeekFrom::Start(h_at))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(|e| KernelError::io(path, e))?;
        if header.len() < 44 || u32_le(&header[..4]) != 32 {
            return Err(bad("the header is not for a 32-byte field".into()));
        }
        let modulus = Fq::MODULUS.to_bytes_le();
        if header[4..36] != modulus[..] {
            return Err(bad("the header's field is not BN254's".into()));
        }
        let power = u32_le(&header[36..40]);
        let ceremony_power = u32_le(&header[40..44]);
        if power == 0 || power > MAX_POWER {
            return Err(bad(format!("power {power} (expected 1 to {MAX_POWER})")));
        }
        for s in Section::ALL {
            if let Some(&(_, size)) = sections.get(&(s as u32)) {
                let want = s.expected_bytes(power);
                if size != want {
                    return Err(bad(format!(
                        "section {} ({s:?}) has {size} bytes, {want} expected for power {power}",
                        s as u32
                    )));
                }
            } else if (s as u32) < 7 {
                return Err(bad(format!("section {} ({s:?}) is missing", s as u32)));
            }
        }
        Ok(Ptau {
            path: path.to_path_buf(),
            file,
            power,
            ceremony_power,
            sections,
        })
    }

    /// The file's power p: it serves circuits whose FFT domain is at most 2^p.
    pub fn power(&self) -> u32 {
        self.power
    }

    /// The power the ceremony was run at (a file may be cut down from a larger one).
    pub fn ceremony_power(&self) -> u32 {
        self.ceremony_power
    }

    /// Whether `snarkjs powersoftau prepare phase2` has added the Lagrange sections.
    pub fn prepared(&self) -> bool {
        [12u32, 13, 14, 15]
            .iter()
            .all(|s| self.sections.contains_key(s))
    }

    /// Checks that the file serves a circuit whose FFT domain has `domain` points.
    pub fn require_domain(&self, domain: usize) -> Result<()> {
        let k = domain.next_power_of_two().trailing_zeros();
        if k > self.power {
            return Err(self.bad(format!(
                "a circuit with an FFT domain of 2^{k} needs a file of power {k} or more; this \
                 one has power {}: bring a larger one (a Perpetual Powers of Tau file of power \
                 {k} or above, prepared with `snarkjs powersoftau prepare phase2`)",
                self.power
            )));
        }
        if !self.prepared() {
            return Err(self.bad(
                "not prepared for phase 2 (no Lagrange sections): run `snarkjs powersoftau \
                 prepare phase2` on it"
                    .into(),
            ));
        }
        Ok(())
    }

    fn bad(&self, reason: String) -> KernelError {
        KernelError::Ptau {
            path: self.path.clone(),
            reason,
        }
    }

    /// `count` points of a G1 section, from `skip` points into it.
    fn g1(&mut self, s: Section, skip: u64, count: usize) -> Result<Vec<G1Affine>> {
        self.points(s, (skip, count), G1_BYTES, g1_point)
    }

    fn g2(&mut self, s: Section, skip: u64, count: usize) -> Result<Vec<G2Affine>> {
        self.points(s, (skip, count), G2_BYTES, g2_point)
    }

    /// `count` points of `width` bytes each, parsed and checked by `parse`.
    fn points<T>(
        &mut self,
        s: Section,
        (skip, count): (u64, usize),
        width: u64,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<Vec<T>> {
        let bytes = self.read(s, skip, count as u64, width)?;
        bytes
            .chunks_exact(width as usize)
            .enumerate()
            .map(|(i, c)| {
                parse(c)
                    .map_err(|r| self.bad(format!("section {s:?} point {}: {r}", skip + i as u64)))
            })
            .collect()
    }

    fn read(&mut self, s: Section, skip: u64, count: u64, width: u64) -> Result<Vec<u8>> {
        let &(at, size) = self.sections.get(&(s as u32)).ok_or_else(|| {
            self.bad(format!(
                "section {} ({s:?}) is missing: is the file prepared for phase 2?",
                s as u32
            ))
        })?;
        if (skip + count) * width > size {
            return Err(self.bad(format!(
                "section {s:?} holds {} points, {} asked for",
                size / width,
                skip + count
            )));
        }
        let mut buf = vec![0u8; (count * width) as usize];
        let path = self.path.clone();
        self.file
            .seek(SeekFrom::Start(at + skip * width))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| KernelError::io(path, e))?;
        Ok(buf)
    }

    /// [τ^i]₁ for i in 0..n (n <= 2^(p+1) - 1).
    pub fn tau_g1(&mut self, n: usize) -> Result<Vec<G1Affine>> {
        self.g1(Section::TauG1, 0, n)
    }

    /// [τ^i]₂ for i in 0..n (n <= 2^p).
    pub fn tau_g2(&mut self, n: usize) -> Result<Vec<G2Affine>> {
        self.g2(Section::TauG2, 0, n)
    }

    /// [α τ^i]₁ for i in 0..n.
    pub fn alpha_tau_g1(&mut self, n: usize) -> Result<Vec<G1Affine>> {
        self.g1(Section::AlphaTauG1, 0, n)
    }

    /// [β τ^i]₁ for i in 0..n.
    pub fn beta_tau_g1(&mut self, n: usize) -> Result<Vec<G1Affine>> {
        self.g1(Section::BetaTauG1, 0, n)
    }

    /// [β]₂.
    pub fn beta_g2(&mut self) -> Result<G2Affine> {
        Ok(self.g2(Section::BetaG2, 0, 1)?[0])
    }

    /// The Lagrange basis of the domain of 2^k points, [L_i(τ)]₁ (k <= p + 1).
    pub fn lagrange_g1(&mut self, k: u32) -> Result<Vec<G1Affine>> {
        self.lagrange_limit(k, self.power + 1)?;
        self.g1(Section::LagrangeG1, (1 << k) - 1, 1 << k)
    }

    /// [L_i(τ)]₂ over 2^k points (k <= p).
    pub fn lagrange_g2(&mut self, k: u32) -> Result<Vec<G2Affine>> {
        self.lagrange_limit(k, self.power)?;
        self.g2(Section::LagrangeG2, (1 << k) - 1, 1 << k)
    }

    /// [α L_i(τ)]₁ over 2^k points (k <= p).
    pub fn lagrange_alpha_g1(&mut self, k: u32) -> Result<Vec<G1Affine>> {
        self.lagrange_limit(k, self.power)?;
        self.g1(Section::LagrangeAlphaG1, (1 << k) - 1, 1 << k)
    }

    /// [β L_i(τ)]₁ over 2^k points (k <= p).
    pub fn lagrange_beta_g1(&mut self, k: u32) -> Result<Vec<G1Affine>> {
        self.lagrange_limit(k, self.power)?;
        self.g1(Section::LagrangeBetaG1, (1 << k) - 1, 1 << k)
    }

    fn lagrange_limit(&self, k: u32, max: u32) -> Result<()> {
        if k > max {
            return Err(self.bad(format!(
                "a Lagrange basis of 2^{k} points needs a file of power {} or more; this one \
                 has power {}",
                k - (max - self.power),
                self.power
            )));
        }
        Ok(())
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A base field element from 32 little-endian bytes in Montgomery form.
fn fq(b: &[u8]) -> Result<Fq, String> {
    let limbs: [u64; 4] = std::array::from_fn(|i| u64_le(&b[8 * i..8 * i + 8]));
    let repr = BigInt(limbs);
    if repr >= Fq::MODULUS {
        return Err("a coordinate is not below the field's modulus".into());
    }
    Ok(Fq::new_unchecked(repr))
}

fn g1_point(b: &[u8]) -> Result<G1Affine, String> {
    let (x, y) = (fq(&b[..32])?, fq(&b[32..64])?);
    if x.is_zero() && y.is_zero() {
        return Ok(G1Affine::identity());
    }
    let p = G1Affine::new_unchecked(x, y);
    if !p.is_on_curve() {
        return Err("not on the curve".into());
    }
    Ok(p)
}

fn g2_point(b: &[u8]) -> Result<G2Affine, String> {
    let x = Fq2::new(fq(&b[..32])?, fq(&b[32..64])?);
    let y = Fq2::new(fq(&b[64..96])?, fq(&b[96..128])?);
    if x.is_zero() && y.is_zero() {
        return Ok(G2Affine::identity());
    }
    let p = G2Affine::new_unchecked(x, y);
    if !p.is_on_curve() {
        return Err("not on the curve".into());
    }
    if !p.is_in_correct_subgroup_assuming_on_curve() {
        return Err("not in the prime-order subgroup".into());
    }
    Ok(p)
}
