//! Fixed-base multi-scalar multiplication with precomputed window tables and batch-affine
//! bucket accumulation.
//!
//! For bases known ahead of time (the proving key's h query, a verifying key's public-input
//! bases) we precompute `2^(c*j) * P_i` for every window j, so all windows share one set of
//! buckets: n * W additions and a single bucket reduction, with no doublings. Bucket
//! additions are done in affine coordinates in batches that share one field inversion
//! (Montgomery's trick), about 6 multiplications per addition instead of the ~11 of a
//! projective mixed addition.

use ark_bn254::{Fq, Fr, G1Affine, G1Projective};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{AdditiveGroup, BigInt, Field, PrimeField, Zero};
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::raw;

/// Additions per batched inversion.
const BATCH: usize = 512;
/// Below this many additions per inversion, batching costs more than it saves.
const MIN_BATCH: usize = 32;
/// Scalar bits covered (BN254's r < 2^254; one more bit absorbs the signed-digit carry).
const SCALAR_BITS: u32 = 255;

/// `point(i * windows + j) = 2^(c * j) * bases[i]`.
pub struct FixedBaseTable {
    pub c: u32,
    pub windows: u32,
    pub bases: usize,
    points: Storage,
}

/// Where a table's points live: built in memory, or a table file's bytes (mapped, see
/// [`raw::Mapping`]) decoded point by point as the MSM reads them, so a proving process
/// never copies its h table.
enum Storage {
    Affine(Vec<G1Affine>),
    Raw(raw::Mapping),
}

impl std::fmt::Debug for FixedBaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBaseTable")
            .field("c", &self.c)
            .field("windows", &self.windows)
            .field("bases", &self.bases)
            .field(
                "points",
                &match self.points {
                    Storage::Affine(_) => "in memory",
                    Storage::Raw(_) => "mapped",
                },
            )
            .finish()
    }
}

impl PartialEq for FixedBaseTable {
    fn eq(&self, o: &Self) -> bool {
        (self.c, self.windows, self.bases) == (o.c, o.windows, o.bases)
            && self.len() == o.len()
            && (0..self.len()).all(|i| self.point(i) == o.point(i))
    }
}

impl FixedBaseTable {
    /// Window size that minimises the estimated cost for `n` bases on `threads` threads: n*W
    /// affine additions split over the threads, plus 2^c projective additions per thread to
    /// reduce the buckets (a projective addition costs about 2.7 affine ones).
    pub fn best_window(n: usize, threads: usize) -> u32 {
        (4..=16u32)
            .min_by_key(|c| {
                let w = SCALAR_BITS.div_ceil(*c) as usize;
                (n * w) / threads.max(1) * 10 + (1usize << c) * 27
            })
            .unwrap_or(8)
    }

    pub fn new(bases: &[G1Affine], c: u32) -> Self {
        let windows = SCALAR_BITS.div_ceil(c);
        let proj: Vec<G1Projective> = bases
            .par_iter()
            .flat_map_iter(|b| {
                let mut p = b.into_group();
                (0..windows).map(move |_| {
                    let cur = p;
                    for _ in 0..c {
                        p.double_in_place();
                    }
                    cur
                })
            })
            .collect();
        FixedBaseTable {
            c,
            windows,
            bases: bases.len(),
            points: Storage::Affine(G1Projective::normalize_batch(&proj)),
        }
    }

    /// How many points the table holds (bases × windows).
    pub fn len(&self) -> usize {
        self.bases * self.windows as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Point `i` (`i < len()`): `2^(c * (i % windows)) * bases[i / windows]`.
    pub fn point(&self, i: usize) -> G1Affine {
        match &self.points {
            Storage::Affine(v) => v[i],
            Storage::Raw(m) => raw::Points::Raw(&m.bytes()[TABLE_HEADER..]).get(i),
        }
    }

    /// The address the points live at, for caches keyed by it (the GPU's resident bases).
    pub fn addr(&self) -> usize {
        match &self.points {
            Storage::Affine(v) => v.as_ptr() as usize,
            Storage::Raw(m) => m.bytes().as_ptr() as usize,
        }
    }

    /// The bases themselves: every point's first window.
    pub fn plain_bases(&self) -> Vec<G1Affine> {
        let w = self.windows as usize;
        (0..self.bases).map(|i| self.point(i * w)).collect()
    }

    /// sum_i scalars[i] * bases[i]; scalars past the table's bases are an error.
    pub fn msm(&self, scalars: &[Fr]) -> Result<G1Projective> {
        if scalars.len() > self.bases {
            return Err(KernelError::Backend {
                backend: "cpu".into(),
                reason: format!(
                    "{} scalars for a table of {} bases",
                    scalars.len(),
                    self.bases
                ),
            });
        }
        let threads = rayon::current_num_threads().max(1);
        let chunk = scalars.len().div_ceil(threads).max(1);
        Ok(scalars
            .par_chunks(chunk)
            .enumerate()
            .map(|(k, part)| match &self.points {
                Storage::Affine(v) => self.msm_serial(k * chunk, part, |i| v[i]),
                Storage::Raw(m) => {
                    let points = raw::Points::<G1Affine>::Raw(&m.bytes()[TABLE_HEADER..]);
                    self.msm_serial(k * chunk, part, |i| points.get(i))
                }
            })
            .reduce(G1Projective::zero, |a, b| a + b))
    }

    /// sum_k scalars[k] * bases[first + k], one thread, over points fetched by `point` (one
    /// copy per point storage).
    #[inline(always)]
    fn msm_serial(
        &self,
        first: usize,
        scalars: &[Fr],
        point: impl Fn(usize) -> G1Affine,
    ) -> G1Projective {
        let c = self.c;
        let w = self.windows as usize;
        let half = 1u64 << (c - 1);
        let mask = (1u64 << c) - 1;
        let mut acc = Buckets::new(half as usize);
        for (k, s) in scalars.iter().enumerate() {
            if s.is_zero() {
                continue;
            }
            let limbs = s.into_bigint();
            let row = (first + k) * w;
            let mut carry = 0u64;
            for j in 0..w {
                let raw = window(&limbs, j as u32 * c, mask) + carry;
                let (digit, neg) = if raw > half {
                    carry = 1;
                    ((1u64 << c) - raw, true)
                } else {
                    carry = 0;
                    (raw, false)
                };
                if digit != 0 {
                    let p = point(row + j);
                    if !p.is_zero() {
                        acc.push((digit - 1) as u32, if neg { -p } else { p });
                    }
                }
            }
        }
        acc.finish()
    }
}

/// Bits [offset, offset + c) of a little-endian 4-limb integer.
fn window(limbs: &BigInt<4>, offset: u32, mask: u64) -> u64 {
    let (limb, shift) = ((offset / 64) as usize, offset % 64);
    if limb >= 4 {
        return 0;
    }
    let mut v = limbs.0[limb] >> shift;
    if shift > 0 && limb + 1 < 4 {
        v |= limbs.0[limb + 1] << (64 - shift);
    }
    v & mask
}

/// Affine buckets filled by batched additions. An addition to a bucket that already has one
/// in flight goes to that bucket's projective overflow instead of waiting: no rescans, and
/// with the batch at most a quarter of the buckets, few take that slower path.
struct Buckets {
    acc: Vec<G1Affine>,
    over: Vec<G1Projective>,
    busy: Vec<bool>,
    batch: Vec<(u32, G1Affine)>,
    /// Additions that found their bucket busy, retried once after the next flush.
    waiting: Vec<(u32, G1Affine)>,
    dens: Vec<Fq>,
    prods: Vec<Fq>,
    limit: usize,
}

impl Buckets {
    fn new(n: usize) -> Self {
        let limit = (n / 4).clamp(1, BATCH);
        Buckets {
            acc: vec![G1Affine::identity(); n],
            over: vec![G1Projective::zero(); n],
            busy: vec![false; n],
            batch: Vec::with_capacity(limit),
            waiting: Vec::with_capacity(limit),
            dens: Vec::with_capacity(limit),
            prods: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Adds directly when no field inversion is needed, else joins the batch. An addition
    /// to a bucket already in the batch waits for the next flush (up to a batch of them),
    /// then goes to the projective overflow.
    fn push(&mut self, b: u32, p: G1Affine) {
        let i = b as usize;
        if self.busy[i] || self.limit < MIN_BATCH {
            if self.waiting.len() < self.limit && self.limit >= MIN_BATCH {
                self.waiting.push((b, p));
            } else {
                self.over[i] += p;
            }
            return;
        }
        self.push_free(b, p);
    }

    /// [`Self::push`] for a bucket known not to be busy.
    fn push_free(&mut self, b: u32, p: G1Affine) {
        let i = b as usize;
        let q = self.acc[i];
        if q.is_zero() {
            self.acc[i] = p;
        } else if q.x == p.x {
            self.acc[i] = if q.y == p.y {
                q.into_group().double().into_affine()
            } else {
                G1Affine::identity()
            };
        } else {
            self.busy[i] = true;
            self.batch.push((b, p));
            if self.batch.len() >= self.limit {
                self.flush();
            }
        }
    }

    /// Adds every batched point to its bucket with one field inversion (Montgomery's trick,
    /// serial: this runs inside one thread's share of the MSM, and a parallel batch
    /// inversion there would split each batch's single inversion in two and schedule tasks
    /// for it).
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // dens[k] = x_p - x_q (non-zero: push sends equal x elsewhere); prods[k] = their
        // running product.
        self.dens.clear();
        self.prods.clear();
        let mut run = Fq::ONE;
        for (b, p) in &self.batch {
            let d = p.x - self.acc[*b as usize].x;
            run *= d;
            self.dens.push(d);
            self.prods.push(run);
        }
        let mut inv = run
            .inverse()
            .expect("x coordinates differ in every batched addition");
        for k in (0..self.batch.len()).rev() {
            // inv = 1 / (dens[0] ... dens[k]) here.
            let d_inv = if k == 0 { inv } else { inv * self.prods[k - 1] };
            inv *= self.dens[k];
            let (b, p) = self.batch[k];
            let i = b as usize;
            let q = self.acc[i];
            let l = (p.y - q.y) * d_inv;
            let x3 = l.square() - q.x - p.x;
            let y3 = l * (q.x - x3) - q.y;
            self.acc[i] = G1Affine::new_unchecked(x3, y3);
            self.busy[i] = false;
        }
        self.batch.clear();
        // Retry the waiting additions once: those that collide again overflow.
        let waiting = std::mem::take(&mut self.waiting);
        for &(b, p) in &waiting {
            if self.busy[b as usize] {
                self.over[b as usize] += p;
            } else {
                self.push_free(b, p);
            }
        }
        self.waiting = waiting;
        self.waiting.clear();
    }

    /// Drains pending work, then sum_k (k + 1) * bucket[k].
    fn finish(mut self) -> G1Projective {
        // A flush's retried additions can start a new batch: flush until none is left.
        while !self.batch.is_empty() {
            self.flush();
        }
        let mut running = G1Projective::zero();
        let mut total = G1Projective::zero();
        for (q, o) in self.acc.iter().zip(&self.over).rev() {
            running += q;
            running += o;
            total += running;
        }
        total
    }
}

/// Raw on-disk form: header (c, windows, bases as u32 LE), then every point in its
/// in-memory form ([`crate::raw`]). Loading does no field arithmetic; the file is pinned by
/// hash.
pub fn table_to_bytes(t: &FixedBaseTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(TABLE_HEADER + t.len() * raw::G1_BYTES);
    for v in [t.c, t.windows, t.bases as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..t.len() {
        raw::g1_to(&mut out, &t.point(i));
    }
    out
}

const TABLE_HEADER: usize = 12;

/// (c, windows, bases) from a table's header, if it describes a body of `body` bytes.
fn table_header(head: &[u8], body: usize) -> Option<(u32, u32, usize)> {
    let u32_at = |i: usize| {
        head.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (c, windows, bases) = (u32_at(0)?, u32_at(4)?, u32_at(8)? as usize);
    let ok = (1..=20).contains(&c)
        && windows == SCALAR_BITS.div_ceil(c)
        && body
            == bases
                .checked_mul(windows as usize)?
                .checked_mul(raw::G1_BYTES)?;
    ok.then_some((c, windows, bases))
}

pub fn table_from_bytes(bytes: &[u8]) -> Option<FixedBaseTable> {
    table_from_mapping(raw::Mapping::from_vec(bytes.to_vec()))
}

/// A table over a table file's bytes, if its header describes them.
fn table_from_mapping(m: raw::Mapping) -> Option<FixedBaseTable> {
    let bytes = m.bytes();
    let (c, windows, bases) = table_header(bytes, bytes.len().checked_sub(TABLE_HEADER)?)?;
    Some(FixedBaseTable {
        c,
        windows,
        bases,
        points: Storage::Raw(m),
    })
}

/// Maps a table file ([`raw::Mapping`]): nothing is read until the MSM reads it. `Err`
/// says why not.
pub fn table_from_file(path: &std::path::Path) -> std::result::Result<FixedBaseTable, String> {
    let m = raw::Mapping::open(path).map_err(|e| e.to_string())?;
    table_from_mapping(m).ok_or_else(|| "malformed table".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ec::VariableBaseMSM;
    use ark_ff::UniformRand;
    use ark_std::rand::SeedableRng;

    fn check(bases: &[G1Affine], scalars: &[Fr], c: u32) {
        let t = FixedBaseTable::new(bases, c);
        let want = G1Projective::msm(&bases[..scalars.len()], scalars).unwrap();
        assert_eq!(t.msm(scalars).unwrap(), want, "c = {c}");
        assert_eq!(t.plain_bases(), bases);
        let bytes = table_to_bytes(&t);
        assert_eq!(table_from_bytes(&bytes).unwrap(), t);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), &bytes).unwrap();
        assert_eq!(table_from_file(&dir.path().join("t")).unwrap(), t);
    }

    #[test]
    fn matches_arkworks_on_random_and_edge_scalars() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let g = G1Affine::generator();
        let mut bases: Vec<G1Affine> = (0..700).map(|_| G1Affine::rand(&mut rng)).collect();
        // Repeated bases, a negated base and the identity exercise doubling and cancellation.
        bases[1] = bases[0];
        bases[2] = -bases[0];
        bases[3] = G1Affine::identity();
        bases[4] = g;
        let mut scalars: Vec<Fr> = (0..700).map(|_| Fr::rand(&mut rng)).collect();
        scalars[0] = scalars[1];
        scalars[5] = Fr::zero();
        scalars[6] = -Fr::from(1u64);
        scalars[7] = Fr::from(1u64);
        for c in [3, 8, 11] {
            check(&bases, &scalars, c);
        }
        // Many equal scalars on equal bases: every addition collides in one bucket.
        let same = vec![g; 600];
        check(&same, &vec![Fr::from(5u64); 600], 4);
        // Fewer scalars than bases.
        check(&bases, &scalars[..10], 6);
        // Wide windows, batched: one digit for every scalar sends each addition to the same
        // bucket (the waiting list fills, its retries overflow), and random scalars on one
        // repeated base collide at random.
        let distinct: Vec<G1Affine> = (0..3000).map(|_| G1Affine::rand(&mut rng)).collect();
        check(&distinct, &vec![Fr::from(5u64); 3000], 11);
        let many: Vec<Fr> = (0..3000).map(|_| Fr::rand(&mut rng)).collect();
        check(&vec![g; 3000], &many, 11);
    }

    #[test]
    fn corrupt_tables_are_refused() {
        let t = FixedBaseTable::new(&[G1Affine::generator()], 8);
        let mut b = table_to_bytes(&t);
        b.pop();
        assert!(table_from_bytes(&b).is_none());
        assert!(table_from_bytes(&[1, 2, 3]).is_none());
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("short", &b[..]), ("tiny", &[1, 2, 3][..])] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            assert!(table_from_file(&dir.path().join(name)).is_err(), "{name}");
        }
    }
}
