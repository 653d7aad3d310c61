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
inline __m256 pair_block(const uint8_t* w, const int8_t* xd) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i lo = _mm256_and_si256(packed, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
  const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd));
  const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xd + 32));
  const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
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
  const int8_t* xd;   // [rows, nb, 64]
  const float* xs;    // [rows, nb]
  const float* xsum;  // [rows, nb]
  float* y;
  int64_t rows, n, k, pairs_per_task;
};

void run_task(void* data, size_t task) {
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
      const int8_t* xd = t.xd + r * nb * 64;
      const float* xs = t.xs + r * nb;
      __m256 acc_a = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        _mm_prefetch(reinterpret_cast<const char*>(wa + b * 32 + kAhead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wb + b * 32 + kAhead), _MM_HINT_T0);
        const __m256 sx = _mm256_set1_ps(xs[b]);
        acc_a = _mm256_fmadd_ps(pair_block(wa + b * 32, xd + b * 64), pair_scale(da + b * 2, sx), acc_a);
        acc_b = _mm256_fmadd_ps(pair_block(wb + b * 32, xd + b * 64), pair_scale(db + b * 2, sx), acc_b);
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
      const int8_t* xd = t.xd + r * nb * 64;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256 sx = _mm256_set1_ps(t.xs[r * nb + b]);
        acc = _mm256_fmadd_ps(pair_block(wa + b * 32, xd + b * 64), pair_scale(da + b * 2, sx), acc);
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
    int64_t k,
    void (*parallel)(void* ctx, void (*fn)(void*, size_t), size_t count, void* data), void* ctx) {
  const int64_t nb = k / kBlock;
  std::vector<int8_t> xq(static_cast<size_t>(k)), xd(static_cast<size_t>(rows * nb * 64));
  std::vector<float> xs(static_cast<size_t>(rows * nb)), xsum(static_cast<size_t>(rows * nb));
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(x + r * k, k, xq.data(), xs.data() + r * nb, xsum.data() + r * nb);
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* out = xd.data() + (r * nb + b) * 64;
      const int8_t* in = xq.data() + b * kBlock;
      std::memcpy(out, in, 16);
      std::memcpy(out + 16, in, 16);
      std::memcpy(out + 32, in + 16, 16);
      std::memcpy(out + 48, in + 16, 16);
    }
  }
  Work work{w, d, m, xd.data(), xs.data(), xsum.data(), y, rows, n, k, 0};
  // one large slice per thread for a single row: each task handed to ONNX Runtime's pool costs more than a few
  // columns' work (2 or 4 slices on two threads decoded alike); more slices when many rows make each column's
  // work large
  const int64_t pairs = n / 2;
  const int64_t slices = rows == 1 ? cores() : std::max<int64_t>(16, 4 * cores());
  work.pairs_per_task = ((pairs + slices - 1) / slices + 1) / 2 * 2;
  if (work.pairs_per_task == 0) work.pairs_per_task = 2;
  const size_t tasks = static_cast<size_t>((pairs + work.pairs_per_task - 1) / work.pairs_per_task);
  if (parallel != nullptr && tasks > 1) {
    parallel(ctx, run_task, tasks, &work);
  } else {
    for (size_t i = 0; i < tasks; ++i) run_task(&work, i);
  }
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
  // batches = threads: with 0 (no limit) ONNX Runtime's split measured 20 % slower per token
  const size_t batches = std::min<size_t>(count, static_cast<size_t>(cores()));
  p->status = fn<KernelContextParallelForFn>(p->api, kKernelContextParallelFor)(p->context, task, count, batches, data);
}

OrtStatus* compute(void* kernel, OrtKernelContext* context) {
  const OrtApi* api = static_cast<Kernel*>(kernel)->api;
  Tensor t[4];
  for (size_t i = 0; i < 4; ++i) {
    const OrtValue* value = nullptr;
    if (OrtStatus* s = fn<KernelContextGetInputFn>(api, kKernelContextGetInput)(context, i, &value)) return s;
    if (value == nullptr) return error(api, "Q41MatMul: an input is missing");
    if (OrtStatus* s = describe(api, value, &t[i])) return s;
  }
  if (t[0].type != kSlmFloat || t[1].type != kSlmUint8 || t[2].type != kSlmFloat16 || t[3].type != kSlmFloat16)
    return error(api, "Q41MatMul: expects float A, uint8 B, float16 scales and float16 mins");
  if (t[1].dims.size() != 3 || t[1].dims[2] != 32 || t[0].dims.empty())
    return error(api, "Q41MatMul: B must be [N/2, K/32, 32] (column pairs)");
  const int64_t n = 2 * t[1].dims[0], nb = t[1].dims[1], k = nb * kBlock;
  if (t[0].dims.back() != k) return error(api, "Q41MatMul: A's last dimension differs from B's K");
  int64_t sn = 1, sm = 1;
  for (int64_t v : t[2].dims) sn *= v;
  for (int64_t v : t[3].dims) sm *= v;
  if (sn != n * nb || sm != n * nb) return error(api, "Q41MatMul: scales and mins must hold N·K/32 values");
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < t[0].dims.size(); ++i) rows *= t[0].dims[i];
  std::vector<int64_t> out_dims(t[0].dims);
  out_dims.back() = n;
  OrtValue* out = nullptr;
  if (OrtStatus* s = fn<KernelContextGetOutputFn>(api, kKernelContextGetOutput)(context, 0, out_dims.data(),
                                                                                out_dims.size(), &out))
    return s;
  void* y = nullptr;
  if (OrtStatus* s = fn<GetTensorMutableDataFn>(api, kGetTensorMutableData)(out, &y)) return s;
  if (rows == 0) return nullptr;
  ParallelCtx pc{api, context, nullptr};
  slmops_q41_matmul(static_cast<const float*>(t[0].data), static_cast<const uint8_t*>(t[1].data),
                    static_cast<const uint16_t*>(t[2].data), static_cast<const uint16_t*>(t[3].data),
                    static_cast<float*>(y), rows, n, k, parallel_for, &pc);
  return pc.status;
}

OrtCustomOp make_op() {
  OrtCustomOp op{};
  op.version = kApiVersion;
  op.GetName = [](const OrtCustomOp*) { return "Q41MatMul"; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) {
    return static_cast<int>(i == 0 ? kSlmFloat : i == 1 ? kSlmUint8 : kSlmFloat16);
  };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return size_t{4}; };
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
  op.KernelComputeV2 = compute;
  return op;
}

OrtCustomOp g_op = make_op();

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                                const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kApiVersion);
  if (api == nullptr) return nullptr;  // older than 1.17: nothing to report through; the model fails to load
  OrtCustomOpDomain* domain = nullptr;  // lives as long as the process: sessions may outlive any one caller
  if (OrtStatus* s = fn<CreateCustomOpDomainFn>(api, kCreateCustomOpDomain)("slmops", &domain)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_op)) return s;
  return fn<AddCustomOpDomainFn>(api, kAddCustomOpDomain)(options, domain);
}
