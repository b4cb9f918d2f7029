// Multi-scalar multiplication sum_i s_i * P_i over G1 and G2: the bucket (Pippenger) method.
//
// Batched: `sets` scalar vectors of n scalars each, over the same n bases (one proving key,
// several proofs), in one pass. Set k's window j is "slot" k * windows + j: every per-window
// array below is per slot, so the passes after the digits do not know about sets at all.
//
// Pipeline (one launch each; the host drives it, `gpu.rs` and the emulation test alike):
//  1. msm_digits: each scalar leaves Montgomery form and is folded to its smaller signed
//     magnitude (s > (r-1)/2 becomes -(r - s)), then cut into signed c-bit digits in
//     (-2^(c-1), 2^(c-1)]. Zero digits cost nothing, so the small scalars that fill our
//     witnesses (bits, 8-bit activations, their negatives) only touch the low windows.
//     Scalars equal to +-1 (bits) skip the buckets and go to a plain list, summed by a tree.
//     Each non-zero digit counts into its (window, |digit|) bucket.
//  2. msm_chunk_sums, msm_chunk_scan, msm_offsets: exclusive prefix sums of the counts per
//     window, in three passes over chunks of buckets.
//  3. msm_scatter: each point index lands in its bucket's slice of `sorted` (window j owns
//     sorted[j*n .. (j+1)*n)), with the digit's sign in the top bit.
//  4. msm_accumulate: thread t adds up sorted[t*K .. (t+1)*K) (XYZZ + affine additions). A
//     bucket that lies wholly in one thread's range is written out directly; the parts of a
//     bucket that spans several ranges go to per-thread partials...
//  5. msm_fixup: ...which one thread per such bucket adds together.
//  6. msm_reduce: sum_b (b+1) * B_b per window, split into segments of buckets (running sums).
//  7. msm_window_sum: the segments of each window; the host then does sum_j 2^(c*j) * W_j.
//  8. msm_ones + pn_reduce: the +-1 list, K points per thread, then a tree of partial sums.

#define PN_SIGN 0x80000000u

// Scalars are Fr in Montgomery form (4 limbs each), `count` = sets * n of them.
// digit[slot*n + i] = |d| << 1 | sign, 0 if d = 0. Set k's +-1 entries: ones[k*n ..], ones_len[k].
PN_KERNEL void msm_digits(const u64 *scalars, u32 count, u32 n, u32 c, u32 windows, u32 *digit,
                          u32 *counts, u32 *ones, u32 *ones_len, u32 *max_window) {
    u64 idx = pn_tid();
    if (idx >= count) return;
    u64 set = idx / n, i = idx % n;
    u64 slot0 = set * windows;
    Fr s;
    for (int k = 0; k < 4; k++) s.l[k] = scalars[idx * 4 + k];
    s = from_mont(s);
    u32 neg_all = 0;
    // (r - 1) / 2 < s  <=>  s > r - s: compare s with r - s.
    Fr m = sub(f_zero<FrParams>(), s);  // r - s (or 0 when s = 0)
    bool bigger = false;
    for (int k = 3; k >= 0; k--) {
        if (s.l[k] != m.l[k]) { bigger = s.l[k] > m.l[k]; break; }
    }
    if (bigger) { s = m; neg_all = 1; }
    u32 nb = 1u << (c - 1);
    for (u32 j = 0; j < windows; j++) digit[(slot0 + j) * n + i] = 0;
    if (is_zero(s)) return;
    if (s.l[0] == 1 && (s.l[1] | s.l[2] | s.l[3]) == 0) {
        u32 at = pn_atomic_add(&ones_len[set], 1);
        ones[set * n + at] = (u32)i | (neg_all ? PN_SIGN : 0);
        return;
    }
    u32 carry = 0;
    for (u32 j = 0; j < windows; j++) {
        u32 bit = j * c;
        u32 limb = bit / 64, off = bit % 64;
        u64 v = limb < 4 ? (s.l[limb] >> off) : 0;
        if (off + c > 64 && limb + 1 < 4) v |= s.l[limb + 1] << (64 - off);
        u32 d = (u32)(v & ((1ull << c) - 1)) + carry;
        u32 sign = 0;
        if (d > nb) { d = (1u << c) - d; sign = 1; carry = 1; } else { carry = 0; }
        if (d == 0) continue;
        digit[(slot0 + j) * n + i] = (d << 1) | (sign ^ neg_all);
        pn_atomic_add(&counts[(slot0 + j) * nb + d - 1], 1);
        pn_atomic_max(max_window, j + 1);
    }
}

// chunk_sum[j * chunks + k] = sum of counts[j*nb + k*L .. +L].
PN_KERNEL void msm_chunk_sums(const u32 *counts, u32 windows, u32 nb, u32 L, u32 *chunk_sum) {
    u64 t = pn_tid();
    u32 chunks = nb / L;
    if (t >= (u64)windows * chunks) return;
    u32 j = (u32)(t / chunks), k = (u32)(t % chunks);
    u32 s = 0;
    for (u32 b = 0; b < L; b++) s += counts[(u64)j * nb + k * L + b];
    chunk_sum[t] = s;
}

// Exclusive scan of each window's chunk sums, in place (one thread per window).
PN_KERNEL void msm_chunk_scan(u32 *chunk_sum, u32 windows, u32 chunks) {
    u64 j = pn_tid();
    if (j >= windows) return;
    u32 acc = 0;
    for (u32 k = 0; k < chunks; k++) {
        u32 v = chunk_sum[j * chunks + k];
        chunk_sum[j * chunks + k] = acc;
        acc += v;
    }
}

// offsets[j*nb + b] = start of bucket b inside window j's slice; cursor starts as a copy.
PN_KERNEL void msm_offsets(const u32 *counts, const u32 *chunk_sum, u32 windows, u32 nb, u32 L,
                           u32 *offsets, u32 *cursor) {
    u64 t = pn_tid();
    u32 chunks = nb / L;
    if (t >= (u64)windows * chunks) return;
    u32 j = (u32)(t / chunks), k = (u32)(t % chunks);
    u32 acc = chunk_sum[t];
    for (u32 b = 0; b < L; b++) {
        u64 at = (u64)j * nb + k * L + b;
        offsets[at] = acc;
        cursor[at] = acc;
        acc += counts[at];
    }
}

// sorted[slot*n + pos] = i | sign; key[slot*n + pos] = bucket + 1 (0 marks the unused tail).
PN_KERNEL void msm_scatter(const u32 *digit, u32 count, u32 n, u32 windows, u32 nb, u32 *cursor,
                           u32 *sorted, u32 *key) {
    u64 idx = pn_tid();
    if (idx >= count) return;
    u64 set = idx / n, i = idx % n;
    for (u32 j = 0; j < windows; j++) {
        u64 slot = set * windows + j;
        u32 d = digit[slot * n + i];
        if (!d) continue;
        u32 b = (d >> 1) - 1;
        u32 pos = pn_atomic_add(&cursor[slot * nb + b], 1);
        sorted[slot * n + pos] = (u32)i | ((d & 1) ? PN_SIGN : 0);
        key[slot * n + pos] = b + 1;
    }
}

template <class F> PN_FN Aff<F> load_base(const u64 *bases, u32 entry) {
    const u32 words = sizeof(F) / 8;
    const u64 *src = bases + (u64)(entry & ~PN_SIGN) * 2 * words;
    Aff<F> p;
    u64 *dst = (u64 *)&p;
    for (u32 w = 0; w < 2 * words; w++) dst[w] = src[w];
    if ((entry & PN_SIGN) && !aff_is_inf(p)) p.y = neg(p.y);
    return p;
}

template <class F>
PN_FN void accumulate(const u64 *bases, const u32 *sorted, const u32 *key, const u32 *offsets,
                      const u32 *counts, u32 n, u32 windows, u32 nb, u32 K, Xyzz<F> *bucket,
                      Xyzz<F> *first, Xyzz<F> *last) {
    u64 t = pn_tid();
    u64 total = (u64)windows * n;
    u64 lo = t * K;
    if (lo >= total) return;
    u64 hi = lo + K < total ? lo + K : total;
    u64 pos = lo;
    while (pos < hi) {
        u32 k = key[pos];
        if (k == 0) { pos++; continue; }
        u64 run = pos;
        Xyzz<F> acc = xyzz_zero<F>();
        while (pos < hi && key[pos] == k) {
            xyzz_add_aff(acc, load_base<F>(bases, sorted[pos]));
            pos++;
        }
        u32 j = (u32)(run / n);
        u64 at = (u64)j * nb + (k - 1);
        u64 start = (u64)j * n + offsets[at], end = start + counts[at];
        if (run == start && pos == end) bucket[at] = acc;
        else if (run == lo) first[t] = acc;
        else last[t] = acc;
    }
}

template <class F>
PN_FN void fixup(const u32 *offsets, const u32 *counts, u32 n, u32 windows, u32 nb, u32 K,
                 Xyzz<F> *bucket, const Xyzz<F> *first, const Xyzz<F> *last) {
    u64 at = pn_tid();
    if (at >= (u64)windows * nb) return;
    u32 cnt = counts[at];
    if (!cnt) return;
    u64 j = at / nb;
    u64 start = j * n + offsets[at], end = start + cnt;
    u64 t0 = start / K, t1 = (end - 1) / K;
    if (t0 == t1) return;
    Xyzz<F> acc = start == t0 * K ? first[t0] : last[t0];
    for (u64 t = t0 + 1; t <= t1; t++) xyzz_add(acc, first[t]);
    bucket[at] = acc;
}

// seg[j*segs + s] = sum over buckets b in segment s of slot j of (b+1) * B_b. Windows past
// the highest any digit reached (in any set) are empty and skipped.
template <class F>
PN_FN void reduce_buckets(const Xyzz<F> *bucket, u32 slots, u32 windows, const u32 *max_window,
                          u32 nb, u32 segs, Xyzz<F> *seg) {
    u64 t = pn_tid();
    if (t >= (u64)slots * segs) return;
    u32 j = (u32)(t / segs), s = (u32)(t % segs);
    if (j % windows >= *max_window) { seg[t] = xyzz_zero<F>(); return; }
    u32 L = nb / segs, lo = s * L;
    Xyzz<F> running = xyzz_zero<F>(), acc = xyzz_zero<F>();
    for (u32 b = lo + L; b-- > lo;) {
        xyzz_add(running, bucket[(u64)j * nb + b]);
        xyzz_add(acc, running);
    }
    // acc = sum (b - lo + 1) B_b; add lo * sum B_b.
    if (lo) xyzz_add(acc, xyzz_mul_small(running, lo));
    seg[t] = acc;
}

template <class F> PN_FN void window_sum(const Xyzz<F> *seg, u32 windows, u32 segs, Xyzz<F> *out) {
    u64 j = pn_tid();
    if (j >= windows) return;
    Xyzz<F> acc = xyzz_zero<F>();
    for (u32 s = 0; s < segs; s++) xyzz_add(acc, seg[j * segs + s]);
    out[j] = acc;
}

// out[k*per + t] = the +-1 entries [t*K, t*K + K) of set k (per = ceil(n / K)).
template <class F>
PN_FN void ones_sum(const u64 *bases, const u32 *ones, const u32 *ones_len, u32 sets, u32 n,
                    u32 K, Xyzz<F> *out) {
    u64 idx = pn_tid();
    u64 per = ((u64)n + K - 1) / K;
    if (idx >= sets * per) return;
    u64 set = idx / per, lo = (idx % per) * K;
    u32 len = ones_len[set];
    Xyzz<F> acc = xyzz_zero<F>();
    for (u64 p = lo; p < lo + K && p < len; p++) xyzz_add_aff(acc, load_base<F>(bases, ones[set * n + p]));
    out[idx] = acc;
}

// Per set k: out[k*per + t] = in[k*len + t*K] + ... (within len), per = ceil(len / K).
template <class F> PN_FN void tree_sum(const Xyzz<F> *in, u32 sets, u32 len, u32 K, Xyzz<F> *out) {
    u64 idx = pn_tid();
    u64 per = ((u64)len + K - 1) / K;
    if (idx >= sets * per) return;
    u64 set = idx / per, lo = (idx % per) * K;
    Xyzz<F> acc = xyzz_zero<F>();
    for (u64 p = lo; p < lo + K && p < len; p++) xyzz_add(acc, in[set * len + p]);
    out[idx] = acc;
}

#define PN_MSM_KERNELS(G, F)                                                                   \
    PN_KERNEL void msm_accumulate_##G(const u64 *bases, const u32 *sorted, const u32 *key,       \
                                      const u32 *offsets, const u32 *counts, u32 n, u32 windows, \
                                      u32 nb, u32 K, Xyzz<F> *bucket, Xyzz<F> *first,            \
                                      Xyzz<F> *last) {                                           \
        accumulate<F>(bases, sorted, key, offsets, counts, n, windows, nb, K, bucket, first,     \
                      last);                                                                     \
    }                                                                                            \
    PN_KERNEL void msm_fixup_##G(const u32 *offsets, const u32 *counts, u32 n, u32 windows,      \
                                 u32 nb, u32 K, Xyzz<F> *bucket, const Xyzz<F> *first,           \
                                 const Xyzz<F> *last) {                                          \
        fixup<F>(offsets, counts, n, windows, nb, K, bucket, first, last);                       \
    }                                                                                            \
    PN_KERNEL void msm_reduce_##G(const Xyzz<F> *bucket, u32 slots, u32 windows,                 \
                                  const u32 *max_window, u32 nb, u32 segs, Xyzz<F> *seg) {       \
        reduce_buckets<F>(bucket, slots, windows, max_window, nb, segs, seg);                    \
    }                                                                                            \
    PN_KERNEL void msm_window_sum_##G(const Xyzz<F> *seg, u32 windows, u32 segs, Xyzz<F> *out) { \
        window_sum<F>(seg, windows, segs, out);                                                  \
    }                                                                                            \
    PN_KERNEL void msm_ones_##G(const u64 *bases, const u32 *ones, const u32 *ones_len,         \
                                u32 sets, u32 n, u32 K, Xyzz<F> *out) {                          \
        ones_sum<F>(bases, ones, ones_len, sets, n, K, out);                                     \
    }                                                                                            \
    PN_KERNEL void msm_tree_##G(const Xyzz<F> *in, u32 sets, u32 len, u32 K, Xyzz<F> *out) {     \
        tree_sum<F>(in, sets, len, K, out);                                                      \
    }

PN_MSM_KERNELS(g1, Fq)
PN_MSM_KERNELS(g2, Fq2)
