// What the slmops kernels share: int8 activations with their rounding residual, slicing work over ONNX Runtime's
// thread pool, and the two entry points that the custom ops (ort_ops.cc) and the tests (through ctypes) call.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace slmops {

constexpr int64_t kBlock = 32;
// Bytes of weights prefetched ahead of the ones in use, into L2 (prefetcht1: an L1 prefetch holds one of the
// core's few L1 miss buffers until its line arrives, which capped each core's stream). The bundled model's export,
// 2 threads: on an Intel Xeon 115 tok/s with 256 bytes into L1, 151 with 2048, alike with 4096-8192; on an AMD EPYC
// (Zen 4) into L1 2048 bytes 151–174, into L2 8192 bytes 184–215 (alternating processes, 4–6 rounds each; 12 and
// 16 KiB alike, 32 KiB less); benchmarks/kernel_ab.py --before 99cb5e9 --after 4d341bb: 170.7 → 195.8 tok/s.
constexpr int64_t kAhead = 8192;

// Threads of this machine, read once.
int64_t cores();

// The instruction sets the kernels have a path for, in order of preference; kIsaNames spells them.
enum Isa : int { kAvx2 = 0, kAvxVnni = 1, kAvx512Vnni = 2, kIsaCount = 3 };
extern const char* const kIsaNames[kIsaCount];
bool isa_supported(int isa);
// The path in use: SLMOPS_KERNEL_PATH when it names one this CPU supports, else the best supported; read once
// (slmops_kernel_select changes it).
int active_isa();

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e^x (float, 8 lanes): x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts, so r is exact to float rounding), e^r by
// its Taylor series to r^7 (error below 1e-8 relative), 2^n put into the exponent bits; x clamped to
// [-87.3, 88.3], where 2^n stays a normal float.
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723e-6f), r);
  __m256 e = _mm256_set1_ps(1.f / 5040);
  for (const float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(c));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(two_n));
}

// Activations (rows × k) for the tiles: x per block of 32 at about 16 bits, v = 254·xq + xr — an int8 layer xq at
// step sx = max|x|/127 and its rounding residual xr at sx/254, both in −127..127 — as [xq | xr] per block (64 bytes):
// one int8 dot product per layer gives Σ w·v = 254·Σ w·xq + Σ w·xr exactly. xs = sx/254, xsum the exact float block
// sums and `vsum` (optional) each block's Σ v.
void prepare_layers(const float* x, int64_t rows, int64_t k, std::vector<int8_t>* xa, std::vector<float>* xs,
                   std::vector<float>* xsum, std::vector<int32_t>* vsum = nullptr);

using Parallel = void (*)(void* ctx, void (*fn)(void*, size_t), size_t count, void* data);

// Activations (rows × k) for the Q4_1 prompt GEMM: x16 = 254·xq + xr per element (prepare_activations' two layers
// joined), xs = sx/254 and the exact block sums per block; rows over the pool.
void prepare_x16(const float* x, int64_t rows, int64_t k, int16_t* x16, float* xs, float* xsum, Parallel parallel,
                 void* ctx);

// The kernels' packed copies of their constant weights (weights.cc) in memory advised for 2 MiB pages, shared with
// other kernels' copies and freed with the last of them; SLMOPS_HUGE_PAGES=0 leaves them in 4 KiB pages.
bool huge_page_weights();
struct WeightChunk;
class WeightCopy {
 public:
  WeightCopy() = default;
  WeightCopy(const WeightCopy&) = delete;
  WeightCopy& operator=(const WeightCopy&) = delete;
  ~WeightCopy();
  // Room for `bytes` (64-byte aligned) for the caller to fill, `data` pointing to it; nullptr when no memory (or
  // when this copy has its room already).
  void* allocate(size_t bytes);
  // Lets the system reclaim a source's pages once its copy is made (they are not read again).
  static void drop_source(const void* src, size_t bytes);
  const void* data = nullptr;  // the room, once allocated

 private:
  WeightChunk* chunk_ = nullptr;
};

// A LoRA adapter beside the weights: y += t·B, t = x·A [rows, r] computed before the call, B [r, N] float16;
// r = 0: none. Each task of a matmul adds it on the columns it wrote (no pass of its own over y).
struct Lora {
  const float* t = nullptr;
  const uint16_t* b = nullptr;
  int64_t r = 0;
};
void add_lora_columns(const Lora& lora, float* y, int64_t rows, int64_t n, int64_t c0, int64_t c1);

// Q4_1 weights as the kernel reads them, packed from the export's column pairs and mins (q4_1_matmul.cc): columns in
// groups of kGroup (the last one padded with zeros), each block of a group 256 bytes of codes — four chunks of 64,
// chunk c holding for each column of the group its 4 bytes 4c..4c+3 of the pair layout (low nibbles the elements
// 4c..4c+3, high nibbles 16+4c..16+4c+3) — then all the groups' scales and mins, [groups, K/32, 2, kGroup] float16
// (a block's d of the group's columns, then their m: one 64-byte line).
constexpr int64_t kGroup = 16;
constexpr int64_t kGroupCodes = kGroup * kBlock / 2;  // bytes of codes a group has in a block
inline int64_t column_groups(int64_t n) { return (n + kGroup - 1) / kGroup; }
inline size_t q41_packed_bytes(int64_t n, int64_t k) {
  return static_cast<size_t>(column_groups(n) * (k / kBlock) * (kGroupCodes + 4 * kGroup));
}
// w [N/2, K/32, 32] and d [N/2, K/32, 2] (column pairs), m [K/32, N], all as the export stores them.
void pack_q41(const uint8_t* w, const uint16_t* d, const uint16_t* m, int64_t n, int64_t k, uint8_t* out);

// The Q8_0 head's table packed the same way (q8_0_matmul.cc): per group and block 512 bytes of codes (q + 128), eight
// chunks of 64, chunk c holding each column's elements 4c..4c+3; then the groups' scales, [groups, K/32, kGroup]
// float.
constexpr int64_t kGroupCodes8 = kGroup * kBlock;
inline size_t q80_packed_bytes(int64_t n, int64_t k) {
  return static_cast<size_t>(column_groups(n) * (k / kBlock) * (kGroupCodes8 + 4 * kGroup));
}
void pack_q80(const uint8_t* w, const float* d, int64_t n, int64_t k, uint8_t* out);

// Prompts of kGemmRows rows or more take a GEMM (Q4_1: q4_1_gemm.inc, Q8_0: gemm.inc) over blocks of kGemmCols
// columns.
constexpr int64_t kGemmRows = 32, kGemmCols = 32;
struct GemmArgs {
  const float* x;  // [rows, K]
  float* y;        // [rows, N]
  int64_t rows, n, k, blocks_per_task;
  Lora lora{};
};

// Units (column pairs or columns) per task, a multiple of `align` (see activations.cc).
int64_t per_task(int64_t units, int64_t rows, int64_t align);

// out[r, j] = silu(y[r, j]) · y[r, half + j]: a SiLU-gated MLP's gate and up projections, computed side by side
// (y [rows, 2·half]), joined into its hidden activations (one row alone, rows over the pool).
void swiglu(const float* y, float* out, int64_t rows, int64_t half, Parallel parallel, void* ctx);

// Grouped-query attention over a KV cache (attention.cc): packed qkv [B, S, (heads + 2·kv_heads)·head_size], past
// [B, kv_heads, past_len, head_size] (the same memory as present when the caller shares them), present [B, kv_heads,
// present_len, head_size], seqlens [B] (positions − 1), rotary tables cos/sin [positions, rot_half] → out [B, S,
// heads·head_size]. head_size a multiple of 8.
struct AttentionArgs {
  const float* qkv;
  const float* past_k;
  const float* past_v;
  float* present_k;
  float* present_v;
  const int32_t* seqlens;
  const float* cos;
  const float* sin;
  float* out;
  int64_t batch, seq, heads, kv_heads, head_size, rot_half, past_len, present_len;
  bool first_prompt, interleaved;
  float scale;
};
void attention(const AttentionArgs& args, Parallel parallel, void* ctx);

// Runs task(work, i) for each slice: on ONNX Runtime's pool through `parallel`, or here when there is none.
void run_tasks(void (*task)(void*, size_t), void* work, int64_t units, int64_t per, Parallel parallel, void* ctx);

}  // namespace slmops

extern "C" {
// Selects a path by name for every later call; 0 when done, -1 for an unknown name, -2 when this CPU lacks it.
__attribute__((visibility("default"))) int slmops_kernel_select(const char* name);
// 1 when this CPU runs the path `name`, 0 when it lacks it, -1 for an unknown name (the same check as above).
__attribute__((visibility("default"))) int slmops_kernel_supported(const char* name);
// The name of the path in use.
__attribute__((visibility("default"))) const char* slmops_kernel_path();
// Q4_1: w [N/2, K/32, 32] (column pairs), d [N/2, K/32, 2] and m [K/32, N] as float16 bits; N even.
__attribute__((visibility("default"))) void slmops_q41_matmul(const float* x, const uint8_t* w, const uint16_t* d,
                                                              const uint16_t* m, float* y, int64_t rows, int64_t n,
                                                              int64_t k, slmops::Parallel parallel, void* ctx);
// The same on weights (codes, scales and mins) packed once by slmops_q41_pack (into slmops_q41_packed_bytes(n, k)
// bytes): what the custom op does with constant weights; slmops_q41_matmul packs at every call.
__attribute__((visibility("default"))) size_t slmops_q41_packed_bytes(int64_t n, int64_t k);
__attribute__((visibility("default"))) void slmops_q41_pack(const uint8_t* w, const uint16_t* d, const uint16_t* m,
                                                            int64_t n, int64_t k, uint8_t* out);
__attribute__((visibility("default"))) void slmops_q41_matmul_packed(const float* x, const uint8_t* packed, float* y,
                                                                     int64_t rows, int64_t n, int64_t k,
                                                                     slmops::Parallel parallel, void* ctx);
// slmops_q41_matmul_packed plus a LoRA adapter: y += t·b with t [rows, r] (= x·A, the caller's) and b [r, N] float16.
__attribute__((visibility("default"))) void slmops_q41_matmul_lora(
    const float* x, const uint8_t* packed, float* y, int64_t rows, int64_t n, int64_t k, const float* lora_t,
    const uint16_t* lora_b, int64_t lora_r, slmops::Parallel parallel, void* ctx);
// On this thread, until called with 0: Q80MatMul (the LM head) over a sequence of several positions computes the last
// position's logits only and leaves the others unwritten (generation reads no other; scoring must leave it off).
__attribute__((visibility("default"))) void slmops_last_position_only(int on);
// Q8_0: w [N, K] holding q + 128, d [N, K/32] float.
__attribute__((visibility("default"))) void slmops_q80_matmul(const float* x, const uint8_t* w, const float* d,
                                                              float* y, int64_t rows, int64_t n, int64_t k,
                                                              slmops::Parallel parallel, void* ctx);
// The same on weights packed once by slmops_q80_pack (into slmops_q80_packed_bytes(n, k) bytes), as the custom op
// packs constant ones; slmops_q80_matmul packs at every call.
__attribute__((visibility("default"))) size_t slmops_q80_packed_bytes(int64_t n, int64_t k);
__attribute__((visibility("default"))) void slmops_q80_pack(const uint8_t* w, const float* d, int64_t n, int64_t k,
                                                            uint8_t* out);
__attribute__((visibility("default"))) void slmops_q80_matmul_packed(const float* x, const uint8_t* packed, float* y,
                                                                     int64_t rows, int64_t n, int64_t k,
                                                                     slmops::Parallel parallel, void* ctx);
}
