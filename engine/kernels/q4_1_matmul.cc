// Fused Q4_1 matmul for ONNX Runtime: y = x · Wᵀ where each block of 32 weights of a row of W is d·q + m
// (q in 0..15, float d and m; llama.cpp's Q4_1). ONNX Runtime's MatMulNBits has only integer zero points, so the
// float offsets m otherwise need extra ops; here one kernel does
//
//     y[n] = Σ_b d[n,b]·sx[b]·(q[n,b] · xq[b])  +  Σ_b m[n,b]·Σx[b]
//
// with x quantized per block of 32 to int8 (xq, scale sx; like llama.cpp's Q8_1) and the offset term taken on x's
// exact float block sums. Weights are stored by column pairs (see below): byte j of a block holds q[j] in its
// low nibble and q[j+16] in its high nibble; d and m are float16 (exact for a GGUF Q4_1 source).
// Decode is memory-bound: the weights are streamed once per token, so the layout keeps each pair's blocks
// contiguous and prefetches ahead; a few rows come in tiles that share each block's unpacked weights. Prompts of
// kGemmRows rows or more are compute-bound and take the integer GEMM of q4_1_gemm.inc instead (weights unpacked
// once per panel, the same ~16-bit activations as one int16 each). Built by engine/kernels/__init__.py with -mavx2 -mfma -mf16c (used only on
// CPUs that have them) plus AVX-VNNI and AVX512-VNNI variants of the tiles and the GEMM, chosen at run time
// (activations.cc: active_isa).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

// [d(2p,b) ×4, d(2p+1,b) ×4] from float16
inline __m256 pair_d(const uint16_t* d2) {
  int32_t bits;
  std::memcpy(&bits, d2, 4);
  const __m128 two = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
  const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), spread);
}

inline void store_pair(__m256 acc, float* y0, float* y1) {
  __m128 a = _mm256_castps256_ps128(acc), b = _mm256_extractf128_ps(acc, 1);
  __m128 s = _mm_hadd_ps(a, b);  // [a0+a1, a2+a3, b0+b1, b2+b3]
  s = _mm_hadd_ps(s, s);         // [a, b, a, b]
  *y0 = _mm_cvtss_f32(s);
  *y1 = _mm_cvtss_f32(_mm_shuffle_ps(s, s, 1));
}

struct Work {
  const uint8_t* w;   // [N/2, nb, 32]
  const uint16_t* d;  // [N/2, nb, 2] float16
  const uint16_t* m;  // [nb, N] float16: block by block, so one block's offsets for a run of columns are adjacent
  const int8_t* xd;   // [rows, nb, 128]: int8 layer, then the residual layer
  const float* xs;    // [rows, nb]
  const float* xsum;  // [rows, nb]
  float* y;
  int64_t rows, n, k, pairs_per_task;
  int64_t first_pair;  // where task 0 starts
  Lora lora{};
};

struct IntGemmWork {  // the prompt GEMM (q4_1_gemm.inc)
  const int16_t* x16;  // [rows, K]
  const float* xs;     // [rows, K/32]
  const float* xsum;   // [rows, K/32]
  const uint8_t* w;
  const uint16_t* d;
  const uint16_t* m;
  float* y;
  int64_t rows, n, k, blocks_per_task;
  Lora lora;
};

constexpr int64_t kStride = 128;  // activation bytes per block

// One row's offsets for columns c0..c1: 64 columns at a time in eight registers, the blocks in order (each sum
// is Σ_b m[b, c]·Σx[b] taken b = 0, 1, … with one rounding per step, as the eight-row tiles below take it).
void add_row_offsets(const Work& t, int64_t r, int64_t c0, int64_t c1) {
  const int64_t nb = t.k / kBlock;
  const float* xsum = t.xsum + r * nb;
  float* y = t.y + r * t.n;
  int64_t c = c0;
  for (; c + 64 <= c1; c += 64) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 s = _mm256_set1_ps(xsum[b]);
      const uint16_t* m = t.m + b * t.n + c;
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + 8 * i))), s,
                                 acc[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(y + c + 8 * i, _mm256_add_ps(_mm256_loadu_ps(y + c + 8 * i), acc[i]));
  }
  for (; c < c1; ++c) {
    float off = 0.f;
    for (int64_t b = 0; b < nb; ++b) off = std::fma(_cvtsh_ss(t.m[b * t.n + c]), xsum[b], off);
    y[c] += off;
  }
}

// y[r, c] += Σ_b m[b, c]·Σx[r, b] for columns c0..c1: eight rows at a time as one vector (their block sums
// transposed, the offsets converted once), one row at a time (decode) with add_row_offsets. Every path and tile
// size gives the same bits: the sums run over b in order.
void add_offsets(const Work& t, int64_t c0, int64_t c1) {
  const int64_t nb = t.k / kBlock;
  int64_t r = 0;
  if (t.rows >= 8) {
    std::vector<float> mf(static_cast<size_t>((c1 - c0) * nb)), xt(static_cast<size_t>(nb * 8));
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t b = 0; b < nb; ++b) mf[(c - c0) * nb + b] = _cvtsh_ss(t.m[b * t.n + c]);
    for (; r + 8 <= t.rows; r += 8) {
      for (int64_t b = 0; b < nb; ++b)
        for (int i = 0; i < 8; ++i) xt[b * 8 + i] = t.xsum[(r + i) * nb + b];
      for (int64_t c = c0; c < c1; ++c) {
        const float* m = mf.data() + (c - c0) * nb;
        __m256 off = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) off = _mm256_fmadd_ps(_mm256_set1_ps(m[b]), _mm256_loadu_ps(&xt[b * 8]), off);
        float rows8[8];
        _mm256_storeu_ps(rows8, off);
        for (int i = 0; i < 8; ++i) t.y[(r + i) * t.n + c] += rows8[i];
      }
    }
  }
  for (; r < t.rows; ++r) add_row_offsets(t, r, c0, c1);
}

// Two columns (a pair) share each 256-bit register: 32 bytes = 16 of column 2p then 16 of column 2p+1 per block.
// Low nibbles hold elements 0..15 of a block and high nibbles 16..31, so the activations are laid out per block
// as [x0..15 x0..15 | x16..31 x16..31] (64 bytes) and one maddubs per half serves both columns.
// x carries a second int8 layer, its rounding residual at 1/254 of the step, so x ≈ sx·(xq + xr/254) to about
// 16 bits: [xq halves | xr halves] = 128 bytes per block, and the integer sums are combined as 254·(q·xq) + q·xr
// before the one float multiply. Decode too: with int8 activations alone a fine-tune's int4 export answered 3 of
// 100 task examples differently from its fp32 export (near-ties); with the residual layer none, at the same decode
// speed (memory-bound: 145.1 vs 144.6 tok/s, medians of 12 interleaved runs). The tiles (q4_1_tiles.inc) do the
// integer sums per instruction set.

}  // namespace
}  // namespace slmops

#define SLMOPS_ISA avx2
#define SLMOPS_DPBUSD 0
#define SLMOPS_ROWS 2
#include "q4_1_tiles.inc"
#undef SLMOPS_ISA
#undef SLMOPS_DPBUSD
#undef SLMOPS_ROWS

#pragma GCC push_options
#pragma GCC target("avxvnni")
#define SLMOPS_ISA avxvnni
#define SLMOPS_DPBUSD 1
#define SLMOPS_ROWS 4
#include "q4_1_tiles.inc"
#undef SLMOPS_ISA
#undef SLMOPS_DPBUSD
#undef SLMOPS_ROWS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#define SLMOPS_ISA avx512vnni
#define SLMOPS_DPBUSD 2
#define SLMOPS_ROWS 8
#include "q4_1_tiles.inc"
#undef SLMOPS_ISA
#undef SLMOPS_DPBUSD
#undef SLMOPS_ROWS
#pragma GCC pop_options

using namespace slmops;

// `parallel` runs tasks 0..count-1 (serially if null).
extern "C" void slmops_q41_matmul(
    const float* x, const uint8_t* w, const uint16_t* d, const uint16_t* m, float* y, int64_t rows, int64_t n,
    int64_t k, Parallel parallel, void* ctx) {
  slmops_q41_matmul_lora(x, w, d, m, y, rows, n, k, nullptr, nullptr, 0, parallel, ctx);
}

extern "C" void slmops_q41_matmul_lora(
    const float* x, const uint8_t* w, const uint16_t* d, const uint16_t* m, float* y, int64_t rows, int64_t n,
    int64_t k, const float* lora_t, const uint16_t* lora_b, int64_t lora_r, Parallel parallel, void* ctx) {
  const int isa = active_isa();
  const Lora lora{lora_t, lora_b, lora_r};
  int64_t first_pair = 0;
  if (rows >= kGemmRows && n >= kGemmCols) {
    static void (*const kGemm[])(void*, size_t) = {avx2::run_int_gemm_task, avxvnni::run_int_gemm_task,
                                                   avx512vnni::run_int_gemm_task};
    const int64_t nb = k / kBlock;
    thread_local std::vector<int16_t> x16;  // kept between calls: a prompt makes ~120 of them on this thread
    thread_local std::vector<float> xs, xsum;
    x16.resize(static_cast<size_t>(rows * k));
    xs.resize(static_cast<size_t>(rows * nb));
    xsum.resize(static_cast<size_t>(rows * nb));
    prepare_x16(x, rows, k, x16.data(), xs.data(), xsum.data(), parallel, ctx);
    IntGemmWork gemm{x16.data(), xs.data(), xsum.data(), w, d, m, y, rows, n, k,
                     per_task(n / kGemmCols, rows, 1), lora};
    run_tasks(kGemm[isa], &gemm, n / kGemmCols, gemm.blocks_per_task, parallel, ctx);
    first_pair = n / kGemmCols * kGemmCols / 2;
    if (first_pair == n / 2) return;
  }
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, true, &xd, &xs, &xsum);
  Work work{w, d, m, xd.data(), xs.data(), xsum.data(), y, rows, n, k, 0, first_pair, lora};
  work.pairs_per_task = first_pair ? n / 2 - first_pair : per_task(n / 2, rows, 2);  // the GEMM's leftover: one task
  static void (*const kTasks[])(void*, size_t) = {avx2::run_task, avxvnni::run_task, avx512vnni::run_task};
  run_tasks(kTasks[isa], &work, n / 2 - first_pair, work.pairs_per_task, parallel, ctx);
}
