//! Non-linear gadgets: the exact integer functions a segment row may end in, after its
//! requantization, besides ReLU. Each is defined here natively (the reference the circuit
//! must agree with exactly); `circuit` builds its constraints; [`Gadget::cost`] counts them.
//!
//! All work at the model's activation scale 2^s: a value v is the integer round(v 2^s).
//!
//! * **Rsqrt** (LayerNorm): `y = floor(sqrt(2^(3s) / max(q, f)))`, 1/sqrt(v) at scale
//!   2^s. Witness-and-check: y is the only integer with `y^2 q' <= 2^(3s) < (y + 1)^2 q'`
//!   (q' = max(q, f)). Exact: the error against 1/sqrt(v) is under one unit of y, i.e.
//!   2^-s relative to its scale, plus v's own quantization (2^-s absolute, which is
//!   large for a variance near 0: epsilon keeps q' >= 1).
//! * **Recip** (softmax's normaliser): `y = floor(2^(2s) / max(q, f))`, 1/v at scale 2^s,
//!   checked as `y q' <= 2^(2s) < (y + 1) q'`. Exact in the same sense. Both inverse
//!   powers take a floor f >= 1 (a segment's `gadget_floor`): 1 for LayerNorm, exp(0) for
//!   softmax, whose row sums are at least that; it bounds the output, and so the ranges
//!   downstream.
//! * **Exp** (softmax, on max-subtracted values): `y ~ exp(min(q, 0) / 2^s) 2^s`. Range
//!   reduction: t = -min(q, 0) = k L + r with L = round(ln 2 2^s), 0 <= r < L (k's bits
//!   and two bit checks on r); a degree-4 polynomial P(r) ~ exp(-r / 2^s) 2^s by Horner,
//!   requantized after each product (fit error 1.9e-6 on [0, ln 2)); then
//!   y = floor(P / 2^k) for k < 16 (witness-and-check), 0 beyond (exp(-16 ln 2) 2^s < 1
//!   for s <= 15; for larger s the output is still exact to this definition, and the
//!   error against exp is at most 2^-16). Worst case: |y - exp(q / 2^s) 2^s| <= 4 units
//!   (the fit's 1.9e-6 2^s, four roundings of 0.5, and the final floor).
//! * **Erf** (GELU's exact form): `y ~ erf(q / 2^s) 2^s`, odd by construction:
//!   y = sign(q) P(|q|). u = |q| = 2 max(q, 0) - q is decomposed into bits; its low
//!   s - 2 bits are r (u within a piece of width 1/4), the next 4 bits are the piece
//!   index j (16 pieces cover [0, 4)), and any higher bit saturates y to 2^s
//!   (1 - erf(4) = 1.5e-8). Each piece has its own cubic P_j(r) ~ erf(j / 4 + r / 2^s)
//!   2^s ([`ERF_POLY`], fit error 5.4e-6); the coefficient the piece needs is a
//!   multilinear combination of j's bits (11 products of bits pick among 16 pieces), so
//!   Horner runs once, requantized after each product. Worst case: |y - erf(q / 2^s) 2^s|
//!   <= 2 units (the fit's 5.4e-6 2^s, the coefficients' roundings and three Horner
//!   roundings of 0.5, each shrunk by r < 1/4 after it; `erf_is_within_two_units` checks
//!   every q at several scales).

use serde::{Deserialize, Serialize};

use crate::model::isqrt;

/// A row's non-linear gadget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gadget {
    Rsqrt,
    Recip,
    Exp,
    Erf,
}

/// exp(-u) on [0, ln 2): least-squares fit on Chebyshev nodes, lowest degree first
/// (max error 1.9e-6).
pub const EXP_POLY: [f64; 5] = [
    0.9999980983766189,
    -0.9998608169272173,
    0.49836155449494085,
    -0.1598287273709188,
    0.029640199052220373,
];

/// Bits of k = t div L the exp gadget shifts by directly; a larger k gives 0.
pub const EXP_SHIFT_BITS: u32 = 4;

/// erf(j / 4 + r) on r in [0, 1/4), piece j = 0..16: least-squares cubics on Chebyshev
/// nodes, lowest degree first (max error 5.4e-6).
pub const ERF_POLY: [[f64; 4]; 16] = [
    [
        -1.8806726223372812e-06,
        1.1286052946671425,
        -0.004031189921433342,
        -0.3566962368931728,
    ],
    [
        0.27632143447791324,
        1.0606412968294112,
        -0.2772947121613153,
        -0.23398975211145423,
    ],
    [
        0.5204944756088529,
        0.8794769632904915,
        -0.45336340785228524,
        -0.056202820225990886,
    ],
    [
        0.7111520851656458,
        0.6433942012903208,
        -0.49175437274536815,
        0.0916167341021648,
    ],
    [
        0.8426998100175191,
        0.4152419710477497,
        -0.41808921502891677,
        0.16125768135330104,
    ],
    [
        0.9229009821830115,
        0.23641645020597926,
        -0.2937185104022842,
        0.1573394870396697,
    ],
    [
        0.9661066473172452,
        0.11873878429086256,
        -0.1745898360452742,
        0.11479694729791662,
    ],
    [
        0.9866729790081344,
        0.052606132340644256,
        -0.08893156723571706,
        0.06766339373401006,
    ],
    [
        0.9953230947051424,
        0.020559046598820466,
        -0.03911686546206203,
        0.03328085716233805,
    ],
    [
        0.9985377027428837,
        0.007087437537972283,
        -0.014931477771081132,
        0.013893801646124583,
    ],
    [
        0.9995932231733191,
        0.0021552338765807653,
        -0.0049631687638974145,
        0.004973024206782722,
    ],
    [
        0.9998994397575913,
        0.0005781220916480418,
        -0.0014401330087717304,
        0.001536167469498366,
    ],
    [
        0.9999779280145483,
        0.0001367940980267873,
        -0.0003654521555266632,
        0.0004113740788637033,
    ],
    [
        0.999995701992227,
        2.855233469928904e-05,
        -8.121826098539522e-05,
        9.581451154811711e-05,
    ],
    [
        0.9999992579635576,
        5.257110864729316e-06,
        -1.5825277943184776e-05,
        1.9457181205194936e-05,
    ],
    [
        0.9999998864775581,
        8.538653263083142e-07,
        -2.7058702837193564e-06,
        3.4514099088055627e-06,
    ],
];

/// log2 of the erf pieces' width in units of 2^s: r has s - 2 bits.
pub const ERF_PIECE_LOG: u32 = 2;
/// Bits of the erf piece index: 2^4 pieces of width 1/4 cover [0, 4).
pub const ERF_PIECE_BITS: u32 = 4;
/// The smallest scale the erf gadget works at (r needs at least two bits).
pub const ERF_MIN_SCALE: u32 = 4;

impl Gadget {
    /// Whether the row is offset by its floor f (its decomposed value is q - f, so a ReLU
    /// of it plus f is max(q, f)): the inverse powers.
    pub fn offsets_by_floor(self) -> bool {
        matches!(self, Gadget::Rsqrt | Gadget::Recip)
    }

    /// The power p of an inverse power gadget: y = floor((2^((p+1)s) / q')^(1/p)).
    pub fn power(self) -> Option<u32> {
        match self {
            Gadget::Rsqrt => Some(2),
            Gadget::Recip => Some(1),
            Gadget::Exp | Gadget::Erf => None,
        }
    }

    /// The numerator C = 2^((p + 1) s) of an inverse power.
    pub fn numerator_bits(self, s: u32) -> u32 {
        (self.power().unwrap_or(0) + 1) * s
    }

    /// Whether the output can be negative (erf's is signed; the others' are not).
    pub fn out_signed(self) -> bool {
        self == Gadget::Erf
    }

    /// The output from the row's decomposed requantized value `v` (q - f for the inverse
    /// powers, whose input is max(q, f) for the floor f >= 1; q for exp and erf).
    pub fn eval(self, s: u32, v: i128, floor: i128) -> i128 {
        match self {
            Gadget::Rsqrt | Gadget::Recip => {
                let q = (v.max(0) + floor) as u128;
                let c = 1u128 << self.numerator_bits(s);
                match self {
                    Gadget::Rsqrt => isqrt(c / q) as i128,
                    _ => (c / q) as i128,
                }
            }
            Gadget::Exp => {
                let t = (-v).max(0);
                let l = exp_ln2(s);
                let (k, r) = (t / l, t % l);
                if k >= 1 << EXP_SHIFT_BITS {
                    return 0;
                }
                exp_poly(s, r) >> k
            }
            Gadget::Erf => {
                let u = v.abs();
                let (j, r) = (
                    u >> (s - ERF_PIECE_LOG),
                    u & ((1 << (s - ERF_PIECE_LOG)) - 1),
                );
                let y = if j >= 1 << ERF_PIECE_BITS {
                    1 << s
                } else {
                    erf_poly(s, j as usize, r)
                };
                if v < 0 {
                    -y
                } else {
                    y
                }
            }
        }
    }

    /// Bits of the output's magnitude: |y| < 2^bits.
    pub fn out_bits(self, s: u32, floor: i128) -> u32 {
        let f = floor.max(1) as u128;
        let max = match self {
            Gadget::Rsqrt => isqrt((1u128 << self.numerator_bits(s)) / f),
            Gadget::Recip => (1u128 << self.numerator_bits(s)) / f,
            Gadget::Exp => exp_poly(s, 0) as u128,
            Gadget::Erf => erf_max(s) as u128,
        };
        128 - max.leading_zeros()
    }

    /// Bit widths of an inverse power's checks, given the row's magnitude bits m and its
    /// floor f: y, C - y^p q' and (y + 1)^p q' - C - 1. The last is below 2^p C when
    /// y >= 1 and below q' <= 2^m + f when y = 0.
    pub fn inverse_widths(self, s: u32, m: u32, floor: i128) -> (u32, u32, u32) {
        let c = self.numerator_bits(s);
        let p = self.power().unwrap_or(1);
        let q_max = (1u128 << m) + floor.max(1) as u128;
        let q_bits = 128 - q_max.leading_zeros();
        (self.out_bits(s, floor), c + 1, (c + p).max(q_bits + 1))
    }

    /// Bits of k in the exp gadget for a row with magnitude bits m (t <= 2^m).
    pub fn exp_k_bits(s: u32, m: u32) -> u32 {
        let k_max = (1u128 << m) / exp_ln2(s) as u128;
        (128 - k_max.leading_zeros()).max(1)
    }

    /// The erf gadget's bit counts for a row with magnitude bits m: |q| <= 2^m takes
    /// m + 1 bits, of which those from s - 2 up are j's; (low, high) splits j's bits into
    /// the piece index and the saturating rest.
    pub fn erf_bits(s: u32, m: u32) -> (u32, u32, u32) {
        let ub = m + 1;
        let jb = ub.saturating_sub(s - ERF_PIECE_LOG);
        let low = jb.min(ERF_PIECE_BITS);
        (ub, low, jb - low)
    }

    /// Constraints and witnesses the gadget adds to a row with magnitude bits m, beyond the
    /// row's own decomposition and its ReLU (one constraint, one witness).
    pub fn cost(self, s: u32, m: u32, floor: i128) -> (usize, usize) {
        match self {
            Gadget::Erf => {
                let (ub, low, high) = Self::erf_bits(s, m);
                let (ub, high) = (ub as usize, high as usize);
                // Products of j's low bits: every subset of two or more.
                let monomials = (1usize << low) - low as usize - 1;
                let steps = ERF_POLY[0].len() - 1;
                let step_bits = erf_step_bits(s) as usize;
                // |q|'s bits; the monomials; Horner (a product and a decomposition per
                // step); the flag that no high bit is set (high - 1 products) and the
                // saturating select; y = sign |y|.
                let sat = if high > 0 { high } else { 0 };
                (
                    ub + monomials + steps * (1 + step_bits) + sat + 1,
                    (ub - 1) + monomials + steps * step_bits + sat + 1,
                )
            }
            Gadget::Rsqrt | Gadget::Recip => {
                let (ny, nc, nh) = self.inverse_widths(s, m, floor);
                let bits = (ny + nc + nh) as usize;
                // y and its bits; y^2 (rsqrt only), y^p q' and y q' (rsqrt) as products.
                let products = if self == Gadget::Rsqrt { 3 } else { 1 };
                // Each decomposition of n bits: n constraints, n - 1 witnesses.
                (bits + products, 1 + (bits - 3) + products)
            }
            Gadget::Exp => {
                let kb = Self::exp_k_bits(s, m) as usize;
                let nl = exp_rem_bits(s) as usize;
                let steps = EXP_POLY.len() - 1;
                let step_bits = exp_step_bits(s) as usize;
                let low = (kb as u32).min(EXP_SHIFT_BITS) as usize;
                let high = kb - low;
                let pow_products = low.saturating_sub(1);
                let nz_products = high.saturating_sub(1);
                let shift_bits = 2 * exp_shift_rem_bits(low as u32) as usize;
                // k's bits (witnesses, boolean); r's two range checks; Horner: a product
                // (but the first, by a constant) and a decomposition per step; 2^k; the
                // non-zero flag; y0 and y0 * 2^k; the remainder's two checks; y = y0 nz.
                let constraints = kb
                    + 2 * nl
                    + (steps - 1)
                    + steps * step_bits
                    + pow_products
                    + nz_products
                    + 1
                    + shift_bits
                    + usize::from(high > 0);
                let witnesses = kb
                    + 2 * (nl - 1)
                    + (steps - 1)
                    + steps * (step_bits - 1)
                    + pow_products
                    + nz_products
                    + 2
                    + (shift_bits - 2)
                    + usize::from(high > 0);
                (constraints, witnesses)
            }
        }
    }
}

/// L = round(ln 2 2^s).
pub fn exp_ln2(s: u32) -> i128 {
    (std::f64::consts::LN_2 * (1u64 << s) as f64).round() as i128
}

/// Bits of r in [0, L): both r and L - 1 - r are checked in this many.
pub fn exp_rem_bits(s: u32) -> u32 {
    let l = exp_ln2(s) as u128 - 1;
    (128 - l.leading_zeros()).max(1)
}

/// Bits of the remainder of P / 2^k (and of 2^k - 1 less it): 2^k <= 2^(2^low - 1) for
/// `low` bits of k.
pub fn exp_shift_rem_bits(low: u32) -> u32 {
    ((1u32 << low) - 1).max(1)
}

/// The polynomial's integer coefficients at scale 2^s.
pub fn exp_coefficients(s: u32) -> [i128; 5] {
    EXP_POLY.map(|a| (a * (1u64 << s) as f64).round() as i128)
}

/// Bits of each Horner step's decomposition: the product P r (|P| < 2^(s+1), r < 2^s)
/// plus the rounding and sign offsets, requantized by s into a value of magnitude < 2^(s+1).
pub fn exp_step_bits(s: u32) -> u32 {
    s + (s + 1) + 1
}

/// Bits of each erf Horner step's decomposition: the product P r (|P| < 2^(s+1),
/// r < 2^(s-2)) plus the rounding offset and 2^(2s), which makes it non-negative.
pub fn erf_step_bits(s: u32) -> u32 {
    2 * s + 1
}

/// Piece j's integer coefficients at scale 2^s.
pub fn erf_coefficients(s: u32, j: usize) -> [i128; 4] {
    ERF_POLY[j].map(|a| (a * (1u64 << s) as f64).round() as i128)
}

/// P_j(r) ~ erf(j / 4 + r / 2^s) 2^s by Horner, each product requantized (round half up).
pub fn erf_poly(s: u32, j: usize, r: i128) -> i128 {
    let a = erf_coefficients(s, j);
    let half = 1i128 << (s - 1);
    a[..a.len() - 1]
        .iter()
        .rev()
        .fold(a[a.len() - 1], |p, c| ((p * r + half) >> s) + c)
}

/// A bound on |y| for the erf gadget at scale 2^s: |erf| <= 1 and the gadget is within
/// two units of it (`erf_is_within_two_units` checks every value against this).
pub fn erf_max(s: u32) -> i128 {
    (1i128 << s) + 2
}

/// P(r) ~ exp(-r / 2^s) 2^s by Horner, each product requantized (round half up).
pub fn exp_poly(s: u32, r: i128) -> i128 {
    let a = exp_coefficients(s);
    let half = 1i128 << (s - 1);
    a[..a.len() - 1]
        .iter()
        .rev()
        .fold(a[a.len() - 1], |p, c| ((p * r + half) >> s) + c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gadgets_track_the_real_functions() {
        let s = 13;
        let scale = (1u64 << s) as f64;
        for q in [1i128, 2, 100, 4096, 8192, 30000, 1 << 20] {
            let v = q as f64 / scale;
            let rs = Gadget::Rsqrt.eval(s, q - 1, 1) as f64 / scale;
            assert!((rs - 1.0 / v.sqrt()).abs() <= 1.0 / scale, "rsqrt {q}");
            let rc = Gadget::Recip.eval(s, q - 1, 1) as f64 / scale;
            assert!((rc - 1.0 / v).abs() <= 1.0 / scale, "recip {q}");
        }
        for q in (-20 * 8192..=0).step_by(37) {
            let e = Gadget::Exp.eval(s, q, 0) as f64;
            let want = (q as f64 / scale).exp() * scale;
            assert!((e - want).abs() <= 4.0, "exp {q}: {e} vs {want}");
        }
        // Positive values are clamped to 0 first: exp(0) = 1.
        assert_eq!(Gadget::Exp.eval(s, 500, 0), Gadget::Exp.eval(s, 0, 0));
        assert_eq!(Gadget::Exp.eval(s, 0, 0), 8192);
        // A floor: 1 / max(q, f).
        assert_eq!(Gadget::Recip.eval(s, -3, 8192), 8192);
    }

    #[test]
    fn erf_is_within_two_units() {
        for s in [ERF_MIN_SCALE, 8, 10, 13, 16] {
            let scale = (1u64 << s) as f64;
            for q in -5 * (1i128 << s)..=5 * (1i128 << s) {
                let y = Gadget::Erf.eval(s, q, 0);
                let want = libm::erf(q as f64 / scale) * scale;
                assert!((y as f64 - want).abs() <= 2.0, "s {s} q {q}: {y} vs {want}");
                assert_eq!(Gadget::Erf.eval(s, -q, 0), -y, "odd at {q}");
                assert!(y.abs() <= erf_max(s), "s {s} q {q}: {y}");
            }
            assert_eq!(Gadget::Erf.out_bits(s, 1), s + 1);
        }
    }

    #[test]
    fn erf_horner_stays_inside_its_step_bits() {
        // Every partial Horner value stays below 2^(s+1), which `erf_step_bits` assumes.
        for s in [ERF_MIN_SCALE, 8, 13, 16] {
            let half = 1i128 << (s - 1);
            for j in 0..ERF_POLY.len() {
                let a = erf_coefficients(s, j);
                for r in 0..1i128 << (s - ERF_PIECE_LOG) {
                    let mut p = a[3];
                    for c in a[..3].iter().rev() {
                        assert!(p.abs() < 1 << (s + 1));
                        p = ((p * r + half) >> s) + c;
                    }
                    assert!(p.abs() < 1 << (s + 1));
                }
            }
        }
    }
}
