// BN254 field and curve arithmetic for provnet's GPU kernels.
//
// Elements are four little-endian 64-bit limbs in Montgomery form, exactly as arkworks keeps
// `Fq` and `Fr`, so buffers move between host and device without conversion. The constants
// (PN_FQ_*, PN_FR_*) are written by the Rust host from arkworks' own parameters and put in
// front of this file (`provnet_kernels::gpu_src::source`).
//
// The same source compiles two ways:
// - NVRTC (device): the GPU backend.
// - g++ (host, PN_HOST_EMULATION): every kernel is a plain function run once per thread id,
//   one after another. Atomics are then ordinary read-modify-writes. Kernels therefore use no
//   shared memory, barriers or warp intrinsics; the test suite runs the whole MSM and NTT
//   pipelines this way against arkworks on machines without a GPU.

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
typedef unsigned long long u64;
typedef unsigned int u32;
#define PN_FN __device__ __forceinline__
// Point operations are large: calls, not copies, keep NVRTC's time and the code size down.
#define PN_CALL __device__ __noinline__
#define PN_KERNEL extern "C" __global__
PN_FN u64 pn_mulhi(u64 a, u64 b) { return __umul64hi(a, b); }
PN_FN u64 pn_tid() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }
PN_FN u32 pn_atomic_add(u32 *p, u32 v) { return atomicAdd(p, v); }
PN_FN void pn_atomic_max(u32 *p, u32 v) { atomicMax(p, v); }
#else
#include <cstdint>
typedef unsigned long long u64;
typedef unsigned int u32;
#define PN_FN inline
#define PN_CALL inline
#define PN_KERNEL inline
static u64 pn_host_tid;
PN_FN u64 pn_mulhi(u64 a, u64 b) { return (u64)(((unsigned __int128)a * b) >> 64); }
PN_FN u64 pn_tid() { return pn_host_tid; }
PN_FN u32 pn_atomic_add(u32 *p, u32 v) { u32 o = *p; *p = o + v; return o; }
PN_FN void pn_atomic_max(u32 *p, u32 v) { if (*p < v) *p = v; }
#endif

// ---------------------------------------------------------------------------------------
// Prime fields: Montgomery multiplication (CIOS), 4 x 64-bit limbs.

struct FqParams {
    PN_FN static u64 p(int i) { const u64 v[4] = {PN_FQ_P0, PN_FQ_P1, PN_FQ_P2, PN_FQ_P3}; return v[i]; }
    PN_FN static u64 one(int i) { const u64 v[4] = {PN_FQ_R0, PN_FQ_R1, PN_FQ_R2, PN_FQ_R3}; return v[i]; }
    static const u64 inv = PN_FQ_INV;
};
struct FrParams {
    PN_FN static u64 p(int i) { const u64 v[4] = {PN_FR_P0, PN_FR_P1, PN_FR_P2, PN_FR_P3}; return v[i]; }
    PN_FN static u64 one(int i) { const u64 v[4] = {PN_FR_R0, PN_FR_R1, PN_FR_R2, PN_FR_R3}; return v[i]; }
    static const u64 inv = PN_FR_INV;
};

template <class P> struct Fp { u64 l[4]; };
typedef Fp<FqParams> Fq;
typedef Fp<FrParams> Fr;

// lo(a*b + c + carry), carry <- hi(...). Cannot overflow 128 bits.
PN_FN u64 pn_mac(u64 a, u64 b, u64 c, u64 &carry) {
    u64 lo = a * b, hi = pn_mulhi(a, b);
    lo += c; hi += (lo < c);
    lo += carry; hi += (lo < carry);
    carry = hi;
    return lo;
}
PN_FN u64 pn_adc(u64 a, u64 b, u64 &carry) {
    u64 s = a + b; u64 c1 = s < a;
    u64 t = s + carry; u64 c2 = t < s;
    carry = c1 + c2;
    return t;
}
PN_FN u64 pn_sbb(u64 a, u64 b, u64 &borrow) {
    u64 d = a - b; u64 b1 = a < b;
    u64 e = d - borrow; u64 b2 = d < borrow;
    borrow = b1 + b2;
    return e;
}

template <class P> PN_FN Fp<P> f_zero() { Fp<P> r; for (int i = 0; i < 4; i++) r.l[i] = 0; return r; }
template <class P> PN_FN Fp<P> f_one() { Fp<P> r; for (int i = 0; i < 4; i++) r.l[i] = P::one(i); return r; }
template <class P> PN_FN bool is_zero(const Fp<P> &a) { return (a.l[0] | a.l[1] | a.l[2] | a.l[3]) == 0; }
template <class P> PN_FN bool eq(const Fp<P> &a, const Fp<P> &b) {
    return ((a.l[0] ^ b.l[0]) | (a.l[1] ^ b.l[1]) | (a.l[2] ^ b.l[2]) | (a.l[3] ^ b.l[3])) == 0;
}
// r >= p ? r - p : r, for r < 2p.
template <class P> PN_FN void reduce_once(Fp<P> &r) {
    u64 t[4]; u64 borrow = 0;
    for (int i = 0; i < 4; i++) t[i] = pn_sbb(r.l[i], P::p(i), borrow);
    if (!borrow) for (int i = 0; i < 4; i++) r.l[i] = t[i];
}
template <class P> PN_FN Fp<P> add(const Fp<P> &a, const Fp<P> &b) {
    // p < 2^254, so a + b < 2^255 never carries out of 256 bits.
    Fp<P> r; u64 c = 0;
    for (int i = 0; i < 4; i++) r.l[i] = pn_adc(a.l[i], b.l[i], c);
    reduce_once(r);
    return r;
}
template <class P> PN_FN Fp<P> sub(const Fp<P> &a, const Fp<P> &b) {
    Fp<P> r; u64 borrow = 0;
    for (int i = 0; i < 4; i++) r.l[i] = pn_sbb(a.l[i], b.l[i], borrow);
    if (borrow) { u64 c = 0; for (int i = 0; i < 4; i++) r.l[i] = pn_adc(r.l[i], P::p(i), c); }
    return r;
}
template <class P> PN_FN Fp<P> neg(const Fp<P> &a) { return is_zero(a) ? a : sub(f_zero<P>(), a); }
template <class P> PN_FN Fp<P> dbl(const Fp<P> &a) { return add(a, a); }
template <class P> PN_FN Fp<P> mul(const Fp<P> &a, const Fp<P> &b) {
    u64 t[6] = {0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        u64 c = 0;
        for (int j = 0; j < 4; j++) t[j] = pn_mac(a.l[j], b.l[i], t[j], c);
        u64 c2 = 0;
        t[4] = pn_adc(t[4], c, c2);
        t[5] = c2;
        u64 m = t[0] * P::inv;
        c = 0;
        (void)pn_mac(m, P::p(0), t[0], c);
        for (int j = 1; j < 4; j++) t[j - 1] = pn_mac(m, P::p(j), t[j], c);
        c2 = 0;
        t[3] = pn_adc(t[4], c, c2);
        t[4] = t[5] + c2;
    }
    Fp<P> r;
    for (int i = 0; i < 4; i++) r.l[i] = t[i];
    reduce_once(r);
    return r;
}
template <class P> PN_FN Fp<P> sqr(const Fp<P> &a) { return mul(a, a); }
// Montgomery form -> canonical integer.
template <class P> PN_FN Fp<P> from_mont(const Fp<P> &a) {
    Fp<P> one_int = f_zero<P>();
    one_int.l[0] = 1;
    return mul(a, one_int);
}

// ---------------------------------------------------------------------------------------
// Fq2 = Fq[u] / (u^2 + 1): BN254's quadratic extension, the base field of G2.

struct Fq2 { Fq c0, c1; };
PN_FN bool is_zero(const Fq2 &a) { return is_zero(a.c0) && is_zero(a.c1); }
PN_FN Fq2 add(const Fq2 &a, const Fq2 &b) { Fq2 r; r.c0 = add(a.c0, b.c0); r.c1 = add(a.c1, b.c1); return r; }
PN_FN Fq2 sub(const Fq2 &a, const Fq2 &b) { Fq2 r; r.c0 = sub(a.c0, b.c0); r.c1 = sub(a.c1, b.c1); return r; }
PN_FN Fq2 neg(const Fq2 &a) { Fq2 r; r.c0 = neg(a.c0); r.c1 = neg(a.c1); return r; }
PN_FN Fq2 dbl(const Fq2 &a) { return add(a, a); }
PN_CALL Fq2 mul(const Fq2 &a, const Fq2 &b) {
    Fq v0 = mul(a.c0, b.c0), v1 = mul(a.c1, b.c1);
    Fq2 r;
    r.c0 = sub(v0, v1);
    r.c1 = sub(sub(mul(add(a.c0, a.c1), add(b.c0, b.c1)), v0), v1);
    return r;
}
PN_CALL Fq2 sqr(const Fq2 &a) {
    Fq2 r;
    r.c0 = mul(add(a.c0, a.c1), sub(a.c0, a.c1));
    Fq t = mul(a.c0, a.c1);
    r.c1 = add(t, t);
    return r;
}
template <class F> PN_FN F one_of();
template <class F> PN_FN F zero_of();
template <> PN_FN Fq zero_of<Fq>() { return f_zero<FqParams>(); }
template <> PN_FN Fq2 zero_of<Fq2>() { Fq2 r; r.c0 = f_zero<FqParams>(); r.c1 = f_zero<FqParams>(); return r; }
template <> PN_FN Fq one_of<Fq>() { return f_one<FqParams>(); }
template <> PN_FN Fq2 one_of<Fq2>() { Fq2 r; r.c0 = f_one<FqParams>(); r.c1 = f_zero<FqParams>(); return r; }

// ---------------------------------------------------------------------------------------
// Short Weierstrass points with a = 0 (G1 over Fq, G2 over Fq2).
// Affine (x, y) with (0, 0) as the point at infinity (it is on neither curve since b != 0).
// XYZZ: x = X / ZZ, y = Y / ZZZ, ZZ^3 = ZZZ^2; ZZ = 0 is infinity, so all-zero memory is the
// identity.

template <class F> struct Aff { F x, y; };
template <class F> struct Xyzz { F x, y, zz, zzz; };

template <class F> PN_FN bool aff_is_inf(const Aff<F> &p) { return is_zero(p.x) && is_zero(p.y); }
template <class F> PN_FN Xyzz<F> xyzz_zero() { Xyzz<F> r; r.x = r.y = r.zz = r.zzz = zero_of<F>(); return r; }
template <class F> PN_FN bool xyzz_is_inf(const Xyzz<F> &p) { return is_zero(p.zz); }

// 2 * affine point (dbl, with ZZ1 = ZZZ1 = 1).
template <class F> PN_CALL Xyzz<F> xyzz_dbl_aff(const Aff<F> &q) {
    F u = dbl(q.y), v = sqr(u), w = mul(u, v), s = mul(q.x, v);
    F x2 = sqr(q.x);
    F m = add(dbl(x2), x2);
    Xyzz<F> r;
    r.x = sub(sqr(m), dbl(s));
    r.y = sub(mul(m, sub(s, r.x)), mul(w, q.y));
    r.zz = v;
    r.zzz = w;
    return r;
}

template <class F> PN_CALL void xyzz_dbl(Xyzz<F> &p) {
    if (xyzz_is_inf(p)) return;
    F u = dbl(p.y), v = sqr(u), w = mul(u, v), s = mul(p.x, v);
    F x2 = sqr(p.x);
    F m = add(dbl(x2), x2);
    F x3 = sub(sqr(m), dbl(s));
    p.y = sub(mul(m, sub(s, x3)), mul(w, p.y));
    p.x = x3;
    p.zz = mul(v, p.zz);
    p.zzz = mul(w, p.zzz);
}

// p += q (q affine).
template <class F> PN_CALL void xyzz_add_aff(Xyzz<F> &p, const Aff<F> &q) {
    if (aff_is_inf(q)) return;
    if (xyzz_is_inf(p)) { p.x = q.x; p.y = q.y; p.zz = one_of<F>(); p.zzz = one_of<F>(); return; }
    F pp_ = sub(mul(q.x, p.zz), p.x);
    F r = sub(mul(q.y, p.zzz), p.y);
    if (is_zero(pp_)) {
        if (is_zero(r)) p = xyzz_dbl_aff(q);
        else p = xyzz_zero<F>();
        return;
    }
    F pp = sqr(pp_), ppp = mul(pp_, pp), qq = mul(p.x, pp);
    F x3 = sub(sub(sqr(r), ppp), dbl(qq));
    p.y = sub(mul(r, sub(qq, x3)), mul(p.y, ppp));
    p.x = x3;
    p.zz = mul(p.zz, pp);
    p.zzz = mul(p.zzz, ppp);
}

// p += q (both XYZZ).
template <class F> PN_CALL void xyzz_add(Xyzz<F> &p, const Xyzz<F> &q) {
    if (xyzz_is_inf(q)) return;
    if (xyzz_is_inf(p)) { p = q; return; }
    F u1 = mul(p.x, q.zz), u2 = mul(q.x, p.zz);
    F s1 = mul(p.y, q.zzz), s2 = mul(q.y, p.zzz);
    F pp_ = sub(u2, u1), r = sub(s2, s1);
    if (is_zero(pp_)) {
        if (is_zero(r)) xyzz_dbl(p);
        else p = xyzz_zero<F>();
        return;
    }
    F pp = sqr(pp_), ppp = mul(pp_, pp), qq = mul(u1, pp);
    F x3 = sub(sub(sqr(r), ppp), dbl(qq));
    p.y = sub(mul(r, sub(qq, x3)), mul(s1, ppp));
    p.x = x3;
    p.zz = mul(mul(p.zz, q.zz), pp);
    p.zzz = mul(mul(p.zzz, q.zzz), ppp);
}

// k * p for a small non-negative k (double-and-add, most significant bit first).
template <class F> PN_CALL Xyzz<F> xyzz_mul_small(const Xyzz<F> &p, u32 k) {
    Xyzz<F> acc = xyzz_zero<F>();
    for (int bit = 31; bit >= 0; bit--) {
        xyzz_dbl(acc);
        if ((k >> bit) & 1) xyzz_add(acc, p);
    }
    return acc;
}
