// Fused Q4_1 matmul for ONNX Runtime: y = x · Wᵀ where each block of 32 weights of a row of W is d·q + m
// (q in 0..15, float d and m; llama.cpp's Q4_1). ONNX Runtime's MatMulNBits has only integer zero points, so the
// float offsets m otherwise need extra ops; here one kernel does
//
//     y[n] = Σ_b d[n,b]·sx[b]·(q[n,b] · xq[b])  +  Σ_b m[n,b]·Σx[b]
//
// with x quantized per block of 32 to int8 (xq, scale sx; like llama.cpp's Q8_1) and the offset term taken on x's
// exact float block sums. Weights are stored by column pairs (see pair_block): byte j of a block holds q[j] in its
// low nibble and q[j+16] in its high nibble; d and m are float16 (exact for a GGUF Q4_1 source).
// Decode is memory-bound: the weights are streamed once per token, so the layout keeps each pair's blocks
// contiguous and prefetches ahead. Built by engine/kernels/__init__.py with -mavx2 -mfma -mf16c; used only on CPUs
// that have them.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

inline float offsets(const uint16_t* m, const float* xsum, int64_t nb) {
  __m256 off = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + b)));
    off = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xsum + b), off);
  }
  float tail = 0.f;
  for (; b < nb; ++b) tail += _cvtsh_ss(m[b]) * xsum[b];
  return hsum(off) + tail;
}

// Two columns (a pair) share each 256-bit register: 32 bytes = 16 of column 2p then 16 of column 2p+1 per block.
// Low nibbles hold elements 0..15 of a block and high nibbles 16..31, so the activations are laid out per block
// as [x0..15 x0..15 | x16..31 x16..31] (64 bytes) and one maddubs per half serves both columns.
// x carries a second int8 layer, its rounding residual at 1/254 of the step, so x ≈ sx·(xq + xr/254) to about
// 16 bits: [xq halves | xr halves] = 128 bytes per block, and the integer sums are combined as 254·(q·xq) + q·xr
// before the one float multiply. Decode too: with int8 activations alone a fine-tune's int4 export answered 3 of
// 100 task examples differently from its fp32 export (near-ties); with the residual layer none, at the same decode
// speed (memory-bound: 145.1 vs 144.6 tok/s, medians of 12 interleaved runs).
inline __m256 pair_block(const uint8_t* w, const int8_t* xd) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i lo = _mm256_and_si256(packed, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
  const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd));
  const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd + 32));
  const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
  const __m256i rlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd + 64));
  const __m256i rhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd + 96));
  const __m256i r16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, rlo), _mm256_maddubs_epi16(hi, rhi));
  const __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(p16, _mm256_set1_epi16(254)),
                                       _mm256_madd_epi16(r16, _mm256_set1_epi16(1)));
  return _mm256_cvtepi32_ps(sum);
}

// [d(2p,b) ×4, d(2p+1,b) ×4] · sx(b); d is float16
inline __m256 pair_scale(const uint16_t* d2, __m256 sx) {
  int32_t bits;
  std::memcpy(&bits, d2, 4);
  const __m128 two = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
  const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  return _mm256_mul_ps(_mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), spread), sx);
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
  const uint16_t* m;  // [N, nb] float16
  const int8_t* xd;   // [rows, nb, 128]: int8 layer, then the residual layer
  const float* xs;    // [rows, nb]
  const float* xsum;  // [rows, nb]
  float* y;
  int64_t rows, n, k, pairs_per_task;
};

void run_task(void* data, size_t task) {
  constexpr int64_t kStride = 128;  // activation bytes per block
  const Work& t = *static_cast<const Work*>(data);
  const int64_t nb = t.k / kBlock, pairs = t.n / 2;
  const int64_t p0 = static_cast<int64_t>(task) * t.pairs_per_task;
  const int64_t p1 = p0 + t.pairs_per_task < pairs ? p0 + t.pairs_per_task : pairs;
  // column pairs outside, rows inside: a pair's weights are read once and stay in cache for every row
  int64_t p = p0;
  for (; p + 2 <= p1; p += 2) {  // two pairs (four columns) per pass share the activation loads
    const uint8_t* wa = t.w + p * nb * 32;
    const uint8_t* wb = wa + nb * 32;
    const uint16_t* da = t.d + p * nb * 2;
    const uint16_t* db = da + nb * 2;
    for (int64_t r = 0; r < t.rows; ++r) {
      const int8_t* xd = t.xd + r * nb * kStride;
      const float* xs = t.xs + r * nb;
      __m256 acc_a = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        _mm_prefetch(reinterpret_cast<const char*>(wa + b * 32 + kAhead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wb + b * 32 + kAhead), _MM_HINT_T0);
        const __m256 sx = _mm256_set1_ps(xs[b]);
        const int8_t* xb = xd + b * kStride;
        acc_a = _mm256_fmadd_ps(pair_block(wa + b * 32, xb), pair_scale(da + b * 2, sx), acc_a);
        acc_b = _mm256_fmadd_ps(pair_block(wb + b * 32, xb), pair_scale(db + b * 2, sx), acc_b);
      }
      float* y = t.y + r * t.n + 2 * p;
      store_pair(acc_a, y, y + 1);
      store_pair(acc_b, y + 2, y + 3);
      for (int j = 0; j < 4; ++j) y[j] += offsets(t.m + (2 * p + j) * nb, t.xsum + r * nb, nb);
    }
  }
  for (; p < p1; ++p) {
    const uint8_t* wa = t.w + p * nb * 32;
    const uint16_t* da = t.d + p * nb * 2;
    for (int64_t r = 0; r < t.rows; ++r) {
      const int8_t* xd = t.xd + r * nb * kStride;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256 sx = _mm256_set1_ps(t.xs[r * nb + b]);
        acc = _mm256_fmadd_ps(pair_block(wa + b * 32, xd + b * kStride), pair_scale(da + b * 2, sx), acc);
      }
      float* y = t.y + r * t.n + 2 * p;
      store_pair(acc, y, y + 1);
      for (int j = 0; j < 2; ++j) y[j] += offsets(t.m + (2 * p + j) * nb, t.xsum + r * nb, nb);
    }
  }
}


}  // namespace
}  // namespace slmops

using namespace slmops;

// `parallel` runs tasks 0..count-1 (serially if null).
extern "C" void slmops_q41_matmul(
    const float* x, const uint8_t* w, const uint16_t* d, const uint16_t* m, float* y, int64_t rows, int64_t n,
    int64_t k, Parallel parallel, void* ctx) {
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, true, &xd, &xs, &xsum);
  Work work{w, d, m, xd.data(), xs.data(), xsum.data(), y, rows, n, k, 0};
  work.pairs_per_task = per_task(n / 2, rows, 2);
  run_tasks(run_task, &work, n / 2, work.pairs_per_task, parallel, ctx);
}
