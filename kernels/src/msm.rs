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

/// `points[i * windows + j] = 2^(c * j) * bases[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedBaseTable {
    pub c: u32,
    pub windows: u32,
    pub bases: usize,
    pub points: Vec<G1Affine>,
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
            points: G1Projective::normalize_batch(&proj),
        }
    }

    /// The bases themselves: every point's first window.
    pub fn plain_bases(&self) -> Vec<G1Affine> {
        self.points
            .iter()
            .step_by(self.windows.max(1) as usize)
            .copied()
            .collect()
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
            .map(|(k, part)| self.msm_serial(k * chunk, part))
            .reduce(G1Projective::zero, |a, b| a + b))
    }

    fn msm_serial(&self, first: usize, scalars: &[Fr]) -> G1Projective {
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
            let row = &self.points[(first + k) * w..(first + k + 1) * w];
            let mut carry = 0u64;
            for (j, p) in row.iter().enumerate() {
                let raw = window(&limbs, j as u32 * c, mask) + carry;
                let (digit, neg) = if raw > half {
                    carry = 1;
                    ((1u64 << c) - raw, true)
                } else {
                    carry = 0;
                    (raw, false)
                };
                if digit != 0 && !p.is_zero() {
                    let point = if neg { -*p } else { *p };
                    acc.push((digit - 1) as u32, point);
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
    dens: Vec<Fq>,
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
            dens: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Adds directly when no field inversion is needed, else joins the batch.
    fn push(&mut self, b: u32, p: G1Affine) {
        let i = b as usize;
        if self.busy[i] || self.limit < MIN_BATCH {
            self.over[i] += p;
            return;
        }
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

    fn flush(&mut self) {
        self.dens.clear();
        self.dens.extend(
            self.batch
                .iter()
                .map(|(b, p)| p.x - self.acc[*b as usize].x),
        );
        ark_ff::batch_inversion(&mut self.dens);
        for ((b, p), inv) in self.batch.drain(..).zip(&self.dens) {
            let i = b as usize;
            let q = self.acc[i];
            let l = (p.y - q.y) * inv;
            let x3 = l.square() - q.x - p.x;
            let y3 = l * (q.x - x3) - q.y;
            self.acc[i] = G1Affine::new_unchecked(x3, y3);
            self.busy[i] = false;
        }
    }

    /// Drains pending work, then sum_k (k + 1) * bucket[k].
    fn finish(mut self) -> G1Projective {
        self.flush();
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
    let mut out = Vec::with_capacity(TABLE_HEADER + t.points.len() * raw::G1_BYTES);
    for v in [t.c, t.windows, t.bases as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for p in &t.points {
        raw::g1_to(&mut out, p);
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
    let body = bytes.get(TABLE_HEADER..)?;
    let (c, windows, bases) = table_header(bytes, body.len())?;
    let points = body
        .par_chunks_exact(raw::G1_BYTES)
        .map(raw::g1_from)
        .collect();
    Some(FixedBaseTable {
        c,
        windows,
        bases,
        points,
    })
}

/// Reads a table file straight into memory ([`raw::read_points`]); `Err` says why not.
pub fn table_from_file(path: &std::path::Path) -> std::result::Result<FixedBaseTable, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len() as usize;
    let mut head = [0u8; TABLE_HEADER];
    f.read_exact(&mut head)
        .map_err(|_| "malformed table".to_string())?;
    let (c, windows, bases) = table_header(&head, len.saturating_sub(TABLE_HEADER))
        .ok_or_else(|| "malformed table".to_string())?;
    let n = bases * windows as usize;
    let points = raw::read_points(
        path,
        TABLE_HEADER as u64,
        n,
        raw::G1_BYTES,
        G1Affine::identity(),
        raw::g1_from,
    )
    .map_err(|e| e.to_string())?;
    Ok(FixedBaseTable {
        c,
        windows,
        bases,
        points,
    })
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
