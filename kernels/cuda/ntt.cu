// Radix-2 number-theoretic transforms over Fr (Montgomery form) for Groth16's quotient
// polynomial: iterative Cooley-Tukey, decimation in time, bit-reversed input. The host keeps
// per-size tables (twiddles w^k for k < n/2, forward and inverse; coset scale vectors) on the
// device, made by arkworks so the results match its FFTs exactly.

PN_FN u32 pn_bitrev(u32 x, u32 bits) {
    u32 r = 0;
    for (u32 b = 0; b < bits; b++) { r = (r << 1) | (x & 1); x >>= 1; }
    return r;
}

PN_FN Fr load_fr(const u64 *a, u64 i) { Fr r; for (int k = 0; k < 4; k++) r.l[k] = a[i * 4 + k]; return r; }
PN_FN void store_fr(u64 *a, u64 i, const Fr &v) { for (int k = 0; k < 4; k++) a[i * 4 + k] = v.l[k]; }

PN_KERNEL void ntt_bitrev(u64 *a, u32 logn) {
    u64 i = pn_tid();
    if (i >= (1ull << logn)) return;
    u32 j = pn_bitrev((u32)i, logn);
    if (i < j) {
        Fr x = load_fr(a, i), y = load_fr(a, j);
        store_fr(a, i, y);
        store_fr(a, j, x);
    }
}

// One butterfly per thread for the stage that joins halves of size `half`.
PN_KERNEL void ntt_stage(u64 *a, const u64 *tw, u32 logn, u32 half) {
    u64 k = pn_tid();
    u64 n = 1ull << logn;
    if (k >= n / 2) return;
    u64 group = k / half, j = k % half;
    u64 i0 = group * 2 * half + j, i1 = i0 + half;
    Fr w = load_fr(tw, j * (n / (2 * (u64)half)));
    Fr u = load_fr(a, i0), v = mul(load_fr(a, i1), w);
    store_fr(a, i0, add(u, v));
    store_fr(a, i1, sub(u, v));
}

// a[i] *= s[i].
PN_KERNEL void ntt_scale(u64 *a, const u64 *s, u32 n) {
    u64 i = pn_tid();
    if (i >= n) return;
    store_fr(a, i, mul(load_fr(a, i), load_fr(s, i)));
}

// a[i] = (a[i] * b[i] - c[i]) * zinv: the quotient's values on the coset.
PN_KERNEL void quotient_pointwise(u64 *a, const u64 *b, const u64 *c, const u64 *zinv, u32 n) {
    u64 i = pn_tid();
    if (i >= n) return;
    Fr z = load_fr(zinv, 0);
    store_fr(a, i, mul(sub(mul(load_fr(a, i), load_fr(b, i)), load_fr(c, i)), z));
}
