// Fused Q4_1 matmul for ONNX Runtime: y = x · Wᵀ where each block of 32 weights of a row of W is d·q + m
// (q in 0..15, float d and m; llama.cpp's Q4_1). ONNX Runtime's MatMulNBits has only integer zero points, so the
// float offsets m otherwise need extra ops; here one kernel does
//
//     y[n] = Σ_b d[n,b]·xs[b]·(q[n,b] · v[b])  +  Σ_b m[n,b]·Σx[b]
//
// with x per block of 32 at about 16 bits: v = 254·xq + xr, an int8 layer at step sx = max|x|/127 plus its rounding
// residual at sx/254 (xs = sx/254), and the offset term taken on x's exact float block sums. The export stores the
// codes by column pairs (byte j of a block holds q[j] in its low nibble and q[j+16] in its high nibble) with d and m
// as float16 (exact for a GGUF Q4_1 source); the kernel packs them once into groups of 16 columns (kernels.h:
// pack_q41), where one 32-bit lane holds one column: a block's integer sum is complete in its lane before its float
// steps (d·xs·Σ, then m·Σx), with no horizontal sums. Decode streams the packed weights once per token and prefetches
// ahead; rows come in tiles that share each block's unpacked weights (q4_1_tiles.inc). Prompts of kGemmRows rows or
// more take
// the integer GEMM of q4_1_gemm.inc (weights unpacked once per panel, v as one int16) — the same arithmetic, so every
// row gets the same bits whatever else is in its call. Built by engine/kernels/__init__.py with -mavx2 -mfma -mf16c
// (used only on CPUs that have them) plus AVX-VNNI and AVX512-VNNI variants of the tiles and the GEMM, chosen at run
// time (activations.cc: active_isa).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

struct Work {
  const uint8_t* w;   // packed codes [groups, nb, 4, kGroup, 4]
  const uint16_t* d;  // packed scales and mins [groups, nb, 2, kGroup] float16
  const int8_t* xa;   // [rows, nb, 64]: xq, then xr (prepare_layers)
  const float* xs;    // [rows, nb]
  const float* xsum;  // [rows, nb]
  float* y;
  int64_t rows, n, k, groups_per_task;
  int64_t first_group;  // where task 0 starts
  Lora lora{};
};

struct IntGemmWork {  // the prompt GEMM (q4_1_gemm.inc)
  const int16_t* x16;  // [rows, K]
  const float* xs;     // [rows, K/32]
  const float* xsum;   // [rows, K/32]
  const uint8_t* w;    // packed, as in Work
  const uint16_t* d;
  float* y;
  int64_t rows, n, k, blocks_per_task;
  Lora lora;
};

}  // namespace
}  // namespace slmops

#define SLMOPS_BODY "q4_1_tiles.inc"
#include "per_isa.inc"
#undef SLMOPS_BODY

using namespace slmops;

namespace slmops {

void pack_q41(const uint8_t* w, const uint16_t* d, const uint16_t* m, int64_t n, int64_t k, uint8_t* out) {
  const int64_t nb = k / kBlock, groups = column_groups(n);
  uint16_t* dout = reinterpret_cast<uint16_t*>(out + groups * nb * kGroupCodes);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* codes = out + (g * nb + b) * kGroupCodes;
      uint16_t* scales = dout + (g * nb + b) * 2 * kGroup;
      for (int64_t lane = 0; lane < kGroup; ++lane) {
        const int64_t col = g * kGroup + lane;
        const uint8_t* src = col < n ? w + ((col / 2) * nb + b) * 32 + (col % 2) * 16 : nullptr;
        for (int c = 0; c < 4; ++c)
          for (int i = 0; i < 4; ++i) codes[(c * kGroup + lane) * 4 + i] = src ? src[4 * c + i] : 0;
        scales[lane] = src ? d[((col / 2) * nb + b) * 2 + col % 2] : 0;
        scales[kGroup + lane] = src ? m[b * n + col] : 0;
      }
    }
}

}  // namespace slmops

// `parallel` runs tasks 0..count-1 (serially if null).
extern "C" void slmops_q41_matmul(
    const float* x, const uint8_t* w, const uint16_t* d, const uint16_t* m, float* y, int64_t rows, int64_t n,
    int64_t k, Parallel parallel, void* ctx) {
  std::vector<uint8_t> packed(q41_packed_bytes(n, k));
  pack_q41(w, d, m, n, k, packed.data());
  slmops_q41_matmul_lora(x, packed.data(), y, rows, n, k, nullptr, nullptr, 0, parallel, ctx);
}

extern "C" size_t slmops_q41_packed_bytes(int64_t n, int64_t k) { return q41_packed_bytes(n, k); }

extern "C" void slmops_q41_pack(const uint8_t* w, const uint16_t* d, const uint16_t* m, int64_t n, int64_t k,
                                uint8_t* out) {
  pack_q41(w, d, m, n, k, out);
}

extern "C" void slmops_q41_matmul_packed(const float* x, const uint8_t* packed, float* y, int64_t rows, int64_t n,
                                         int64_t k, Parallel parallel, void* ctx) {
  slmops_q41_matmul_lora(x, packed, y, rows, n, k, nullptr, nullptr, 0, parallel, ctx);
}

extern "C" void slmops_q41_matmul_lora(const float* x, const uint8_t* packed, float* y, int64_t rows, int64_t n,
                                       int64_t k, const float* lora_t, const uint16_t* lora_b, int64_t lora_r,
                                       Parallel parallel, void* ctx) {
  const int isa = active_isa();
  const Lora lora{lora_t, lora_b, lora_r};
  const int64_t nb = k / kBlock, groups = column_groups(n);
  const auto* d = reinterpret_cast<const uint16_t*>(packed + groups * nb * kGroupCodes);
  int64_t first_group = 0;
  if (rows >= kGemmRows && n >= kGemmCols) {
    static void (*const kGemm[])(void*, size_t) = {avx2::run_int_gemm_task, avxvnni::run_int_gemm_task,
                                                   avx512vnni::run_int_gemm_task};
    thread_local std::vector<int16_t> x16;  // kept between calls: a prompt makes ~120 of them on this thread
    thread_local std::vector<float> xs, xsum;
    x16.resize(static_cast<size_t>(rows * k));
    xs.resize(static_cast<size_t>(rows * nb));
    xsum.resize(static_cast<size_t>(rows * nb));
    prepare_x16(x, rows, k, x16.data(), xs.data(), xsum.data(), parallel, ctx);
    IntGemmWork gemm{x16.data(), xs.data(), xsum.data(), packed, d, y, rows, n, k,
                     per_task(n / kGemmCols, rows, 1), lora};
    run_tasks(kGemm[isa], &gemm, n / kGemmCols, gemm.blocks_per_task, parallel, ctx);
    first_group = n / kGemmCols * kGemmCols / kGroup;
    if (first_group == groups) return;
  }
  thread_local std::vector<int8_t> xa;
  thread_local std::vector<float> xs, xsum;
  prepare_layers(x, rows, k, &xa, &xs, &xsum);
  Work work{packed, d, xa.data(), xs.data(), xsum.data(), y, rows, n, k, 0, first_group, lora};
  work.groups_per_task = first_group ? groups - first_group : per_task(groups, rows, 1);  // the GEMM's leftover: one task
  static void (*const kTasks[])(void*, size_t) = {avx2::run_task, avxvnni::run_task, avx512vnni::run_task};
  run_tasks(kTasks[isa], &work, groups - first_group, work.groups_per_task, parallel, ctx);
}
