// Q8_0 matmul, for the LM head (tied with the embedding): w = d·q, q in −127..127 stored as q + 128 — the table
// that GatherBlockQuantized reads for the embedding. The kernel packs its own copy once (pack_q80): groups of 16
// columns, one 32-bit lane per column, as the Q4_1 kernel's. Below kGemmRows rows the integer tiles here, on the
// Q4_1 tiles' activations (v = 254·xq + xr at about 16 bits, as two byte layers xq, xr): each block's Σ q·v is
// exact in its column's lane before the one float step acc += Σ·(d·xs), so every path and every tile size give a
// row the same bits; vpdpbusd takes the stored q + 128 as unsigned and the lane drops 128·Σv after. From kGemmRows
// rows the float GEMM of gemm.inc.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

struct Work8 {
  const uint8_t* w;     // packed codes [groups, nb, 8, kGroup, 4] (q + 128)
  const float* d;       // packed scales [groups, nb, kGroup]
  const int8_t* xa;     // [rows, nb, 64]: xq, then xr (prepare_layers)
  const float* xs;      // [rows, nb]
  const int32_t* vsum;  // [rows, nb]: Σ v over the block
  float* y;
  int64_t rows, n, k, groups_per_task;
  int64_t first_group;  // where task 0 starts
};

struct Gemm8Work {  // the float GEMM (gemm.inc) over the packed groups
  GemmArgs g;
  const uint8_t* w;
  const float* d;
};

// columns c..c+n as floats, b[k][j] = d·q, block by block (the 32 × n floats being written stay in L1)
inline void dequantize_panel8(const Gemm8Work& t, int64_t c, int n, float* b) {
  const int64_t nb = t.g.k / kBlock;
  for (int64_t blk = 0; blk < nb; ++blk)
    for (int j = 0; j < n; ++j) {
      const int64_t g = (c + j) / kGroup, lane = (c + j) % kGroup;
      const uint8_t* codes = t.w + (g * nb + blk) * kGroupCodes8 + lane * 4;  // element i: chunk i/4, byte i%4
      const float d = t.d[(g * nb + blk) * kGroup + lane];
      float* out = b + blk * kBlock * n + j;
      for (int i = 0; i < kBlock; ++i)
        out[i * n] = d * static_cast<float>(static_cast<int>(codes[(i / 4) * 4 * kGroup + i % 4]) - 128);
    }
}

}  // namespace

void pack_q80(const uint8_t* w, const float* d, int64_t n, int64_t k, uint8_t* out) {
  const int64_t nb = k / kBlock, groups = column_groups(n);
  float* dout = reinterpret_cast<float*>(out + groups * nb * kGroupCodes8);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* codes = out + (g * nb + b) * kGroupCodes8;
      for (int64_t lane = 0; lane < kGroup; ++lane) {
        const int64_t col = g * kGroup + lane;
        for (int c = 0; c < kBlock / 4; ++c)
          for (int i = 0; i < 4; ++i)
            codes[(c * kGroup + lane) * 4 + i] = col < n ? w[col * k + b * kBlock + 4 * c + i] : 128;  // q = 0
        dout[(g * nb + b) * kGroup + lane] = col < n ? d[col * nb + b] : 0.f;
      }
    }
}

}  // namespace slmops

// The tiles (and the GEMM), once per instruction set.
#define SLMOPS_BODY "q8_0_tiles.inc"
#include "per_isa.inc"
#undef SLMOPS_BODY

using namespace slmops;

extern "C" size_t slmops_q80_packed_bytes(int64_t n, int64_t k) { return q80_packed_bytes(n, k); }

extern "C" void slmops_q80_pack(const uint8_t* w, const float* d, int64_t n, int64_t k, uint8_t* out) {
  pack_q80(w, d, n, k, out);
}

// `parallel` runs tasks 0..count-1 (serially if null).
extern "C" void slmops_q80_matmul(const float* x, const uint8_t* w, const float* d, float* y, int64_t rows,
                                  int64_t n, int64_t k, Parallel parallel, void* ctx) {
  std::vector<uint8_t> packed(q80_packed_bytes(n, k));
  pack_q80(w, d, n, k, packed.data());
  slmops_q80_matmul_packed(x, packed.data(), y, rows, n, k, parallel, ctx);
}

extern "C" void slmops_q80_matmul_packed(const float* x, const uint8_t* packed, float* y, int64_t rows, int64_t n,
                                         int64_t k, Parallel parallel, void* ctx) {
  const int isa = active_isa();
  const int64_t nb = k / kBlock, groups = column_groups(n);
  const auto* d = reinterpret_cast<const float*>(packed + groups * nb * kGroupCodes8);
  if (rows >= kGemmRows && n >= kGemmCols) {
    Gemm8Work gemm{{x, y, rows, n, k, per_task(n / kGemmCols, rows, 1)}, packed, d};
    run_tasks(isa == kAvx512Vnni ? avx512vnni::run_gemm8 : avx2::run_gemm8, &gemm, n / kGemmCols,
              gemm.g.blocks_per_task, parallel, ctx);
    if (n % kGemmCols == 0) return;
    // the GEMM's last N % kGemmCols columns: the tiles over those rows' activations, on their own
  }
  thread_local std::vector<int8_t> xa;
  thread_local std::vector<float> xs, xsum;
  thread_local std::vector<int32_t> vsum;
  prepare_layers(x, rows, k, &xa, &xs, &xsum, &vsum);
  const int64_t first_group = rows >= kGemmRows && n >= kGemmCols ? n / kGemmCols * kGemmCols / kGroup : 0;
  Work8 work{packed, d, xa.data(), xs.data(), vsum.data(), y, rows, n, k, 0, first_group};
  work.groups_per_task = first_group ? groups - first_group : per_task(groups, rows, 1);  // the GEMM's leftover: one task
  static void (*const kTasks[])(void*, size_t) = {avx2::run_task8, avxvnni::run_task8, avx512vnni::run_task8};
  run_tasks(kTasks[isa], &work, groups - first_group, work.groups_per_task, parallel, ctx);
}
