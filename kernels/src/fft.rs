//! Radix-2 FFTs over BN254's scalar field for the prover's quotient polynomial.
//!
//! Groth16's h = (A·B - C) / Z_H takes A·z, B·z, C·z from the domain H to a coset g·H,
//! where Z_H is a non-zero constant, and the result back to coefficients: 7 transforms of
//! the domain's size, most of a small circuit's quotient. They are arranged so that no
//! transform needs a bit-reversal pass of its own: the inverse transforms are
//! decimation-in-time (bit-reversed input, natural output) and the forward ones
//! decimation-in-frequency (natural input, bit-reversed output), so the coset evaluations
//! stay in bit-reversed order (the pointwise step does not care) and only the domain
//! evaluations are permuted once on the way in. The coset shift and the 1/n of each
//! inverse are one pass of running powers. Large transforms split into independent halves
//! on rayon's pool; blocks that fit in L1 run as plain loops.
//!
//! Twiddles (ω^j for j < n/2, both directions) are built once per domain size and kept
//! for the next proof of that size ([`Domain::cached`]).

use std::sync::{Arc, Mutex};

use ark_bn254::Fr;
use ark_ff::{FftField, Field, One};
use rayon::prelude::*;

/// Transforms at least this long split across threads.
const PAR_MIN: usize = 1 << 12;
/// Blocks at most this long (32 KB of field elements) run iteratively.
const SERIAL_MAX: usize = 1 << 10;
/// Elements per task in the element-wise passes.
const CHUNK: usize = 1 << 12;

/// A power-of-two evaluation domain H of size n with its twiddles, and the coset g·H
/// (g = the field's multiplicative generator, outside every such H).
pub struct Domain {
    pub n: usize,
    log_n: u32,
    /// ω^j, j < n/2.
    tw: Vec<Fr>,
    /// ω^-j, j < n/2.
    tw_inv: Vec<Fr>,
    n_inv: Fr,
    g: Fr,
    g_inv: Fr,
}

impl Domain {
    /// The domain of size `n`, or `None` unless n is a power of two the field supports.
    pub fn new(n: usize) -> Option<Domain> {
        if !n.is_power_of_two() || n < 2 {
            return None;
        }
        let log_n = n.trailing_zeros();
        let omega = Fr::get_root_of_unity(n as u64)?;
        let omega_inv = omega.inverse()?;
        let g = Fr::GENERATOR;
        Some(Domain {
            n,
            log_n,
            tw: powers(omega, Fr::one(), n / 2),
            tw_inv: powers(omega_inv, Fr::one(), n / 2),
            n_inv: Fr::from(n as u64).inverse()?,
            g,
            g_inv: g.inverse()?,
        })
    }

    /// [`Domain::new`], reusing the last domain built of the same size.
    pub fn cached(n: usize) -> Option<Arc<Domain>> {
        static LAST: Mutex<Option<Arc<Domain>>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = last.as_ref().filter(|d| d.n == n) {
            return Some(d.clone());
        }
        let d = Arc::new(Domain::new(n)?);
        *last = Some(d.clone());
        Some(d)
    }

    /// Z_H on the coset: g^n - 1 (the same at every point of g·H).
    pub fn coset_vanishing(&self) -> Fr {
        self.g.pow([self.n as u64]) - Fr::one()
    }

    /// Evaluations of f on H (natural order) to its evaluations on g·H, in bit-reversed
    /// order: position p holds f(g ω^bitrev(p)).
    pub fn evals_to_coset(&self, a: &mut [Fr]) {
        assert_eq!(a.len(), self.n, "a vector of the domain's size");
        bit_reverse(a, self.log_n);
        dit(a, &self.tw_inv, 1);
        scale_by_powers(a, self.g, self.n_inv);
        dif(a, &self.tw, 1);
    }

    /// Evaluations on g·H in bit-reversed order (as [`Self::evals_to_coset`] leaves them)
    /// to the coefficients of the polynomial, natural order.
    pub fn coset_to_coeffs(&self, a: &mut [Fr]) {
        assert_eq!(a.len(), self.n, "a vector of the domain's size");
        dit(a, &self.tw_inv, 1);
        scale_by_powers(a, self.g_inv, self.n_inv);
    }
}

/// [start, start·x, start·x², ...], `len` of them.
fn powers(x: Fr, start: Fr, len: usize) -> Vec<Fr> {
    let mut v = vec![Fr::one(); len];
    scale_by_powers(&mut v, x, start);
    v
}

/// a[i] *= start · x^i.
fn scale_by_powers(a: &mut [Fr], x: Fr, start: Fr) {
    a.par_chunks_mut(CHUNK).enumerate().for_each(|(k, c)| {
        let mut p = start * x.pow([(k * CHUNK) as u64]);
        for e in c {
            *e *= p;
            p *= x;
        }
    });
}

fn bit_reverse(a: &mut [Fr], log_n: u32) {
    if log_n == 0 {
        return;
    }
    for i in 0..a.len() {
        let r = i.reverse_bits() >> (usize::BITS - log_n);
        if i < r {
            a.swap(i, r);
        }
    }
}

/// Decimation-in-frequency forward transform, natural order in, bit-reversed out. `tw`
/// holds the full domain's twiddles; a block of length m uses every `stride`-th, stride =
/// n / m.
fn dif(a: &mut [Fr], tw: &[Fr], stride: usize) {
    let n = a.len();
    if n <= SERIAL_MAX {
        return dif_serial(a, tw, stride);
    }
    let half = n / 2;
    let (lo, hi) = a.split_at_mut(half);
    let butterflies = |j0: usize, lo: &mut [Fr], hi: &mut [Fr]| {
        for (j, (u, v)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            let t = *u - *v;
            *u += *v;
            *v = t * tw[(j0 + j) * stride];
        }
    };
    if n >= PAR_MIN {
        lo.par_chunks_mut(CHUNK)
            .zip(hi.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (l, h))| butterflies(k * CHUNK, l, h));
        rayon::join(|| dif(lo, tw, stride * 2), || dif(hi, tw, stride * 2));
    } else {
        butterflies(0, lo, hi);
        dif(lo, tw, stride * 2);
        dif(hi, tw, stride * 2);
    }
}

/// Decimation-in-time transform, bit-reversed order in, natural out (with `tw` inverted,
/// the inverse transform up to the factor n).
fn dit(a: &mut [Fr], tw: &[Fr], stride: usize) {
    let n = a.len();
    if n <= SERIAL_MAX {
        return dit_serial(a, tw, stride);
    }
    let half = n / 2;
    let (lo, hi) = a.split_at_mut(half);
    let butterflies = |j0: usize, lo: &mut [Fr], hi: &mut [Fr]| {
        for (j, (u, v)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            let t = *v * tw[(j0 + j) * stride];
            *v = *u - t;
            *u += t;
        }
    };
    if n >= PAR_MIN {
        rayon::join(|| dit(lo, tw, stride * 2), || dit(hi, tw, stride * 2));
        lo.par_chunks_mut(CHUNK)
            .zip(hi.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (l, h))| butterflies(k * CHUNK, l, h));
    } else {
        dit(lo, tw, stride * 2);
        dit(hi, tw, stride * 2);
        butterflies(0, lo, hi);
    }
}

fn dif_serial(a: &mut [Fr], tw: &[Fr], stride: usize) {
    let mut m = a.len();
    let mut s = stride;
    while m >= 2 {
        let half = m / 2;
        for block in a.chunks_exact_mut(m) {
            let (lo, hi) = block.split_at_mut(half);
            // j = 0: the twiddle is one.
            let t = lo[0] - hi[0];
            lo[0] += hi[0];
            hi[0] = t;
            for j in 1..half {
                let t = lo[j] - hi[j];
                lo[j] += hi[j];
                hi[j] = t * tw[j * s];
            }
        }
        m = half;
        s *= 2;
    }
}

fn dit_serial(a: &mut [Fr], tw: &[Fr], stride: usize) {
    let n = a.len();
    let mut m = 2;
    let mut s = stride * (n / 2);
    while m <= n {
        let half = m / 2;
        for block in a.chunks_exact_mut(m) {
            let (lo, hi) = block.split_at_mut(half);
            let t = hi[0];
            hi[0] = lo[0] - t;
            lo[0] += t;
            for j in 1..half {
                let t = hi[j] * tw[j * s];
                hi[j] = lo[j] - t;
                lo[j] += t;
            }
        }
        m *= 2;
        s /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::UniformRand;
    use ark_poly::{EvaluationDomain, Radix2EvaluationDomain};
    use ark_std::rand::SeedableRng;

    #[test]
    fn matches_arkworks_coset_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for log_n in [1u32, 2, 5, 10, 11, 13] {
            let n = 1usize << log_n;
            let d = Domain::new(n).expect("domain");
            let ark = Radix2EvaluationDomain::<Fr>::new(n).expect("domain");
            let coset = ark.get_coset(Fr::GENERATOR).expect("coset");
            let evals: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();

            // Arkworks: interpolate on H, evaluate on g·H (natural order).
            let mut want = evals.clone();
            ark.ifft_in_place(&mut want);
            coset.fft_in_place(&mut want);
            let mut got = evals.clone();
            d.evals_to_coset(&mut got);
            for (p, v) in got.iter().enumerate() {
                let r = p.reverse_bits() >> (usize::BITS - log_n);
                assert_eq!(*v, want[r], "n = {n}, position {p}");
            }

            // Back to coefficients: the polynomial interpolating `evals` on H.
            let mut coeffs = evals.clone();
            ark.ifft_in_place(&mut coeffs);
            d.coset_to_coeffs(&mut got);
            assert_eq!(got, coeffs, "n = {n}");
            assert_eq!(
                d.coset_vanishing(),
                ark.evaluate_vanishing_polynomial(Fr::GENERATOR)
            );
        }
        assert!(Domain::new(12).is_none());
        assert!(Domain::new(1 << 29).is_none());
    }
}
