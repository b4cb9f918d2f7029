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

use serde::{Deserialize, Serialize};

use crate::model::isqrt;

/// A row's non-linear gadget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gadget {
    Rsqrt,
    Recip,
    Exp,
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
            Gadget::Exp => None,
        }
    }

    /// The numerator C = 2^((p + 1) s) of an inverse power.
    pub fn numerator_bits(self, s: u32) -> u32 {
        (self.power().unwrap_or(0) + 1) * s
    }

    /// The output from the row's decomposed requantized value `v` (q - f for the inverse
    /// powers, whose input is max(q, f) for the floor f >= 1; q for exp).
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
        }
    }

    /// Bits of the output's magnitude: 0 <= y < 2^bits.
    pub fn out_bits(self, s: u32, floor: i128) -> u32 {
        let f = floor.max(1) as u128;
        let max = match self {
            Gadget::Rsqrt => isqrt((1u128 << self.numerator_bits(s)) / f),
            Gadget::Recip => (1u128 << self.numerator_bits(s)) / f,
            Gadget::Exp => exp_poly(s, 0) as u128,
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

    /// Constraints and witnesses the gadget adds to a row with magnitude bits m, beyond the
    /// row's own decomposition and its ReLU (one constraint, one witness).
    pub fn cost(self, s: u32, m: u32, floor: i128) -> (usize, usize) {
        match self {
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
}
