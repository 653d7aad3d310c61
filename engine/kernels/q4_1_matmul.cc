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

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "ort_abi.h"

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kAhead = 256;  // bytes of weights prefetched ahead of the ones in use

// Read once: std::thread::hardware_concurrency() asks the system each time (a file read per call on Linux).
int64_t cores() {
  static const int64_t count = std::max<int64_t>(1, std::thread::hardware_concurrency());
  return count;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One row of activations as int8 blocks: q[k], per-block scale s[k/32] and exact sum sum[k/32].
void quantize_row(const float* x, int64_t k, int8_t* q, float* s, float* sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
    const __m256 amax4 = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                       _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 mx = _mm_max_ps(_mm256_castps256_ps128(amax4), _mm256_extractf128_ps(amax4, 1));
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    mx = _mm_max_ss(mx, _mm_movehdup_ps(mx));
    const float amax = _mm_cvtss_f32(mx);
    sum[b] = hsum(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
    s[b] = amax / 127.f;
    const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // rounds to nearest
    // packs work within 128-bit lanes; the permute puts the 32 values back in order
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
    const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
    const __m256i i8 = _mm256_packs_epi16(i16a, i16b);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock), _mm256_permutevar8x32_epi32(i8, order));
  }
}

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

// Activations (rows × k) for either kernel: int8 (scale sx) and the residual at sx/254; xs gets sx/254 to match.
// Layout per block: `dup` repeats each half for column pairs (Q4_1), else plain (Q8_0).
void prepare_activations(const float* x, int64_t rows, int64_t k, bool dup, std::vector<int8_t>* xd,
                         std::vector<float>* xs, std::vector<float>* xsum) {
  const int64_t nb = k / kBlock, width = dup ? 64 : 32, stride = 2 * width;
  std::vector<int8_t> xq(static_cast<size_t>(k));
  xd->resize(static_cast<size_t>(rows * nb * stride));
  xs->resize(static_cast<size_t>(rows * nb));
  xsum->resize(static_cast<size_t>(rows * nb));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    float* scales = xs->data() + r * nb;
    quantize_row(xr, k, xq.data(), scales, xsum->data() + r * nb);
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* out = xd->data() + (r * nb + b) * stride;
      const int8_t* in = xq.data() + b * kBlock;
      int8_t residual[kBlock];
      const float step = scales[b], inv = step > 0.f ? 254.f / step : 0.f;
      for (int i = 0; i < kBlock; ++i) {
        const float rest = (xr[b * kBlock + i] - step * static_cast<float>(in[i])) * inv;
        residual[i] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, std::nearbyint(rest))));
      }
      scales[b] = step / 254.f;
      for (int layer = 0; layer < 2; ++layer) {
        const int8_t* src = layer == 0 ? in : residual;
        int8_t* dst = out + layer * width;
        if (dup) {
          std::memcpy(dst, src, 16);
          std::memcpy(dst + 16, src, 16);
          std::memcpy(dst + 32, src + 16, 16);
          std::memcpy(dst + 48, src + 16, 16);
        } else {
          std::memcpy(dst, src, kBlock);
        }
      }
    }
  }
}

using Parallel = void (*)(void* ctx, void (*fn)(void*, size_t), size_t count, void* data);

// Units (column pairs or columns) per task, a multiple of `align`. One large slice per thread for a single row:
// each task handed to ONNX Runtime's pool costs more than a few columns' work (2 or 4 slices on two threads
// decoded alike); more slices when many rows make each column's work large.
int64_t per_task(int64_t units, int64_t rows, int64_t align) {
  const int64_t slices = rows == 1 ? cores() : std::max<int64_t>(16, 4 * cores());
  return std::max<int64_t>(align, ((units + slices - 1) / slices + align - 1) / align * align);
}

// Runs task(work, i) for each slice: on ONNX Runtime's pool through `parallel`, or here when there is none.
void run_tasks(void (*task)(void*, size_t), void* work, int64_t units, int64_t per, Parallel parallel, void* ctx) {
  const size_t tasks = static_cast<size_t>((units + per - 1) / per);
  if (parallel != nullptr && tasks > 1) {
    parallel(ctx, task, tasks, work);
  } else {
    for (size_t i = 0; i < tasks; ++i) task(work, i);
  }
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

// Entry used by the kernel and by tests through ctypes: w [N/2, K/32, 32] (column pairs), d [N/2, K/32, 2] and
// m [N, K/32] as float16 bits; N even. `parallel` runs tasks 0..count-1 (serially if null).
extern "C" __attribute__((visibility("default"))) void slmops_q41_matmul(
    const float* x, const uint8_t* w, const uint16_t* d, const uint16_t* m, float* y, int64_t rows, int64_t n,
    int64_t k, Parallel parallel, void* ctx) {
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, true, &xd, &xs, &xsum);
  Work work{w, d, m, xd.data(), xs.data(), xsum.data(), y, rows, n, k, 0};
  work.pairs_per_task = per_task(n / 2, rows, 2);
  run_tasks(run_task, &work, n / 2, work.pairs_per_task, parallel, ctx);
}

// ---- Q8_0, for the LM head (tied with the embedding): w = d·q, q in −127..127 stored as q + 128 — the table that
// GatherBlockQuantized reads for the embedding, so the two share it. Same activations as above (int8 plus
// residual, about 16 bits).

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

// w [N, K] holding q + 128, d [N, K/32] float.
extern "C" __attribute__((visibility("default"))) void slmops_q80_matmul(
    const float* x, const uint8_t* w, const float* d, float* y, int64_t rows, int64_t n, int64_t k,
    Parallel parallel, void* ctx) {
  std::vector<int8_t> xd;
  std::vector<float> xs, xsum;
  prepare_activations(x, rows, k, false, &xd, &xs, &xsum);
  Work8 work{w, d, xd.data(), xs.data(), y, rows, n, k, 0};
  work.cols_per_task = per_task(n, rows, 4);
  run_tasks(run_task8, &work, n, work.cols_per_task, parallel, ctx);
}

// ---- the onnxruntime custom op: Q41MatMul(A float [..., K], B uint8 [N/2, K/32, 32], d float16 [N/2, K/32, 2],
//      m float16 [N, K/32]) → Y float [..., N], domain "slmops"

namespace {

using namespace slm_ort;

struct Kernel {
  const OrtApi* api;
};

OrtStatus* error(const OrtApi* api, const char* message) {
  return fn<CreateStatusFn>(api, kCreateStatus)(kSlmInvalidArgument, message);
}

// Shape, element type and data of one tensor (a status when ONNX Runtime refuses).
struct Tensor {
  std::vector<int64_t> dims;
  int type = 0;
  void* data = nullptr;
};

OrtStatus* describe(const OrtApi* api, const OrtValue* value, Tensor* out) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* s = fn<GetTensorTypeAndShapeFn>(api, kGetTensorTypeAndShape)(value, &info)) return s;
  size_t count = 0;
  OrtStatus* s = fn<GetDimensionsCountFn>(api, kGetDimensionsCount)(info, &count);
  if (s == nullptr) {
    out->dims.resize(count);
    s = fn<GetDimensionsFn>(api, kGetDimensions)(info, out->dims.data(), count);
  }
  if (s == nullptr) s = fn<GetTensorElementTypeFn>(api, kGetTensorElementType)(info, &out->type);
  fn<ReleaseTensorTypeAndShapeInfoFn>(api, kReleaseTensorTypeAndShapeInfo)(info);
  if (s == nullptr) {
    auto* mutable_value = const_cast<OrtValue*>(value);  // the API takes non-const; the data is only read
    s = fn<GetTensorMutableDataFn>(api, kGetTensorMutableData)(mutable_value, &out->data);
  }
  return s;
}

struct ParallelCtx {
  const OrtApi* api;
  const OrtKernelContext* context;
  OrtStatus* status;
};

void parallel_for(void* ctx, void (*task)(void*, size_t), size_t count, void* data) {
  auto* p = static_cast<ParallelCtx*>(ctx);
  // one batch per thread, so each thread takes whole slices (0 would let ONNX Runtime choose; not measured apart)
  const size_t batches = std::min<size_t>(count, static_cast<size_t>(cores()));
  p->status = fn<KernelContextParallelForFn>(p->api, kKernelContextParallelFor)(p->context, task, count, batches, data);
}

OrtStatus* read_inputs(const OrtApi* api, OrtKernelContext* context, Tensor* t, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* value = nullptr;
    if (OrtStatus* s = fn<KernelContextGetInputFn>(api, kKernelContextGetInput)(context, i, &value)) return s;
    if (value == nullptr) return error(api, "slmops kernel: an input is missing");
    if (OrtStatus* s = describe(api, value, &t[i])) return s;
  }
  return nullptr;
}

int64_t elements(const Tensor& t) {
  int64_t count = 1;
  for (int64_t v : t.dims) count *= v;
  return count;
}

// Y [..., N] for A [..., K]; `rows` = the product of A's leading dimensions.
OrtStatus* output(const OrtApi* api, OrtKernelContext* context, const Tensor& a, int64_t n, float** y,
                  int64_t* rows) {
  *rows = elements(a) / a.dims.back();
  std::vector<int64_t> dims(a.dims);
  dims.back() = n;
  OrtValue* out = nullptr;
  if (OrtStatus* s = fn<KernelContextGetOutputFn>(api, kKernelContextGetOutput)(context, 0, dims.data(), dims.size(),
                                                                                &out))
    return s;
  void* data = nullptr;
  if (OrtStatus* s = fn<GetTensorMutableDataFn>(api, kGetTensorMutableData)(out, &data)) return s;
  *y = static_cast<float*>(data);
  return nullptr;
}

// Q41MatMul(A float [..., K], B uint8 [N/2, K/32, 32], d float16 [N/2, K/32, 2], m float16 [N, K/32])
OrtStatus* compute_q41(void* kernel, OrtKernelContext* context) {
  const OrtApi* api = static_cast<Kernel*>(kernel)->api;
  Tensor t[4];
  if (OrtStatus* s = read_inputs(api, context, t, 4)) return s;
  if (t[0].type != kSlmFloat || t[1].type != kSlmUint8 || t[2].type != kSlmFloat16 || t[3].type != kSlmFloat16)
    return error(api, "Q41MatMul: expects float A, uint8 B, float16 scales and float16 mins");
  if (t[1].dims.size() != 3 || t[1].dims[2] != 32 || t[0].dims.empty())
    return error(api, "Q41MatMul: B must be [N/2, K/32, 32] (column pairs)");
  const int64_t n = 2 * t[1].dims[0], nb = t[1].dims[1], k = nb * kBlock;
  if (t[0].dims.back() != k) return error(api, "Q41MatMul: A's last dimension differs from B's K");
  if (elements(t[2]) != n * nb || elements(t[3]) != n * nb)
    return error(api, "Q41MatMul: scales and mins must hold N·K/32 values");
  float* y = nullptr;
  int64_t rows = 0;
  if (OrtStatus* s = output(api, context, t[0], n, &y, &rows)) return s;
  if (rows == 0) return nullptr;
  ParallelCtx pc{api, context, nullptr};
  slmops_q41_matmul(static_cast<const float*>(t[0].data), static_cast<const uint8_t*>(t[1].data),
                    static_cast<const uint16_t*>(t[2].data), static_cast<const uint16_t*>(t[3].data), y, rows, n, k,
                    parallel_for, &pc);
  return pc.status;
}

// Q80MatMul(A float [..., K], table uint8 [N, ...] holding q + 128 (K values a row), d float [N·K/32])
OrtStatus* compute_q80(void* kernel, OrtKernelContext* context) {
  const OrtApi* api = static_cast<Kernel*>(kernel)->api;
  Tensor t[3];
  if (OrtStatus* s = read_inputs(api, context, t, 3)) return s;
  if (t[0].type != kSlmFloat || t[1].type != kSlmUint8 || t[2].type != kSlmFloat)
    return error(api, "Q80MatMul: expects float A, a uint8 table and float scales");
  if (t[1].dims.size() < 2 || t[0].dims.empty())
    return error(api, "Q80MatMul: the table must be [N, K] or [N, K/32, 32]");
  const int64_t n = t[1].dims[0], k = elements(t[1]) / n;
  if (k % kBlock != 0) return error(api, "Q80MatMul: K must be a multiple of 32");
  if (t[0].dims.back() != k) return error(api, "Q80MatMul: A's last dimension differs from the table's K");
  if (elements(t[2]) != n * (k / kBlock)) return error(api, "Q80MatMul: scales must hold N·K/32 values");
  float* y = nullptr;
  int64_t rows = 0;
  if (OrtStatus* s = output(api, context, t[0], n, &y, &rows)) return s;
  if (rows == 0) return nullptr;
  ParallelCtx pc{api, context, nullptr};
  slmops_q80_matmul(static_cast<const float*>(t[0].data), static_cast<const uint8_t*>(t[1].data),
                    static_cast<const float*>(t[2].data), y, rows, n, k, parallel_for, &pc);
  return pc.status;
}

template <bool kQ41>
OrtCustomOp make_op() {
  OrtCustomOp op{};
  op.version = kApiVersion;
  op.GetName = [](const OrtCustomOp*) { return kQ41 ? "Q41MatMul" : "Q80MatMul"; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) {
    return static_cast<int>(i == 0 ? kSlmFloat : i == 1 ? kSlmUint8 : kQ41 ? kSlmFloat16 : kSlmFloat);
  };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return size_t{kQ41 ? 4u : 3u}; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return static_cast<int>(kSlmFloat); };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return size_t{1}; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return 0; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = [](const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo*, void** kernel) -> OrtStatus* {
    *kernel = new Kernel{api};
    return nullptr;
  };
  op.KernelComputeV2 = kQ41 ? compute_q41 : compute_q80;
  return op;
}

OrtCustomOp g_q41 = make_op<true>();
OrtCustomOp g_q80 = make_op<false>();

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                                const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kApiVersion);
  if (api == nullptr) return nullptr;  // older than 1.17: nothing to report through; the model fails to load
  OrtCustomOpDomain* domain = nullptr;  // lives as long as the process: sessions may outlive any one caller
  if (OrtStatus* s = fn<CreateCustomOpDomainFn>(api, kCreateCustomOpDomain)("slmops", &domain)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_q41)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_q80)) return s;
  return fn<AddCustomOpDomainFn>(api, kAddCustomOpDomain)(options, domain);
}
