//! Curve points in their in-memory form on disk, and reading them back fast.
//!
//! A point is stored as its coordinates' Montgomery-form limbs, little-endian u64s: G1 as x
//! then y (64 bytes), G2 as x.c0, x.c1, y.c0, y.c1 (128 bytes). The point at infinity is all
//! zeros, which is not on either curve. Reading one back is a copy: no field arithmetic,
//! no curve check; key files are pinned by their hash instead.
//!
//! [`read_points`] reads a run of points from a file straight into the vector the prover
//! uses, on every core, a chunk at a time: no copy of the whole file is ever held, so a
//! key of tens of megabytes loads in about the time it takes to write its points once.
//! [`Mapping`] does better for points only our own code reads (the h tables): the file is
//! mapped, not read, and its points are decoded where they lie as the MSM reaches them,
//! so loading copies and zeroes nothing and costs no more than opening the file.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInt, Zero};
use rayon::prelude::*;

pub const G1_BYTES: usize = 64;
pub const G2_BYTES: usize = 128;

/// Bytes read per task.
const CHUNK_BYTES: usize = 256 * 1024;

fn limbs(b: &[u8], k: usize) -> [u64; 4] {
    let limb = |i: usize| {
        let at = (k * 4 + i) * 8;
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    };
    [limb(0), limb(1), limb(2), limb(3)]
}

fn fq(b: &[u8], k: usize) -> Fq {
    Fq::new_unchecked(BigInt(limbs(b, k)))
}

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

pub fn g1_from(b: &[u8]) -> G1Affine {
    let (x, y) = (fq(b, 0), fq(b, 1));
    if x.is_zero() && y.is_zero() {
        G1Affine::identity()
    } else {
        G1Affine::new_unchecked(x, y)
    }
}

pub fn g2_to(out: &mut Vec<u8>, p: &G2Affine) {
    let (x, y) = p.xy().unwrap_or_default();
    for f in [&x.c0, &x.c1, &y.c0, &y.c1] {
        put(out, f);
    }
}

pub fn g2_from(b: &[u8]) -> G2Affine {
    let x = Fq2::new(fq(b, 0), fq(b, 1));
    let y = Fq2::new(fq(b, 2), fq(b, 3));
    if x.is_zero() && y.is_zero() {
        G2Affine::identity()
    } else {
        G2Affine::new_unchecked(x, y)
    }
}

/// Reads `count` points of `size` bytes each, starting `offset` bytes into `path`, each
/// turned into a point by `from`. The vector is filled in place on every core (so its
/// pages are first touched in parallel, which is most of the cost): each task opens the
/// file for itself and reads the run of points it fills a chunk at a time, into a buffer
/// it reuses.
pub fn read_points<P: Copy + Send + Sync>(
    path: &Path,
    offset: u64,
    count: usize,
    size: usize,
    blank: P,
    from: fn(&[u8]) -> P,
) -> std::io::Result<Vec<P>> {
    let per_chunk = (CHUNK_BYTES / size).max(1);
    let failed = std::sync::Mutex::new(None::<std::io::Error>);
    let mut points = Vec::with_capacity(count);
    advise_huge_pages(&points);
    points.par_extend((0..count).into_par_iter().with_min_len(per_chunk).map_init(
        || Reader {
            file: None,
            buf: Vec::new(),
            first: 0,
            len: 0,
        },
        |r, i| {
            if i < r.first || i >= r.first + r.len {
                let len = per_chunk.min(count - i);
                if let Err(e) = r.fill(path, offset, i, len, size) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    r.len = 0;
                    return blank;
                }
            }
            let at = (i - r.first) * size;
            from(&r.buf[at..at + size])
        },
    ));
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(points),
    }
}

/// Asks the kernel to back `v`'s allocation with 2 MB pages where it can (transparent huge
/// pages in `madvise` mode, the common default). Filling a fresh vector is mostly page
/// faults, one per 4 KB page, each zeroing its page first; with huge pages a 50 MB key takes
/// 25 faults instead of 12,800. Only the allocation's whole 2 MB-aligned stretches are
/// advised; the contents are untouched, and a kernel without the feature just ignores it.
#[allow(unsafe_code)]
fn advise_huge_pages<P>(v: &Vec<P>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<P>();
        let (from, to) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if to > from {
            // SAFETY: [from, to) lies inside `v`'s own live allocation, and MADV_HUGEPAGE
            // only changes how the kernel backs those pages, never what they hold.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
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

/// The G1 point at byte `at` of `b`, in the form [`g1_to`] writes (one bounds check, then
/// plain loads: the MSM's inner loop decodes every table point it uses this way).
#[inline]
pub fn g1_at(b: &[u8], at: usize) -> G1Affine {
    let p: &[u8; G1_BYTES] = b[at..at + G1_BYTES].try_into().expect("64 bytes");
    let limb = |i: usize| {
        let mut l = [0u8; 8];
        l.copy_from_slice(&p[i * 8..i * 8 + 8]);
        u64::from_le_bytes(l)
    };
    let x = [limb(0), limb(1), limb(2), limb(3)];
    let y = [limb(4), limb(5), limb(6), limb(7)];
    if x == [0; 4] && y == [0; 4] {
        G1Affine::identity()
    } else {
        G1Affine::new_unchecked(Fq::new_unchecked(BigInt(x)), Fq::new_unchecked(BigInt(y)))
    }
}

/// One task's view of the file: the run of points it read last.
struct Reader {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    first: usize,
    len: usize,
}

impl Reader {
    fn fill(
        &mut self,
        path: &Path,
        offset: u64,
        first: usize,
        len: usize,
        size: usize,
    ) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::open(path)?),
        };
        self.buf.resize(len * size, 0);
        file.seek(SeekFrom::Start(offset + (first * size) as u64))?;
        file.read_exact(&mut self.buf)?;
        (self.first, self.len) = (first, len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::UniformRand;
    use ark_std::rand::SeedableRng;

    #[test]
    fn points_round_trip_through_a_file_in_chunks() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut g1: Vec<G1Affine> = (0..9000).map(|_| G1Affine::rand(&mut rng)).collect();
        g1[17] = G1Affine::identity();
        let g2: Vec<G2Affine> = (0..300).map(|_| G2Affine::rand(&mut rng)).collect();
        let mut bytes = vec![0xAB; 5]; // a header to skip
        g1.iter().for_each(|p| g1_to(&mut bytes, p));
        g2.iter().for_each(|p| g2_to(&mut bytes, p));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("points");
        std::fs::write(&path, &bytes).expect("write");
        let back =
            read_points(&path, 5, g1.len(), G1_BYTES, G1Affine::identity(), g1_from).expect("read");
        assert_eq!(back, g1);
        let at = 5 + (g1.len() * G1_BYTES) as u64;
        let back2 = read_points(&path, at, g2.len(), G2_BYTES, G2Affine::identity(), g2_from)
            .expect("read");
        assert_eq!(back2, g2);
        // Past the end of the file: an error, not a short read.
        assert!(read_points(
            &path,
            at,
            g2.len() + 1,
            G2_BYTES,
            G2Affine::identity(),
            g2_from
        )
        .is_err());
    }
}
