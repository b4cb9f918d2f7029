//! Multi-scalar multiplication shaped for quantized witnesses (the a, b and l queries, in
//! G1 and G2).
//!
//! A segment's assignment is mostly zeros and bits (the transformer fixture: 54% zero,
//! 43% ±1, 3% under 64 bits, a handful full-size), so the MSM splits by scalar size:
//!
//! - ±1: the points (negated for -1) are summed by a tree of affine additions, a whole
//!   level's additions sharing one field inversion (Montgomery's trick): about 6
//!   multiplications per point, against the ~10 of a mixed addition into a bucket;
//! - up to 64 bits (negatives by their magnitude, the point negated): signed-digit
//!   buckets sized to the largest magnitude actually present, not to 64 bits;
//! - the rest: arkworks' general MSM.
//!
//! Every part runs on rayon's pool; points are fetched by index, so bases can come from
//! anywhere.

use ark_bn254::Fr;
use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::{AdditiveGroup, AffineRepr, VariableBaseMSM};
use ark_ff::{BigInteger, Field, One, PrimeField, Zero};
use rayon::prelude::*;

/// Below this many points a part runs on one thread.
const PAR_MIN: usize = 1 << 11;

/// sum_i scalars[i] * point(i), for i < scalars.len().
pub fn msm<P>(scalars: &[Fr], point: impl Fn(usize) -> Affine<P> + Sync) -> Projective<P>
where
    P: SWCurveConfig<ScalarField = Fr>,
{
    let threads = rayon::current_num_threads().max(1);
    let chunk = scalars.len().div_ceil(threads).max(PAR_MIN);
    let parts: Vec<Parts> = scalars
        .par_chunks(chunk)
        .enumerate()
        .map(|(k, s)| classify(k * chunk, s))
        .collect();
    let (ones, (small, big)) = rayon::join(
        || {
            parts
                .par_iter()
                .map(|p| sum_affine(p.ones.iter().map(|&(i, neg)| signed(point(i), neg))))
                .reduce(Projective::zero, |a, b| a + b)
        },
        || {
            rayon::join(
                || {
                    parts
                        .par_iter()
                        .map(|p| small_msm(&p.small, &point))
                        .reduce(Projective::zero, |a, b| a + b)
                },
                || {
                    let idx: Vec<usize> =
                        parts.iter().flat_map(|p| p.big.iter().copied()).collect();
                    let bases: Vec<Affine<P>> = idx.iter().map(|&i| point(i)).collect();
                    let s: Vec<Fr> = idx.iter().map(|&i| scalars[i]).collect();
                    Projective::<P>::msm_unchecked(&bases, &s)
                },
            )
        },
    );
    ones + small + big
}

/// One chunk's non-zero scalars by size: (index, negated) for ±1, (index, magnitude,
/// negated) for the rest under 2^64, indices of the others.
#[derive(Default)]
struct Parts {
    ones: Vec<(usize, bool)>,
    small: Vec<(usize, u64, bool)>,
    big: Vec<usize>,
}

fn classify(first: usize, scalars: &[Fr]) -> Parts {
    let mut p = Parts::default();
    let modulus = Fr::MODULUS;
    for (k, s) in scalars.iter().enumerate() {
        if s.is_zero() {
            continue;
        }
        let i = first + k;
        let v = s.into_bigint();
        let mut neg = modulus;
        neg.sub_with_borrow(&v);
        let (mag, negated) = if v.num_bits() <= 64 {
            (v, false)
        } else {
            (neg, true)
        };
        if mag.num_bits() > 64 {
            p.big.push(i);
        } else if mag.0[0] == 1 {
            p.ones.push((i, negated));
        } else {
            p.small.push((i, mag.0[0], negated));
        }
    }
    p
}

fn signed<P: SWCurveConfig>(p: Affine<P>, neg: bool) -> Affine<P> {
    if neg {
        -p
    } else {
        p
    }
}

/// The sum of `points` by levels of pairwise affine additions, each level's inversions
/// batched into one. Pairs that share an x coordinate (a doubling or a cancellation)
/// and identities go to a projective remainder instead.
fn sum_affine<P: SWCurveConfig>(points: impl Iterator<Item = Affine<P>>) -> Projective<P> {
    let mut rest = Projective::<P>::zero();
    let mut level: Vec<Affine<P>> = points.filter(|p| !p.is_zero()).collect();
    let mut dens: Vec<P::BaseField> = Vec::with_capacity(level.len() / 2);
    let mut prods: Vec<P::BaseField> = Vec::with_capacity(level.len() / 2);
    let mut batched: Vec<bool> = Vec::with_capacity(level.len() / 2);
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            rest += level.pop().expect("odd length");
        }
        let pairs = level.len() / 2;
        dens.clear();
        prods.clear();
        batched.clear();
        let mut run = P::BaseField::one();
        for k in 0..pairs {
            let (p, q) = (level[2 * k], level[2 * k + 1]);
            let d = q.x - p.x;
            let ok = !d.is_zero();
            if ok {
                run *= d;
            } else {
                rest += p.into_group() + q;
            }
            dens.push(d);
            prods.push(run);
            batched.push(ok);
        }
        let mut inv = run.inverse().expect("a product of non-zero elements");
        for k in (0..pairs).rev() {
            if !batched[k] {
                continue;
            }
            // inv = 1 / (the product of dens[j] for batched j <= k) here.
            let before = if k == 0 {
                P::BaseField::one()
            } else {
                prods[k - 1]
            };
            let d_inv = inv * before;
            inv *= dens[k];
            let (p, q) = (level[2 * k], level[2 * k + 1]);
            let l = (q.y - p.y) * d_inv;
            let x3 = l.square() - p.x - q.x;
            let y3 = l * (p.x - x3) - p.y;
            level[2 * k] = Affine::new_unchecked(x3, y3);
        }
        let mut m = 0;
        for k in 0..pairs {
            if batched[k] {
                level[m] = level[2 * k];
                m += 1;
            }
        }
        level.truncate(m);
    }
    rest + level.first().copied().unwrap_or_else(Affine::zero)
}

/// sum magnitude * ±point over `terms`, with signed digits of a window sized to the
/// largest magnitude present, and projective buckets (there are few such terms).
fn small_msm<P: SWCurveConfig>(
    terms: &[(usize, u64, bool)],
    point: &(impl Fn(usize) -> Affine<P> + Sync),
) -> Projective<P> {
    if terms.is_empty() {
        return Projective::zero();
    }
    let max = terms.iter().map(|t| t.1).max().unwrap_or(0);
    let bits = 64 - max.leading_zeros() + 1; // one more for the signed digits' carry
    let c = window_bits(terms.len());
    let windows = bits.div_ceil(c) as usize;
    let half = 1i64 << (c - 1);
    let base = 1i64 << c;
    // digits[t * windows + w], each in [-half, half].
    let mut digits = vec![0i64; terms.len() * windows];
    for (t, &(_, mag, _)) in terms.iter().enumerate() {
        let mut carry = 0i64;
        for w in 0..windows {
            let shift = w as u32 * c;
            let raw = if shift >= 64 {
                0
            } else {
                ((mag >> shift) & (base as u64 - 1)) as i64
            } + carry;
            let d = if raw > half {
                carry = 1;
                raw - base
            } else {
                carry = 0;
                raw
            };
            digits[t * windows + w] = d;
        }
    }
    let points: Vec<Affine<P>> = terms
        .iter()
        .map(|&(i, _, neg)| signed(point(i), neg))
        .collect();
    let mut buckets = vec![Projective::<P>::zero(); half as usize];
    let mut total = Projective::<P>::zero();
    for w in (0..windows).rev() {
        for _ in 0..c {
            total.double_in_place();
        }
        buckets.iter_mut().for_each(|b| *b = Projective::zero());
        for (t, p) in points.iter().enumerate() {
            let d = digits[t * windows + w];
            if d > 0 {
                buckets[d as usize - 1] += p;
            } else if d < 0 {
                buckets[(-d) as usize - 1] -= p;
            }
        }
        let mut running = Projective::<P>::zero();
        for b in buckets.iter().rev() {
            running += b;
            total += running;
        }
    }
    total
}

/// Window bits for a bucket MSM over `n` points (about log2 n - 2, at least 2).
fn window_bits(n: usize) -> u32 {
    (usize::BITS - n.leading_zeros())
        .saturating_sub(2)
        .clamp(2, 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_bn254::{G1Affine, G1Projective, G2Affine, G2Projective};
    use ark_ff::UniformRand;
    use ark_std::rand::{Rng, SeedableRng};

    fn scalars(n: usize, rng: &mut impl Rng) -> Vec<Fr> {
        (0..n)
            .map(|i| match i % 9 {
                0..=2 => Fr::zero(),
                3 | 4 => Fr::one(),
                5 => -Fr::one(),
                6 => Fr::from(rng.gen::<u64>() >> rng.gen_range(0..60)),
                7 => -Fr::from(rng.gen::<u32>() as u64),
                _ => Fr::rand(rng),
            })
            .collect()
    }

    #[test]
    fn matches_arkworks_in_g1_and_g2() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        for n in [0usize, 1, 2, 7, 300, 5000] {
            let s = scalars(n, &mut rng);
            let mut g1: Vec<G1Affine> = (0..n).map(|_| G1Affine::rand(&mut rng)).collect();
            let g2: Vec<G2Affine> = (0..n).map(|_| G2Affine::rand(&mut rng)).collect();
            if n > 20 {
                // Identities, repeated and opposite points: doublings and cancellations
                // inside the affine tree.
                g1[3] = G1Affine::identity();
                g1[4] = g1[5];
                g1[12] = -g1[13];
                g1[21] = g1[22];
            }
            let want1 = G1Projective::msm(&g1, &s).unwrap();
            assert_eq!(msm(&s, |i| g1[i]), want1, "G1, n = {n}");
            let want2 = G2Projective::msm(&g2, &s).unwrap();
            assert_eq!(msm(&s, |i| g2[i]), want2, "G2, n = {n}");
        }
        // Every scalar ±1 on equal points: the tree doubles all the way up.
        let g = G1Affine::generator();
        let ones = vec![Fr::one(); 1000];
        assert_eq!(msm(&ones, |_| g), g * Fr::from(1000u64));
        // Magnitudes at the top of the small range.
        let top = vec![
            Fr::from(u64::MAX),
            -Fr::from(u64::MAX),
            Fr::from(1u64 << 63),
        ];
        assert_eq!(
            msm(&top, |_| g),
            g * (Fr::from(u64::MAX) - Fr::from(u64::MAX) + Fr::from(1u64 << 63))
        );
    }
}
