// The onnxruntime custom ops of domain "slmops" over the kernels: Q41MatMul(A float [..., K], B uint8
// [N/2, K/32, 32], d float16 [N/2, K/32, 2], m float16 [K/32, N]) and Q80MatMul(A, table uint8 [N, K], d float
// [N·K/32]) → Y float [..., N]; RegisterCustomOps is the library's entry point. Q41MatMul takes two optional
// inputs more, a LoRA adapter's factors A float16 [K, r] and B float16 [r, N]: Y += (A_in · A) · B (r = 0:
// nothing). Q41MatMulSwiGLU is Q41MatMul over a SiLU-gated MLP's gate and up weights side by side, followed by
// silu(gate)·up: one call where ONNX Runtime ran a Split, a Sigmoid and two Muls. The library's third kind of op,
// GroupQueryAttention, is in attention_op.cc; the helpers all share, in ort_kernel.h.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "ort_kernel.h"

namespace {

using namespace slm_ort;
using slmops::cores;
using slmops::kBlock;

// Set by slmops_last_position_only on the thread that runs the session (onnxruntime-genai runs the graph on the
// thread that appends the tokens); read by Q80MatMul.
thread_local bool g_last_position_only = false;

struct Kernel {
  const OrtApi* api;
  // The weights packed for the kernel, in 2 MiB pages (weights.cc): Q41MatMul's codes, scales and mins,
  // Q80MatMul's table and scales. Empty unless the weights are constant initializers.
  slmops::WeightCopy weights;
};

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

// Input i when it is a constant initializer (its Tensor filled), else false.
bool constant_input(const Kernel* kernel, const OrtKernelInfo* info, int i, Tensor* t) {
  int constant = 0;
  const OrtValue* value = nullptr;
  OrtStatus* s = fn<KernelInfoGetConstantInputTensorFn>(kernel->api, kKernelInfoGetConstantInputTensor)(
      info, static_cast<size_t>(i), &constant, &value);
  if (s == nullptr && constant && value != nullptr) s = describe(kernel->api, value, t);
  if (s != nullptr) fn<ReleaseStatusFn>(kernel->api, kReleaseStatus)(s);
  return s == nullptr && constant && t->data != nullptr;
}

size_t bytes_of(const Tensor& t) {
  return static_cast<size_t>(elements(t)) * (t.type == kSlmUint8 ? 1 : t.type == kSlmFloat16 ? 2 : 4);
}

// Q41MatMul's weights in the layout the kernel reads (kernels.h: pack_q41), packed once when they are constant
// initializers of the shapes compute_q41 takes (else each call packs what it is given, or reports the shapes).
void pack_constant_q41(Kernel* kernel, const OrtKernelInfo* info) {
  Tensor t[3];
  for (int i = 0; i < 3; ++i)
    if (!constant_input(kernel, info, i + 1, &t[i])) return;
  if (t[0].type != kSlmUint8 || t[1].type != kSlmFloat16 || t[2].type != kSlmFloat16 || t[0].dims.size() != 3 ||
      t[0].dims[2] != 32)
    return;
  const int64_t n = 2 * t[0].dims[0], nb = t[0].dims[1];
  if (elements(t[1]) != n * nb || elements(t[2]) != n * nb) return;
  auto* at = static_cast<uint8_t*>(kernel->weights.allocate(slmops::q41_packed_bytes(n, nb * kBlock)));
  if (at == nullptr) return;
  slmops::pack_q41(static_cast<const uint8_t*>(t[0].data), static_cast<const uint16_t*>(t[1].data),
                   static_cast<const uint16_t*>(t[2].data), n, nb * kBlock, at);
  for (const Tensor& source : t) slmops::WeightCopy::drop_source(source.data, bytes_of(source));
}

// Q80MatMul's table and scales packed for the kernel (kernels.h: pack_q80) when they are constant initializers of
// the shapes compute_q80 takes.
void pack_constant_q80(Kernel* kernel, const OrtKernelInfo* info) {
  Tensor t[2];
  for (int i = 0; i < 2; ++i)
    if (!constant_input(kernel, info, i + 1, &t[i])) return;
  if (t[0].type != kSlmUint8 || t[1].type != kSlmFloat || t[0].dims.size() < 2) return;
  const int64_t n = t[0].dims[0], k = elements(t[0]) / n;
  if (k % kBlock != 0 || elements(t[1]) != n * (k / kBlock)) return;
  auto* at = static_cast<uint8_t*>(kernel->weights.allocate(slmops::q80_packed_bytes(n, k)));
  if (at == nullptr) return;
  slmops::pack_q80(static_cast<const uint8_t*>(t[0].data), static_cast<const float*>(t[1].data), n, k, at);
  // The table's own pages stay: the embedding (GatherBlockQuantized) reads them.
  slmops::WeightCopy::drop_source(t[1].data, bytes_of(t[1]));
}

// The kernel's packed copy of its weights, or (weights given at run time) `pack(out)` into `bytes` of this thread's
// at every call.
template <class Pack>
const uint8_t* packed_weights(const slmops::WeightCopy& copy, size_t bytes, Pack pack) {
  if (copy.data != nullptr) return static_cast<const uint8_t*>(copy.data);
  thread_local std::vector<uint8_t> fed;
  fed.resize(bytes);
  pack(fed.data());
  return fed.data();
}

// A LoRA adapter beside the base weights: Y += (X · A) · B, factors stored in float16 (half the bytes a decode step
// reads; converted by F16C), sums in fp32. Here t = X · A [rows, r] (A read once per row, eight columns of t in
// registers); the kernel adds t · B on the columns each of its tasks writes.
constexpr int64_t kMaxLoraRank = 512;  // one slot's rank: up to three matrices of rank 64 side by side, and more

struct LoraDown {
  const float* x;
  const uint16_t* a;
  float* t;
  int64_t rows, k, r, per;
};

inline __m256 load_half8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

void lora_down_row(const float* x, const uint16_t* a, float* t, int64_t k, int64_t r) {
  int64_t j = 0;
  for (; j + 8 <= r; j += 8) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]), load_half8(a + i * r + j), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(x[i + 1]), load_half8(a + (i + 1) * r + j), acc1);
    }
    for (; i < k; ++i) acc0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]), load_half8(a + i * r + j), acc0);
    _mm256_storeu_ps(t + j, _mm256_add_ps(acc0, acc1));
  }
  for (; j < r; ++j) {
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) sum += x[i] * _cvtsh_ss(a[i * r + j]);
    t[j] = sum;
  }
}

void lora_down_task(void* data, size_t index) {
  const auto* w = static_cast<const LoraDown*>(data);
  const int64_t end = std::min(w->rows, static_cast<int64_t>(index + 1) * w->per);
  for (int64_t row = static_cast<int64_t>(index) * w->per; row < end; ++row)
    lora_down_row(w->x + row * w->k, w->a, w->t + row * w->r, w->k, w->r);
}


// The adapter's rank (0: none) after checking its factors; t filled with X · A.
OrtStatus* lora_down(const OrtApi* api, OrtKernelContext* context, const Tensor* lora, const float* x, int64_t rows,
                     int64_t k, int64_t n, std::vector<float>* t, int64_t* rank) {
  *rank = 0;
  if (lora[0].data == nullptr && lora[1].data == nullptr) return nullptr;
  if (lora[0].type != kSlmFloat16 || lora[1].type != kSlmFloat16 || lora[0].dims.size() != 2 ||
      lora[1].dims.size() != 2)
    return error(api, "Q41MatMul: the adapter factors must be float16 A [K, r] and B [r, N]");
  const int64_t r = lora[0].dims[1];
  if (lora[0].dims[0] != k || lora[1].dims[0] != r || lora[1].dims[1] != n)
    return error(api, "Q41MatMul: the adapter factors do not fit this matrix (A must be [K, r], B [r, N])");
  if (r == 0) return nullptr;
  if (r > kMaxLoraRank) return error(api, "Q41MatMul: the adapter's rank is above 512 in one matrix");
  *rank = r;
  t->resize(static_cast<size_t>(rows * r));
  const int64_t tasks = std::min<int64_t>(rows, cores());
  LoraDown work{x, static_cast<const uint16_t*>(lora[0].data), t->data(), rows, k, r, (rows + tasks - 1) / tasks};
  if (tasks == 1) {  // decode: one row, a few thousand multiply-adds (splitting K over the pool gained nothing)
    lora_down_task(&work, 0);
    return nullptr;
  }
  ParallelCtx pc{api, context, nullptr};
  parallel_for(&pc, lora_down_task, static_cast<size_t>(tasks), &work);
  return pc.status;
}

// Q41MatMul(A float [..., K], B uint8 [N/2, K/32, 32], d float16 [N/2, K/32, 2], m float16 [K/32, N][, LoRA A
// float16 [K, r], LoRA B float16 [r, N]]) → Y [..., N]; Q41MatMulSwiGLU, the same over a SiLU-gated MLP's gate and
// up weights side by side (gate the first N/2 columns), → silu(gate)·up [..., N/2].
OrtStatus* compute_q41(void* kernel, OrtKernelContext* context, bool swiglu) {
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
  if (t[3].dims.size() != 2 || t[3].dims[0] != nb || t[3].dims[1] != n)
    return error(api, "Q41MatMul: mins must be [K/32, N] (block by block)");
  if (swiglu && n % 2 != 0) return error(api, "Q41MatMulSwiGLU: N must be even (gate and up side by side)");
  float* y = nullptr;
  int64_t rows = 0;
  if (OrtStatus* s = output(api, context, t[0], swiglu ? n / 2 : n, &y, &rows)) return s;
  if (rows == 0) return nullptr;
  float* out = y;
  thread_local std::vector<float> gate_up;  // Q41MatMulSwiGLU: both halves, before they are joined
  if (swiglu) {
    gate_up.resize(static_cast<size_t>(rows * n));
    y = gate_up.data();
  }
  const auto* x = static_cast<const float*>(t[0].data);
  Tensor lora[2];
  if (OrtStatus* s = read_inputs(api, context, lora, 2, 4, true)) return s;
  std::vector<float> lora_t;
  int64_t rank = 0;
  if (OrtStatus* s = lora_down(api, context, lora, x, rows, k, n, &lora_t, &rank)) return s;
  const slmops::WeightCopy& copy = static_cast<Kernel*>(kernel)->weights;
  const uint8_t* packed = packed_weights(copy, slmops::q41_packed_bytes(n, k), [&](uint8_t* out) {
    slmops::pack_q41(static_cast<const uint8_t*>(t[1].data), static_cast<const uint16_t*>(t[2].data),
                     static_cast<const uint16_t*>(t[3].data), n, k, out);
  });
  ParallelCtx pc{api, context, nullptr};
  slmops_q41_matmul_lora(x, packed, y, rows, n, k, lora_t.data(), static_cast<const uint16_t*>(lora[1].data), rank,
                         parallel_for, &pc);
  if (swiglu && pc.status == nullptr) slmops::swiglu(y, out, rows, n / 2, parallel_for, &pc);
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
  const int64_t seq = t[0].dims.size() >= 2 ? t[0].dims[t[0].dims.size() - 2] : 1;
  const auto* x = static_cast<const float*>(t[0].data);
  const uint8_t* packed = packed_weights(static_cast<Kernel*>(kernel)->weights, slmops::q80_packed_bytes(n, k),
                                         [&](uint8_t* out) {
    slmops::pack_q80(static_cast<const uint8_t*>(t[1].data), static_cast<const float*>(t[2].data), n, k, out);
  });
  ParallelCtx pc{api, context, nullptr};
  if (!g_last_position_only || seq == 1) {
    slmops_q80_matmul_packed(x, packed, y, rows, n, k, parallel_for, &pc);
    return pc.status;
  }
  // A prompt's head in generation, where only each sequence's last position is read: those rows alone (the float
  // GEMM over every position of a 512-token prompt took 11 % of its time). The other positions are not written:
  // onnxruntime-genai allocates the output afresh for each prompt (100 MB for 512 tokens), and filling it cost
  // another 0.1 s of page faults.
  const int64_t seqs = rows / seq;
  std::vector<float> x_last(static_cast<size_t>(seqs * k)), y_last(static_cast<size_t>(seqs * n));
  for (int64_t b = 0; b < seqs; ++b)
    std::copy_n(x + ((b + 1) * seq - 1) * k, k, x_last.data() + b * k);
  slmops_q80_matmul_packed(x_last.data(), packed, y_last.data(), seqs, n, k, parallel_for, &pc);
  for (int64_t b = 0; b < seqs; ++b)
    std::copy_n(y_last.data() + b * n, n, y + ((b + 1) * seq - 1) * n);
  return pc.status;
}

enum class Op { kQ41, kQ41SwiGLU, kQ80 };

template <Op kOp>
OrtCustomOp make_op() {
  constexpr bool kQ41 = kOp != Op::kQ80;
  OrtCustomOp op = cpu_op();
  op.GetName = [](const OrtCustomOp*) {
    return kOp == Op::kQ41 ? "Q41MatMul" : kOp == Op::kQ41SwiGLU ? "Q41MatMulSwiGLU" : "Q80MatMul";
  };
  op.GetInputType = [](const OrtCustomOp*, size_t i) {
    return static_cast<int>(i == 0 ? kSlmFloat : i == 1 ? kSlmUint8 : kQ41 ? kSlmFloat16 : kSlmFloat);
  };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return size_t{kQ41 ? 6u : 3u}; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return size_t{1}; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  // the adapter factors optional
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t i) { return i >= 4 ? 1 : 0; };
  op.CreateKernelV2 = [](const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info,
                         void** kernel) -> OrtStatus* {
    auto* created = new Kernel{api, {}};
    if constexpr (kQ41)
      pack_constant_q41(created, info);
    else
      pack_constant_q80(created, info);
    *kernel = created;
    return nullptr;
  };
  if constexpr (kOp == Op::kQ41)
    op.KernelComputeV2 = [](void* kernel, OrtKernelContext* context) { return compute_q41(kernel, context, false); };
  else if constexpr (kOp == Op::kQ41SwiGLU)
    op.KernelComputeV2 = [](void* kernel, OrtKernelContext* context) { return compute_q41(kernel, context, true); };
  else
    op.KernelComputeV2 = compute_q80;
  return op;
}

OrtCustomOp g_q41 = make_op<Op::kQ41>();
OrtCustomOp g_q41_swiglu = make_op<Op::kQ41SwiGLU>();
OrtCustomOp g_q80 = make_op<Op::kQ80>();

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                                const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kApiVersion);
  if (api == nullptr) return nullptr;  // older than 1.17: nothing to report through; the model fails to load
  OrtCustomOpDomain* domain = nullptr;  // lives as long as the process: sessions may outlive any one caller
  if (OrtStatus* s = fn<CreateCustomOpDomainFn>(api, kCreateCustomOpDomain)("slmops", &domain)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_q41)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_q41_swiglu)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, &g_q80)) return s;
  if (OrtStatus* s = fn<CustomOpDomainAddFn>(api, kCustomOpDomainAdd)(domain, kAttentionOp)) return s;
  return fn<AddCustomOpDomainFn>(api, kAddCustomOpDomain)(options, domain);
}

extern "C" __attribute__((visibility("default"))) void slmops_last_position_only(int on) {
  g_last_position_only = on != 0;
}
