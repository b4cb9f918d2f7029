//! Curve points in their in-memory form on disk, and using them where they lie.
//!
//! A point is stored as its coordinates' Montgomery-form limbs, little-endian u64s: G1 as x
//! then y (64 bytes), G2 as x.c0, x.c1, y.c0, y.c1 (128 bytes). The point at infinity is all
//! zeros, which is not on either curve. Decoding one is a few loads: no field arithmetic,
//! no curve check; key files are pinned by their hash instead.
//!
//! Key files are mapped ([`Mapping`]), not read: a proving process hands the MSMs the
//! mapped bytes as [`Points`], and each point is decoded where it lies as the MSM reaches
//! it, so loading a key copies, converts and zeroes nothing. Mapping a file is the one
//! `unsafe` outside the GPU FFI module (its SAFETY notes say why it holds).

use std::io::Read;
use std::path::Path;

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::BigInt;
use rayon::prelude::*;

pub const G1_BYTES: usize = 64;
pub const G2_BYTES: usize = 128;

fn put(out: &mut Vec<u8>, f: &Fq) {
    for l in f.0 .0 {
        out.extend_from_slice(&l.to_le_bytes());
    }
}

pub fn g1_to(out: &mut Vec<u8>, p: &G1Affine) {
    let (x, y) = p.xy().unwrap_or_default();
    put(out, &x);
    put(out, &y);
}

/// The G1 point `b` starts with.
pub fn g1_from(b: &[u8]) -> G1Affine {
    g1_at(b, 0)
}

pub fn g2_to(out: &mut Vec<u8>, p: &G2Affine) {
    let (x, y) = p.xy().unwrap_or_default();
    for f in [&x.c0, &x.c1, &y.c0, &y.c1] {
        put(out, f);
    }
}

/// The G2 point `b` starts with.
pub fn g2_from(b: &[u8]) -> G2Affine {
    g2_at(b, 0)
}

/// A file's bytes, mapped read-only into memory (a plain read where mapping is not
/// available). The kernel serves the pages from its page cache as they are first touched:
/// no allocation, no copy, no zeroing.
///
/// Key files are never rewritten in place (setup writes a new directory and renames it
/// over the old one), so the mapped file keeps its contents while it is mapped; truncating
/// a mapped file from outside would fault the process, as with any mapped file.
pub struct Mapping {
    bytes: Bytes,
}

enum Bytes {
    #[cfg(unix)]
    Mapped {
        ptr: *const u8,
        len: usize,
    },
    Heap(Vec<u8>),
}

// SAFETY: the mapping is read-only and owned by this value; shared reads from any thread
// are reads of immutable memory.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `path` whole.
    #[allow(unsafe_code)]
    pub fn open(path: &Path) -> std::io::Result<Mapping> {
        let file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        #[cfg(unix)]
        if len > 0 {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only private mapping of an open file, of its length; the
            // result is checked before use and unmapped exactly once, in Drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                return Ok(Mapping {
                    bytes: Bytes::Mapped {
                        ptr: ptr as *const u8,
                        len,
                    },
                });
            }
        }
        let mut buf = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        Ok(Mapping {
            bytes: Bytes::Heap(buf),
        })
    }

    /// Bytes already in memory (tables built in this process).
    pub fn from_vec(v: Vec<u8>) -> Mapping {
        Mapping {
            bytes: Bytes::Heap(v),
        }
    }

    #[allow(unsafe_code)]
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            #[cfg(unix)]
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
            Bytes::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Bytes::Heap(v) => v,
        }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Bytes::Mapped { ptr, len } = self.bytes {
            // SAFETY: unmaps the mapping made in `open`, once; no borrow of it outlives self.
            unsafe {
                libc::munmap(ptr as *mut libc::c_void, len);
            }
        }
    }
}

/// The `N` little-endian u64 limbs at byte `at` of `b` (one bounds check, then plain loads:
/// MSM inner loops decode every point they use this way).
#[inline(always)]
fn limbs_at<const N: usize>(b: &[u8], at: usize) -> [[u64; 4]; N] {
    let p = &b[at..at + N * 32];
    let mut out = [[0u64; 4]; N];
    for (k, f) in out.iter_mut().enumerate() {
        for (i, l) in f.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&p[(k * 4 + i) * 8..(k * 4 + i) * 8 + 8]);
            *l = u64::from_le_bytes(w);
        }
    }
    out
}

fn fq_of(l: [u64; 4]) -> Fq {
    Fq::new_unchecked(BigInt(l))
}

/// The G1 point at byte `at` of `b`, in the form [`g1_to`] writes.
#[inline]
pub fn g1_at(b: &[u8], at: usize) -> G1Affine {
    let [x, y] = limbs_at::<2>(b, at);
    if x == [0; 4] && y == [0; 4] {
        G1Affine::identity()
    } else {
        G1Affine::new_unchecked(fq_of(x), fq_of(y))
    }
}

/// The G2 point at byte `at` of `b`, in the form [`g2_to`] writes.
#[inline]
pub fn g2_at(b: &[u8], at: usize) -> G2Affine {
    let l = limbs_at::<4>(b, at);
    if l.iter().all(|f| *f == [0; 4]) {
        G2Affine::identity()
    } else {
        G2Affine::new_unchecked(
            Fq2::new(fq_of(l[0]), fq_of(l[1])),
            Fq2::new(fq_of(l[2]), fq_of(l[3])),
        )
    }
}

/// A point type with a raw form.
pub trait RawPoint: Copy + Send + Sync {
    const BYTES: usize;
    fn at(b: &[u8], at: usize) -> Self;
}

// (Named by their curve configs: through the pairing's aliases the two types look alike to
// the coherence check.)
impl RawPoint for ark_ec::short_weierstrass::Affine<ark_bn254::g1::Config> {
    const BYTES: usize = G1_BYTES;
    fn at(b: &[u8], at: usize) -> Self {
        g1_at(b, at)
    }
}

impl RawPoint for ark_ec::short_weierstrass::Affine<ark_bn254::g2::Config> {
    const BYTES: usize = G2_BYTES;
    fn at(b: &[u8], at: usize) -> Self {
        g2_at(b, at)
    }
}

/// A run of MSM bases: points in memory, or in their raw form where they lie (a mapped key
/// file), decoded one by one as they are used.
#[derive(Clone, Copy, Debug)]
pub enum Points<'a, P> {
    Slice(&'a [P]),
    Raw(&'a [u8]),
}

impl<P: RawPoint> Points<'_, P> {
    pub fn len(&self) -> usize {
        match self {
            Points::Slice(s) => s.len(),
            Points::Raw(b) => b.len() / P::BYTES,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Point `i` (< len()).
    #[inline(always)]
    pub fn get(&self, i: usize) -> P {
        match self {
            Points::Slice(s) => s[i],
            Points::Raw(b) => P::at(b, i * P::BYTES),
        }
    }

    /// Where the points live (for caches keyed by it, such as the GPU's resident bases).
    pub fn addr(&self) -> usize {
        match self {
            Points::Slice(s) => s.as_ptr() as usize,
            Points::Raw(b) => b.as_ptr() as usize,
        }
    }

    /// `f` over the points as a slice: theirs, or a decoded copy where they are raw.
    pub fn with_slice<T>(&self, f: impl FnOnce(&[P]) -> T) -> T {
        match self {
            Points::Slice(s) => f(s),
            Points::Raw(_) => f(&self.to_vec()),
        }
    }

    /// The points as a vector (a copy, decoded in parallel where raw).
    pub fn to_vec(&self) -> Vec<P> {
        match self {
            Points::Slice(s) => s.to_vec(),
            Points::Raw(_) => (0..self.len())
                .into_par_iter()
                .map(|i| self.get(i))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::UniformRand;
    use ark_std::rand::SeedableRng;

    #[test]
    fn points_round_trip_through_a_mapped_file() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut g1: Vec<G1Affine> = (0..9000).map(|_| G1Affine::rand(&mut rng)).collect();
        g1[17] = G1Affine::identity();
        let mut g2: Vec<G2Affine> = (0..300).map(|_| G2Affine::rand(&mut rng)).collect();
        g2[5] = G2Affine::identity();
        let mut bytes = vec![0xAB; 5]; // a header to skip: the points are unaligned
        g1.iter().for_each(|p| g1_to(&mut bytes, p));
        g2.iter().for_each(|p| g2_to(&mut bytes, p));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("points");
        std::fs::write(&path, &bytes).expect("write");
        let m = Mapping::open(&path).expect("map");
        assert_eq!(m.bytes(), &bytes[..]);
        let at = 5 + g1.len() * G1_BYTES;
        let p1 = Points::<G1Affine>::Raw(&m.bytes()[5..at]);
        let p2 = Points::<G2Affine>::Raw(&m.bytes()[at..]);
        assert_eq!((p1.len(), p2.len()), (g1.len(), g2.len()));
        assert_eq!(p1.to_vec(), g1);
        assert_eq!(p2.to_vec(), g2);
        assert_eq!(p1.get(17), G1Affine::identity());
        assert_eq!(Points::Slice(&g2).get(7), g2[7]);
        assert_eq!(g1_from(&bytes[5..5 + G1_BYTES]), g1[0]);
        assert_eq!(g2_from(&bytes[at..at + G2_BYTES]), g2[0]);
        // An empty file maps to no bytes; a missing one is an error.
        std::fs::write(dir.path().join("empty"), b"").expect("write");
        assert!(Mapping::open(&dir.path().join("empty"))
            .expect("map")
            .bytes()
            .is_empty());
        assert!(Mapping::open(&dir.path().join("missing")).is_err());
    }
}
