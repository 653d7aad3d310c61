// Q8_0 matmul, for the LM head (tied with the embedding): w = d·q, q in −127..127 stored as q + 128 — the table
// that GatherBlockQuantized reads for the embedding, so the two share it. Same activations as the Q4_1 kernel (int8
// plus residual, about 16 bits) below kGemmRows rows, the float GEMM of gemm.inc from there.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

struct Work8 {
  const uint8_t* w;  // [N, K] q + 128
  const float* d;    // [N, K/32]
  const int8_t* xd;  // [rows, nb, 64]
  const float* xs;   // [rows, nb]
  float* y;
  int64_t rows, n, k, cols_per_task;
};

inline __m256 q8_block(const uint8_t* w, const int8_t* x) {
  const __m256i q = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)),
                                     _mm256_set1_epi8(static_cast<char>(0x80)));
  const __m256i magnitude = _mm256_abs_epi8(q);  // maddubs multiplies unsigned by signed: |q| · (x with q's sign)
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i p16 = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xv, q));
  const __m256i rv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
  const __m256i r16 = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(rv, q));
  return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(p16, _mm256_set1_epi16(254)),
                                             _mm256_madd_epi16(r16, _mm256_set1_epi16(1))));
}

// Columns c0..c1 (AVX2).
void run_columns(const Work8& t, int64_t c0, int64_t c1) {
  constexpr int64_t kStride = 64;
  const int64_t nb = t.k / kBlock;
  int64_t c = c0;
  for (; c + 4 <= c1; c += 4) {  // four columns per pass share the activation loads
    const uint8_t* w = t.w + c * t.k;
    const uint8_t* next = w + 4 * t.k;
    for (int64_t r = 0; r < t.rows; ++r) {
      const int8_t* xd = t.xd + r * nb * kStride;
      const float* xs = t.xs + r * nb;
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t b = 0; b < nb; ++b) {
        if (r == 0 && c + 8 <= c1) {  // the next four columns: 4·K bytes over nb blocks = 128 bytes a block
          _mm_prefetch(reinterpret_cast<const char*>(next + b * 128), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(next + b * 128 + 64), _MM_HINT_T0);
        }
        for (int j = 0; j < 4; ++j) {
          const __m256 scale = _mm256_set1_ps(t.d[(c + j) * nb + b] * xs[b]);
          acc[j] = _mm256_fmadd_ps(q8_block(w + j * t.k + b * kBlock, xd + b * kStride), scale, acc[j]);
        }
      }
      for (int j = 0; j < 4; ++j) t.y[r * t.n + c + j] = hsum(acc[j]);
    }
  }
  for (; c < c1; ++c) {
    for (int64_t r = 0; r < t.rows; ++r) {
      const int8_t* xd = t.xd + r * nb * kStride;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256 scale = _mm256_set1_ps(t.d[c * nb + b] * t.xs[r * nb + b]);
        acc = _mm256_fmadd_ps(q8_block(t.w + c * t.k + b * kBlock, xd + b * kStride), scale, acc);
      }
      t.y[r * t.n + c] = hsum(acc);
    }
  }
}

void run_task8(void* data, size_t task) {
  const Work8& t = *static_cast<const Work8*>(data);
  const int64_t c0 = static_cast<int64_t>(task) * t.cols_per_task;
  run_columns(t, c0, c0 + t.cols_per_task < t.n ? c0 + t.cols_per_task : t.n);
}


struct Gemm8Work {  // the float GEMM (gemm.inc) over Q8_0 panels
  GemmArgs g;
  const uint8_t* w;  // [N, K] q + 128
  const float* d;    // [N, K/32]
};

// columns c..c+n as floats, b[k][j] = d·q, block by block (the 32 × n floats being written stay in L1)
inline void dequantize_panel8(const Gemm8Work& t, int64_t c, int n, float* b) {
  const int64_t nb = t.g.k / kBlock;
  for (int64_t blk = 0; blk < nb; ++blk)
    for (int j = 0; j < n; ++j) {
      const uint8_t* w = t.w + (c + j) * t.g.k + blk * kBlock;
      const float d = t.d[(c + j) * nb + blk];
      float* out = b + blk * kBlock * n + j;
      for (int i = 0; i < kBlock; ++i) out[i * n] = d * static_cast<float>(static_cast<int>(w[i]) - 128);
    }
}

}  // namespace

namespace avx2 {
#define SLMOPS_VEC512 0
#include "gemm.inc"
#undef SLMOPS_VEC512

void run_gemm8(void* data, size_t task) {
  const Gemm8Work& t = *static_cast<const Gemm8Work*>(data);
  gemm_task(t.g, task, [&t](int64_t c, float* b) { dequantize_panel8(t, c, kNR, b); });
}
}  // namespace avx2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
namespace avx512vnni {
namespace {

// AVX512-VNNI: vpdpbusd multiplies the stored q + 128 (unsigned) by x (signed) directly, its accumulators starting
// from −128·Σx over each lane's four bytes (taken once per row and block), so each lane ends at Σ q·x. Two columns
// share a 512-bit register (each half exactly the AVX2 path's eight lanes, so the sums and their order are the
// same); rows come in tiles of four that share the weights.
template <int R>
inline void tile8(const Work8& t, int64_t c, int64_t r0) {
  constexpr int64_t kStride = 64;
  const int64_t nb = t.k / kBlock;
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const __m512i plus128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    __m512i w[2];
    __m512 d[2];
    for (int j = 0; j < 2; ++j) {
      const uint8_t* a = t.w + (c + 2 * j) * t.k + b * kBlock;
      w[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + t.k)), 1);
      d[j] = _mm512_insertf32x8(_mm512_set1_ps(t.d[(c + 2 * j) * nb + b]),
                                _mm256_set1_ps(t.d[(c + 2 * j + 1) * nb + b]), 1);
    }
    for (int r = 0; r < R; ++r) {
      const int8_t* xb = t.xd + ((r0 + r) * nb + b) * kStride;
      const __m512i xq = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb)));
      const __m512i xr = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 32)));
      const __m512i zero = _mm512_setzero_si512();
      const __m512i back_q = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, plus128, xq));
      const __m512i back_r = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, plus128, xr));
      const __m512 sx = _mm512_set1_ps(t.xs[(r0 + r) * nb + b]);
      for (int j = 0; j < 2; ++j) {
        const __m512i q = _mm512_dpbusd_epi32(back_q, w[j], xq);
        const __m512i rr = _mm512_dpbusd_epi32(back_r, w[j], xr);
        const __m512i sum = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(q, 8), _mm512_slli_epi32(q, 1)), rr);
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d[j], sx), acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 2; ++j) {
      float* y = t.y + (r0 + r) * t.n + c + 2 * j;
      y[0] = hsum(_mm512_castps512_ps256(acc[r][j]));
      y[1] = hsum(_mm512_extractf32x8_ps(acc[r][j], 1));
    }
}

}  // namespace

#define SLMOPS_VEC512 1
#include "gemm.inc"
#undef SLMOPS_VEC512

void run_gemm8(void* data, size_t task) {
  const Gemm8Work& t = *static_cast<const Gemm8Work*>(data);
  gemm_task(t.g, task, [&t](int64_t c, float* b) { dequantize_panel8(t, c, kNR, b); });
}

void run_task8(void* data, size_t task) {
  const Work8& t = *static_cast<const Work8*>(data);
  const int64_t c0 = static_cast<int64_t>(task) * t.cols_per_task;
  const int64_t c1 = c0 + t.cols_per_task < t.n ? c0 + t.cols_per_task : t.n;
  const int64_t four = c0 + (c1 - c0) / 4 * 4;
  for (int64_t c = c0; c < four; c += 4) {  // the head's weights are far larger than a prompt's activations
    int64_t r = 0;
    for (; r + 4 <= t.rows; r += 4) tile8<4>(t, c, r);
    for (; r < t.rows; ++r) tile8<1>(t, c, r);
  }
  if (four < c1) run_columns(t, four, c1);
}

}  // namespace avx512vnni
#pragma GCC pop_options

}  // namespace slmops

using namespace slmops;

extern "C" void slmops_q80_matmul(
    const float* x, const uint8_t* w, const float* d, float* y, int64_t rows, int64_t n, int64_t k,
    Parallel parallel, void* ctx) {
  const int isa = active_isa();
  int64_t first = 0;  // columns before it done by the float GEMM (prompts)
  if (rows >= kGemmRows && n >= kGemmCols) {
    Gemm8Work gemm{{x, y, rows, n, k, per_task(n / kGemmCols, rows, 1)}, w, d};
    run_tasks(isa == kAvx512Vnni ? avx512vnni::run_gemm8 : avx2::run_gemm8, &gemm, n / kGemmCols,
              gemm.g.blocks_per_task, parallel, ctx);
    first = n / kGemmCols * kGemmCols;
    if (first == n) return;
  }
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, &xd, &xs, &xsum);
  Work8 work{w, d, xd.data(), xs.data(), y, rows, n, k, 0};
  if (first > 0) return run_columns(work, first, n);  // the GEMM's last N % kGemmCols columns
  work.cols_per_task = per_task(n, rows, 4);
  // AVX512-VNNI for prompts only: one row (decode) streams the head's weights once, where the AVX2 path's prefetch
  // kept it faster (1.4 vs 2.1 ms for 49152 × 576, one thread); AVX-VNNI has no path of its own here.
  const bool tiles = isa == kAvx512Vnni && rows >= 4;
  run_tasks(tiles ? avx512vnni::run_task8 : run_task8, &work, n, work.cols_per_task, parallel, ctx);
}
