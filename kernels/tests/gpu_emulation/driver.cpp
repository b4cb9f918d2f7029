// Host driver for the GPU kernels' emulation test (kernels/tests/gpu_emulation.rs).
// Compiled with g++ after the generated source (constants + bn254.cuh + msm.cu + ntt.cu).
// Each kernel runs once per thread id, in order; the launch sequence mirrors src/gpu.rs.
// Reads whitespace-separated commands and hex words on stdin, writes hex words to stdout.
#include <cstdio>
#include <vector>
#include <string>

template <class Fn> static void launch(u64 threads, Fn f) {
    for (u64 t = 0; t < threads; t++) { pn_host_tid = t; f(); }
}
static u64 rd() { unsigned long long v; if (scanf("%llx", &v) != 1) { fprintf(stderr, "bad input\n"); exit(2); } return v; }
static std::vector<u64> rdn(u64 n) { std::vector<u64> v(n); for (auto &x : v) x = rd(); return v; }
static void out(const u64 *w, u64 n) { for (u64 i = 0; i < n; i++) printf("%016llx ", (unsigned long long)w[i]); printf("\n"); }
static u64 cdiv(u64 a, u64 b) { return (a + b - 1) / b; }

template <class F> static void msm(u32 n, u32 c, u32 sets, const std::vector<u64> &bases, const std::vector<u64> &scalars) {
    const u32 windows = 253 / c + 1, nb = 1u << (c - 1), slots = sets * windows, count = sets * n;
    const u32 L = nb < 256 ? nb : 256, chunks = nb / L, K = 32, segs = nb < 64 ? nb : 64;
    std::vector<u32> digit((u64)slots * n), counts((u64)slots * nb), ones((u64)sets * n), ones_len(sets), chunk_sum((u64)slots * chunks);
    std::vector<u32> offsets((u64)slots * nb), cursor((u64)slots * nb), sorted((u64)slots * n), key((u64)slots * n);
    u32 max_window = 0;
    u64 acc_threads = cdiv((u64)slots * n, K);
    std::vector<Xyzz<F>> bucket((u64)slots * nb, xyzz_zero<F>()), first(acc_threads), last(acc_threads);
    std::vector<Xyzz<F>> seg((u64)slots * segs), wout(slots);
    launch(count, [&] { msm_digits(scalars.data(), count, n, c, windows, digit.data(), counts.data(), ones.data(), ones_len.data(), &max_window); });
    launch((u64)slots * chunks, [&] { msm_chunk_sums(counts.data(), slots, nb, L, chunk_sum.data()); });
    launch(slots, [&] { msm_chunk_scan(chunk_sum.data(), slots, chunks); });
    launch((u64)slots * chunks, [&] { msm_offsets(counts.data(), chunk_sum.data(), slots, nb, L, offsets.data(), cursor.data()); });
    launch(count, [&] { msm_scatter(digit.data(), count, n, windows, nb, cursor.data(), sorted.data(), key.data()); });
    launch(acc_threads, [&] { accumulate<F>(bases.data(), sorted.data(), key.data(), offsets.data(), counts.data(), n, slots, nb, K, bucket.data(), first.data(), last.data()); });
    launch((u64)slots * nb, [&] { fixup<F>(offsets.data(), counts.data(), n, slots, nb, K, bucket.data(), first.data(), last.data()); });
    launch((u64)slots * segs, [&] { reduce_buckets<F>(bucket.data(), slots, windows, &max_window, nb, segs, seg.data()); });
    launch(slots, [&] { window_sum<F>(seg.data(), slots, segs, wout.data()); });
    u64 len = cdiv(n, K);
    std::vector<Xyzz<F>> part(sets * len);
    launch(sets * len, [&] { ones_sum<F>(bases.data(), ones.data(), ones_len.data(), sets, n, K, part.data()); });
    while (len > 64) {
        u64 next = cdiv(len, K);
        std::vector<Xyzz<F>> tmp(sets * next);
        launch(sets * next, [&] { tree_sum<F>(part.data(), sets, (u32)len, K, tmp.data()); });
        part = tmp;
        len = next;
    }
    // The host side of gpu.rs combines these in arkworks; here: print them, set by set.
    printf("%x %llx\n", windows, (unsigned long long)len);
    for (u32 k = 0; k < sets; k++) {
        for (u32 j = 0; j < windows; j++) out((const u64 *)&wout[k * windows + j], sizeof(Xyzz<F>) / 8);
        for (u64 i = 0; i < len; i++) out((const u64 *)&part[k * len + i], sizeof(Xyzz<F>) / 8);
    }
}

static void ntt(std::vector<u64> &a, u32 logn, const std::vector<u64> &tw) {
    u64 n = 1ull << logn;
    launch(n, [&] { ntt_bitrev(a.data(), logn); });
    for (u32 half = 1; half < n; half *= 2) launch(n / 2, [&] { ntt_stage(a.data(), tw.data(), logn, half); });
}

int main() {
    char op[32];
    while (scanf("%31s", op) == 1) {
        std::string o(op);
        if (o == "fq_mul" || o == "fr_mul") {
            auto a = rdn(4), b = rdn(4);
            if (o == "fq_mul") { Fq x, y; for (int i = 0; i < 4; i++) { x.l[i] = a[i]; y.l[i] = b[i]; } Fq r = mul(x, y); out(r.l, 4); }
            else { Fr x, y; for (int i = 0; i < 4; i++) { x.l[i] = a[i]; y.l[i] = b[i]; } Fr r = mul(x, y); out(r.l, 4); }
        } else if (o == "fq2_mul") {
            auto a = rdn(8), b = rdn(8);
            Fq2 x, y; for (int i = 0; i < 4; i++) { x.c0.l[i] = a[i]; x.c1.l[i] = a[4 + i]; y.c0.l[i] = b[i]; y.c1.l[i] = b[4 + i]; }
            Fq2 r = mul(x, y); out(r.c0.l, 4); out(r.c1.l, 4);
        } else if (o == "msm_g1" || o == "msm_g2") {
            u32 n = (u32)rd(), c = (u32)rd(), sets = (u32)rd();
            bool g1 = o == "msm_g1";
            auto bases = rdn((u64)n * (g1 ? 8 : 16));
            auto scalars = rdn((u64)sets * n * 4);
            if (g1) msm<Fq>(n, c, sets, bases, scalars); else msm<Fq2>(n, c, sets, bases, scalars);
        } else if (o == "quotient") {
            // a, b, c; forward and inverse twiddles; the two coset scale vectors; 1/Z_H.
            u32 logn = (u32)rd(); u64 n = 1ull << logn;
            auto a = rdn(n * 4), b = rdn(n * 4), c = rdn(n * 4);
            auto twf = rdn(n / 2 * 4), twi = rdn(n / 2 * 4), sin = rdn(n * 4), sout = rdn(n * 4), zinv = rdn(4);
            for (auto *v : {&a, &b, &c}) {
                ntt(*v, logn, twi);
                launch(n, [&] { ntt_scale(v->data(), sin.data(), (u32)n); });
                ntt(*v, logn, twf);
            }
            launch(n, [&] { quotient_pointwise(a.data(), b.data(), c.data(), zinv.data(), (u32)n); });
            ntt(a, logn, twi);
            launch(n, [&] { ntt_scale(a.data(), sout.data(), (u32)n); });
            out(a.data(), n * 4);
        } else {
            fprintf(stderr, "unknown op %s\n", op);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
