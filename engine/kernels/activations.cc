// The activations every slmops kernel takes (int8 blocks of 32 plus their rounding residual), the slicing of a
// matmul's columns over ONNX Runtime's thread pool, and the choice of instruction-set path.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "kernels.h"

namespace slmops {

// Read once: std::thread::hardware_concurrency() asks the system each time (a file read per call on Linux).
int64_t cores() {
  static const int64_t count = std::max<int64_t>(1, std::thread::hardware_concurrency());
  return count;
}

const char* const kIsaNames[kIsaCount] = {"avx2", "avxvnni", "avx512vnni"};

bool isa_supported(int isa) {
  switch (isa) {
    case kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvxVnni:
      return isa_supported(kAvx2) && __builtin_cpu_supports("avxvnni");
    case kAvx512Vnni:
      return isa_supported(kAvx2) && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    default:
      return false;
  }
}

namespace {

int isa_by_name(const char* name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name != nullptr && std::strcmp(name, kIsaNames[i]) == 0) return i;
  return -1;
}

// The fastest path this CPU supports: AVX512-VNNI (four columns a 512-bit register) before AVX-VNNI before AVX2
// (their integer tiles on 512 rows × 576 → 1536, one thread: 80, 67 and 58 GOP/s on a Xeon with all three).
int best_isa() {
  for (int isa : {kAvx512Vnni, kAvxVnni})
    if (isa_supported(isa)) return isa;
  return kAvx2;
}

std::atomic<int> g_isa{-1};

}  // namespace

int active_isa() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    const int forced = isa_by_name(std::getenv("SLMOPS_KERNEL_PATH"));
    isa = forced >= 0 && isa_supported(forced) ? forced : best_isa();
    g_isa.store(isa, std::memory_order_relaxed);
  }
  return isa;
}

namespace {

// A block of 32 activations loaded into v: its largest magnitude (returned) and its exact sum.
inline float load_block(const float* xb, __m256 v[4], float* sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
  const __m256 amax4 = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                     _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  __m128 mx = _mm_max_ps(_mm256_castps256_ps128(amax4), _mm256_extractf128_ps(amax4, 1));
  mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
  mx = _mm_max_ss(mx, _mm_movehdup_ps(mx));
  *sum = hsum(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
  return _mm_cvtss_f32(mx);
}

// A block of 32 activations at about 16 bits: the int8 layer q = round(x / step) with step = max|x| / 127, and its
// rounding residual r = round((x − step·q) / (step/254)) clamped to ±127, as int32 lanes in order (q[0] holds
// elements 0..7). Returns step; *sum gets the block's exact sum.
inline float quantize_block(const float* xb, __m256i q[4], __m256i r[4], float* sum) {
  __m256 v[4];
  const float amax = load_block(xb, v, sum), step = amax / 127.f;
  const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
  const __m256 fine = _mm256_set1_ps(step > 0.f ? 254.f / step : 0.f), stepv = _mm256_set1_ps(step);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  for (int i = 0; i < 4; ++i) {
    q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // rounds to nearest
    const __m256 rest = _mm256_mul_ps(_mm256_sub_ps(v[i], _mm256_mul_ps(stepv, _mm256_cvtepi32_ps(q[i]))), fine);
    r[i] = _mm256_min_epi32(hi, _mm256_max_epi32(lo, _mm256_cvtps_epi32(rest)));
  }
  return step;
}

// 32 int32 lanes in order as int16 / int8 (packs work within 128-bit lanes; the permutes restore the order).
inline void store_int16(const __m256i v[4], int16_t* out) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute4x64_epi64(_mm256_packs_epi32(v[0], v[1]), 0xD8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16),
                      _mm256_permute4x64_epi64(_mm256_packs_epi32(v[2], v[3]), 0xD8));
}

inline void store_int8(const __m256i v[4], int8_t* out) {
  const __m256i i8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                      _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

}  // namespace

void prepare_layers(const float* x, int64_t rows, int64_t k, std::vector<int8_t>* xa, std::vector<float>* xs,
                   std::vector<float>* xsum, std::vector<int32_t>* vsum) {
  const int64_t nb = k / kBlock;
  xa->resize(static_cast<size_t>(rows * nb * 2 * kBlock));
  xs->resize(static_cast<size_t>(rows * nb));
  xsum->resize(static_cast<size_t>(rows * nb));
  if (vsum) vsum->resize(static_cast<size_t>(rows * nb));
  const __m256i k254 = _mm256_set1_epi32(254);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      __m256i q[4], res[4];
      (*xs)[r * nb + b] = quantize_block(x + r * k + b * kBlock, q, res, xsum->data() + r * nb + b) / 254.f;
      int8_t* out = xa->data() + (r * nb + b) * 2 * kBlock;
      store_int8(q, out);
      store_int8(res, out + kBlock);
      if (vsum) {
        __m256i total = _mm256_setzero_si256();
        for (int i = 0; i < 4; ++i) total = _mm256_add_epi32(total, _mm256_add_epi32(_mm256_mullo_epi32(q[i], k254), res[i]));
        int32_t lanes[8];
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), total);
        (*vsum)[r * nb + b] = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
      }
    }
}

namespace {

struct X16Work {
  const float* x;
  int64_t rows, k, per;
  int16_t* x16;
  float* xs;
  float* xsum;
};

// Rows of a slice, block by block: prepare_activations' two layers joined as 254·xq + xr in int16.
void x16_task(void* data, size_t task) {
  const auto& w = *static_cast<const X16Work*>(data);
  const int64_t nb = w.k / kBlock, end = std::min(w.rows, static_cast<int64_t>(task + 1) * w.per);
  const __m256i k254 = _mm256_set1_epi32(254);
  for (int64_t r = static_cast<int64_t>(task) * w.per; r < end; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      __m256i q[4], res[4];
      w.xs[r * nb + b] = quantize_block(w.x + r * w.k + b * kBlock, q, res, w.xsum + r * nb + b) / 254.f;
      for (int i = 0; i < 4; ++i) q[i] = _mm256_add_epi32(_mm256_mullo_epi32(q[i], k254), res[i]);
      store_int16(q, w.x16 + r * w.k + b * kBlock);
    }
}

}  // namespace

void prepare_x16(const float* x, int64_t rows, int64_t k, int16_t* x16, float* xs, float* xsum, Parallel parallel,
                 void* ctx) {
  X16Work work{x, rows, k, std::max<int64_t>(1, (rows + 4 * cores() - 1) / (4 * cores())), x16, xs, xsum};
  run_tasks(x16_task, &work, rows, work.per, parallel, ctx);
}

// Units (column pairs or columns) per task, a multiple of `align`. One large slice per thread for a single row:
// each task handed to ONNX Runtime's pool costs more than a few columns' work (2 or 4 slices on two threads
// decoded alike); more slices when many rows make each column's work large.
// y[row, c0..c1) += t[row]·B[:, c0..c1) for every row: eight outputs at a time in a register over the r rows of B.
void add_lora_columns(const Lora& lora, float* y, int64_t rows, int64_t n, int64_t c0, int64_t c1) {
  const int64_t r = lora.r;
  for (int64_t row = 0; row < rows; ++row) {
    const float* t = lora.t + row * r;
    float* out = y + row * n;
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      __m256 acc = _mm256_loadu_ps(out + c);
      for (int64_t q = 0; q < r; ++q) {
        const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lora.b + q * n + c)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(t[q]), b, acc);
      }
      _mm256_storeu_ps(out + c, acc);
    }
    for (; c < c1; ++c) {
      float sum = out[c];
      for (int64_t q = 0; q < r; ++q) sum += t[q] * _cvtsh_ss(lora.b[q * n + c]);
      out[c] = sum;
    }
  }
}

int64_t per_task(int64_t units, int64_t rows, int64_t align) {
  const int64_t slices = rows == 1 ? cores() : std::max<int64_t>(16, 4 * cores());
  return std::max<int64_t>(align, ((units + slices - 1) / slices + align - 1) / align * align);
}

namespace {

struct SwigluWork {
  const float* y;  // [rows, 2·half]: gate | up
  float* out;      // [rows, half]
  int64_t rows, half, per;
};

void swiglu_task(void* data, size_t task) {
  const auto& w = *static_cast<const SwigluWork*>(data);
  const int64_t end = std::min(w.rows, static_cast<int64_t>(task + 1) * w.per);
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t r = static_cast<int64_t>(task) * w.per; r < end; ++r) {
    const float* gate = w.y + r * 2 * w.half;
    const float* up = gate + w.half;
    float* out = w.out + r * w.half;
    int64_t j = 0;
    for (; j + 8 <= w.half; j += 8) {  // silu(g)·u = g / (1 + e^-g) · u
      const __m256 g = _mm256_loadu_ps(gate + j);
      const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      _mm256_storeu_ps(out + j, _mm256_mul_ps(silu, _mm256_loadu_ps(up + j)));
    }
    for (; j < w.half; ++j) out[j] = gate[j] / (1.f + std::exp(-gate[j])) * up[j];
  }
}

}  // namespace

void swiglu(const float* y, float* out, int64_t rows, int64_t half, Parallel parallel, void* ctx) {
  SwigluWork work{y, out, rows, half, std::max<int64_t>(1, (rows + 4 * cores() - 1) / (4 * cores()))};
  run_tasks(swiglu_task, &work, rows, work.per, rows > 1 ? parallel : nullptr, ctx);
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

}  // namespace slmops

extern "C" int slmops_kernel_select(const char* name) {
  const int isa = slmops::isa_by_name(name);
  if (isa < 0) return -1;
  if (!slmops::isa_supported(isa)) return -2;
  slmops::g_isa.store(isa, std::memory_order_relaxed);
  return 0;
}

extern "C" int slmops_kernel_supported(const char* name) {
  const int isa = slmops::isa_by_name(name);
  return isa < 0 ? -1 : slmops::isa_supported(isa) ? 1 : 0;
}

extern "C" const char* slmops_kernel_path() { return slmops::kIsaNames[slmops::active_isa()]; }
