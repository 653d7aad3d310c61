// Q8_0 matmul, for the LM head (tied with the embedding): w = d·q, q in −127..127 stored as q + 128 — the table
// that GatherBlockQuantized reads for the embedding, so the two share it. Same activations as the Q4_1 kernel (int8
// plus residual, about 16 bits).
#include <immintrin.h>

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

void run_task8(void* data, size_t task) {
  constexpr int64_t kStride = 64;
  const Work8& t = *static_cast<const Work8*>(data);
  const int64_t nb = t.k / kBlock;
  const int64_t c0 = static_cast<int64_t>(task) * t.cols_per_task;
  const int64_t c1 = c0 + t.cols_per_task < t.n ? c0 + t.cols_per_task : t.n;
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


}  // namespace
}  // namespace slmops

using namespace slmops;

extern "C" void slmops_q80_matmul(
    const float* x, const uint8_t* w, const float* d, float* y, int64_t rows, int64_t n, int64_t k,
    Parallel parallel, void* ctx) {
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, false, &xd, &xs, &xsum);
  Work8 work{w, d, xd.data(), xs.data(), y, rows, n, k, 0};
  work.cols_per_task = per_task(n, rows, 4);
  run_tasks(run_task8, &work, n, work.cols_per_task, parallel, ctx);
}
