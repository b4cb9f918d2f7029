//! Host side of the GPU kernels, free of CUDA: how points and scalars are laid out in device
//! buffers, the launch geometry of an MSM, the NTT tables, and turning the kernels' XYZZ
//! results back into arkworks points. The CUDA backend and the emulation tests share it.

use ark_bn254::{Fq, Fq2, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{BigInt, FftField, Field, One, Zero};
use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
use rayon::prelude::*;

use crate::error::{KernelError, Result};

/// Words (u64) per affine G1 point: x, y.
pub const G1_WORDS: usize = 8;
/// Words per affine G2 point: x.c0, x.c1, y.c0, y.c1.
pub const G2_WORDS: usize = 16;
/// Words per Fr element.
pub const FR_WORDS: usize = 4;

/// The launch geometry of one MSM, as `msm.cu` expects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsmPlan {
    pub n: u32,
    /// Window width in bits.
    pub c: u32,
    /// Signed-digit windows: 253 / c + 1 (scalars are folded below r/2 < 2^253).
    pub windows: u32,
    /// Buckets per window: 2^(c-1).
    pub nb: u32,
    /// Buckets per chunk of the offset scan.
    pub scan_chunk: u32,
    /// Sorted entries per accumulation thread.
    pub k: u32,
    /// Segments per window in the bucket reduction.
    pub segs: u32,
}

impl MsmPlan {
    pub fn new(n: usize) -> Result<MsmPlan> {
        let n32 = u32::try_from(n)
            .ok()
            .filter(|n| *n < (1 << 31))
            .ok_or_else(|| KernelError::Backend {
                backend: "cuda".into(),
                reason: format!("an MSM of {n} points is beyond the GPU kernels' 2^31"),
            })?;
        let log = usize::BITS - n.max(1).leading_zeros();
        Ok(MsmPlan::with_window(
            n32,
            log.saturating_sub(4).clamp(4, 16),
        ))
    }

    pub fn with_window(n: u32, c: u32) -> MsmPlan {
        let nb = 1u32 << (c - 1);
        MsmPlan {
            n,
            c,
            windows: 253 / c + 1,
            nb,
            scan_chunk: nb.min(256),
            k: 32,
            segs: nb.min(64),
        }
    }

    pub fn scan_chunks(&self) -> u32 {
        self.nb / self.scan_chunk
    }

    /// Threads of the accumulation pass.
    pub fn acc_threads(&self) -> u64 {
        (self.windows as u64 * self.n as u64).div_ceil(self.k as u64)
    }
}

fn limbs(f: &Fq) -> [u64; 4] {
    f.0 .0
}

fn words<T: Sync, const W: usize>(items: &[T], f: impl Fn(&T) -> [u64; W] + Sync) -> Vec<u64> {
    let mut out = vec![0u64; items.len() * W];
    out.par_chunks_mut(W)
        .zip(items.par_iter())
        .for_each(|(o, it)| o.copy_from_slice(&f(it)));
    out
}

/// Affine G1 points as device words (Montgomery limbs; infinity as all zeros).
pub fn g1_words(points: &[G1Affine]) -> Vec<u64> {
    words::<_, G1_WORDS>(points, |p| {
        let mut w = [0u64; G1_WORDS];
        if !p.is_zero() {
            w[..4].copy_from_slice(&limbs(&p.x));
            w[4..].copy_from_slice(&limbs(&p.y));
        }
        w
    })
}

/// Affine G2 points as device words.
pub fn g2_words(points: &[G2Affine]) -> Vec<u64> {
    words::<_, G2_WORDS>(points, |p| {
        let mut w = [0u64; G2_WORDS];
        if !p.is_zero() {
            for (i, f) in [p.x.c0, p.x.c1, p.y.c0, p.y.c1].iter().enumerate() {
                w[i * 4..i * 4 + 4].copy_from_slice(&limbs(f));
            }
        }
        w
    })
}

/// Fr elements as device words (Montgomery limbs, as arkworks keeps them).
pub fn fr_words(v: &[Fr]) -> Vec<u64> {
    words::<_, FR_WORDS>(v, |f| f.0 .0)
}

pub fn fr_from_words(w: &[u64]) -> Vec<Fr> {
    w.par_chunks_exact(FR_WORDS)
        .map(|c| Fr::new_unchecked(BigInt([c[0], c[1], c[2], c[3]])))
        .collect()
}

fn fq(w: &[u64]) -> Fq {
    Fq::new_unchecked(BigInt([w[0], w[1], w[2], w[3]]))
}

fn off_curve(what: &str) -> KernelError {
    KernelError::Backend {
        backend: "cuda".into(),
        reason: format!("the GPU returned a {what} point off the curve: a kernel bug"),
    }
}

/// x = X / ZZ, y = Y / ZZZ, checked to be on the curve (ZZ = 0 is the identity).
fn from_xyzz<P: SWCurveConfig>(
    [x, y, zz, zzz]: [P::BaseField; 4],
    what: &str,
) -> Result<Projective<P>> {
    if zz.is_zero() {
        return Ok(Projective::<P>::zero());
    }
    let (zi, zzzi) = (zz.inverse(), zzz.inverse());
    let p = Affine::<P>::new_unchecked(x * zi.unwrap_or_default(), y * zzzi.unwrap_or_default());
    if zzzi.is_none() || !p.is_on_curve() {
        return Err(off_curve(what));
    }
    Ok(p.into_group())
}

/// An XYZZ G1 point (16 words: X, Y, ZZ, ZZZ) from the kernels, checked to be on the curve.
pub fn g1_from_xyzz(w: &[u64]) -> Result<G1Projective> {
    from_xyzz(
        [fq(&w[0..4]), fq(&w[4..8]), fq(&w[8..12]), fq(&w[12..16])],
        "G1",
    )
}

/// An XYZZ G2 point (32 words) from the kernels, checked to be on the curve.
pub fn g2_from_xyzz(w: &[u64]) -> Result<G2Projective> {
    let f2 = |i: usize| Fq2::new(fq(&w[i * 8..i * 8 + 4]), fq(&w[i * 8 + 4..i * 8 + 8]));
    from_xyzz([f2(0), f2(1), f2(2), f2(3)], "G2")
}

/// sum_j 2^(c*j) * window[j] + sum(extra): the last step of an MSM, on the host.
pub fn combine<G: CurveGroup>(window_sums: &[G], extra: &[G], c: u32) -> G {
    let mut acc = G::zero();
    for w in window_sums.iter().rev() {
        for _ in 0..c {
            acc.double_in_place();
        }
        acc += w;
    }
    extra.iter().fold(acc, |a, e| a + e)
}

/// Per-size tables for the quotient's transforms, as device words.
pub struct NttTables {
    pub log_n: u32,
    /// w^k, k < n/2 (forward) and w^-k (inverse).
    pub tw_fwd: Vec<u64>,
    pub tw_inv: Vec<u64>,
    /// n^-1 * g^i: after an inverse transform, moves coefficients onto the coset g*H.
    pub scale_in: Vec<u64>,
    /// n^-1 * g^-i: after the last inverse transform, takes the coset off again.
    pub scale_out: Vec<u64>,
    /// 1 / Z_H(g).
    pub z_inv: Vec<u64>,
}

impl NttTables {
    pub fn new(log_n: u32) -> Result<NttTables> {
        let n = 1usize << log_n;
        let domain = Radix2EvaluationDomain::<Fr>::new(n)
            .filter(|d| d.size() == n)
            .ok_or_else(|| KernelError::Backend {
                backend: "cuda".into(),
                reason: format!("no FFT domain of size 2^{log_n}"),
            })?;
        let powers = |base: Fr, len: usize, first: Fr| -> Vec<Fr> {
            let mut v = Vec::with_capacity(len);
            let mut x = first;
            for _ in 0..len {
                v.push(x);
                x *= base;
            }
            v
        };
        let g = Fr::GENERATOR;
        let n_inv = domain.size_as_field_element().inverse().expect("n != 0");
        let z_inv = domain
            .evaluate_vanishing_polynomial(g)
            .inverse()
            .expect("Z_H is non-zero off the subgroup");
        Ok(NttTables {
            log_n,
            tw_fwd: fr_words(&powers(domain.group_gen(), n / 2, Fr::one())),
            tw_inv: fr_words(&powers(domain.group_gen_inv(), n / 2, Fr::one())),
            scale_in: fr_words(&powers(g, n, n_inv)),
            scale_out: fr_words(&powers(g.inverse().expect("g != 0"), n, n_inv)),
            z_inv: fr_words(&[z_inv]),
        })
    }
}
