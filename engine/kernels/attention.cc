// Grouped-query attention with rotary embeddings over a KV cache: the computation of ONNX Runtime's
// com.microsoft.GroupQueryAttention on CPU for the graphs onnxruntime-genai's builder writes (packed QKV, float32,
// no sliding window, no softcap), as the custom op slmops.GroupQueryAttention (ort_ops.cc).
//
// ONNX Runtime's kernel runs two small GEMMs for every query head of every sequence at every step, each packing
// that sequence's whole K (or V) for its head, so its cost grew with the context and the rows of a batched step
// alike. Here a query's scores are dot products straight off the cache, four keys at a time, and its output the
// probability-weighted sum of V rows; decode splits the keys in chunks over the threads, the query heads that share
// a kv head together, so a step reads each cache row once. benchmarks/attention_context.py (SmolLM2-135M int4,
// 2 threads, ms per decode step, ONNX Runtime's → this): 1 row 3.86 → 3.82 at 50 positions of context, 9.00 → 7.46
// at 1,500; 8 rows 13.66 → 12.48 and 57.19 → 30.77; the same greedy tokens. At 1,500 positions the float32 cache
// (2.3 MB a layer per sequence) is as many bytes as the weights: reading it is now most of the difference.
//
// Semantics, as ONNX Runtime's: total_b = seqlens_k[b] + 1 positions for sequence b; a first prompt (S equal to
// total_sequence_length) starts at position 0, otherwise the S new positions are the last S of total_b; their K
// and V rows (K rotated) are written into the present cache at those positions; query s attends causally to the
// positions before it and itself. Rotary position of a query or key: its position (1 for a padding position past
// total_b, as ONNX Runtime's). When past and present are different buffers the past positions are copied over and
// the rest of present is zeroed.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace slmops {
namespace {

constexpr int64_t kQueryBlock = 32;  // queries of one head a task takes (prompts: many tasks per head)

// x rotated for position pos (cos/sin rows of rot_half values) into out; head_size values, the first 2·rot_half
// rotated (halves, or interleaved pairs), the others copied.
void rotate(const float* x, const AttentionArgs& a, int64_t pos, float* out) {
  const float* c = a.cos + pos * a.rot_half;
  const float* s = a.sin + pos * a.rot_half;
  const int64_t half = a.rot_half;
  if (a.interleaved) {
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = x[2 * i], x1 = x[2 * i + 1];
      out[2 * i] = x0 * c[i] - x1 * s[i];
      out[2 * i + 1] = x1 * c[i] + x0 * s[i];
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = x[i], x1 = x[i + half];
      out[i] = x0 * c[i] - x1 * s[i];
      out[i + half] = x1 * c[i] + x0 * s[i];
    }
  }
  std::copy(x + 2 * half, x + a.head_size, out + 2 * half);
}

// Where sequence b's S new positions start, and how many positions it has.
inline void extent(const AttentionArgs& a, int64_t b, int64_t* past, int64_t* total) {
  *total = static_cast<int64_t>(a.seqlens[b]) + 1;
  *past = a.first_prompt ? 0 : *total - a.seq;
}

inline int64_t position(int64_t past, int64_t s, int64_t total) { return past + s < total ? past + s : 1; }

// Task (b, g): kv head g of sequence b into the present cache — the past positions when the buffers differ, the new
// positions' rotated K and their V, zeros after them when the buffers differ.
void cache_task(void* data, size_t task) {
  const auto& a = *static_cast<const AttentionArgs*>(data);
  const int64_t b = static_cast<int64_t>(task) / a.kv_heads, g = static_cast<int64_t>(task) % a.kv_heads;
  const int64_t h = a.head_size, width = (a.heads + 2 * a.kv_heads) * h;
  int64_t past, total;
  extent(a, b, &past, &total);
  float* kp = a.present_k + (b * a.kv_heads + g) * a.present_len * h;
  float* vp = a.present_v + (b * a.kv_heads + g) * a.present_len * h;
  const bool shared = a.past_k == a.present_k;
  if (!shared && past > 0) {
    std::memcpy(kp, a.past_k + (b * a.kv_heads + g) * a.past_len * h, sizeof(float) * past * h);
    std::memcpy(vp, a.past_v + (b * a.kv_heads + g) * a.past_len * h, sizeof(float) * past * h);
  }
  for (int64_t s = 0; s < a.seq && past + s < a.present_len; ++s) {
    const float* row = a.qkv + (b * a.seq + s) * width;
    rotate(row + (a.heads + g) * h, a, position(past, s, total), kp + (past + s) * h);
    std::memcpy(vp + (past + s) * h, row + (a.heads + a.kv_heads + g) * h, sizeof(float) * h);
  }
  if (!shared) {
    const int64_t end = std::min(past + a.seq, a.present_len);
    std::memset(kp + end * h, 0, sizeof(float) * (a.present_len - end) * h);
    std::memset(vp + end * h, 0, sizeof(float) * (a.present_len - end) * h);
  }
}

// Four dot products q·k[j..j+3] of head_size (a multiple of 8) values, rows `stride` apart.
inline __m128 dot4(const float* q, const float* k, int64_t h) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < h; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + j * h + i), acc[j]);
  }
  const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 s = _mm256_hadd_ps(s01, s23);  // per 128-bit half: [k0, k1, k2, k3]
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

inline float dot(const float* q, const float* k, int64_t h) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < h; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
  return hsum(acc);
}

// scores[0..keys) = scale · q·k_j for the keys j of `kp` (rows of head_size); returns the largest.
float score(const float* q, const float* kp, int64_t keys, int64_t h, float scale, float* scores) {
  int64_t j = 0;
  for (; j + 4 <= keys; j += 4) _mm_storeu_ps(scores + j, _mm_mul_ps(dot4(q, kp + j * h, h), _mm_set1_ps(scale)));
  for (; j < keys; ++j) scores[j] = dot(q, kp + j * h, h) * scale;
  return *std::max_element(scores, scores + keys);
}

// scores[j] = e^(scores[j] − top); returns their sum.
float exponentiate(float* scores, int64_t keys, float top) {
  __m256 total8 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= keys; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(top)));
    _mm256_storeu_ps(scores + j, e);
    total8 = _mm256_add_ps(total8, e);
  }
  float sum = hsum(total8);
  for (; j < keys; ++j) sum += scores[j] = std::exp(scores[j] - top);
  return sum;
}

// out[0..h) = factor · Σ_j p_j·v_j over the V rows of `vp`, up to 64 values of the head in registers at a time.
void weigh(const float* p, const float* vp, int64_t keys, int64_t h, float factor, float* out) {
  for (int64_t i = 0; i < h; i += 64) {
    const int lanes = static_cast<int>(std::min<int64_t>(64, h - i)) / 8;
    __m256 acc[8];
    for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < keys; ++k) {
      const __m256 pk = _mm256_set1_ps(p[k]);
      const float* v = vp + k * h + i;
      for (int r = 0; r < lanes; ++r) acc[r] = _mm256_fmadd_ps(pk, _mm256_loadu_ps(v + 8 * r), acc[r]);
    }
    for (int r = 0; r < lanes; ++r) _mm256_storeu_ps(out + i + 8 * r, _mm256_mul_ps(acc[r], _mm256_set1_ps(factor)));
  }
}

// Prompts. Task (b, n, block): query head n of sequence b for up to kQueryBlock of its S queries.
void prompt_task(void* data, size_t task) {
  const auto& a = *static_cast<const AttentionArgs*>(data);
  const int64_t blocks = (a.seq + kQueryBlock - 1) / kQueryBlock;
  const int64_t block = static_cast<int64_t>(task) % blocks, bn = static_cast<int64_t>(task) / blocks;
  const int64_t b = bn / a.heads, n = bn % a.heads, g = n / (a.heads / a.kv_heads);
  const int64_t h = a.head_size, width = (a.heads + 2 * a.kv_heads) * h;
  int64_t past, total;
  extent(a, b, &past, &total);
  const float* kp = a.present_k + (b * a.kv_heads + g) * a.present_len * h;
  const float* vp = a.present_v + (b * a.kv_heads + g) * a.present_len * h;
  thread_local std::vector<float> scores, q;
  q.resize(static_cast<size_t>(h));
  const int64_t s1 = std::min(a.seq, (block + 1) * kQueryBlock);
  for (int64_t s = block * kQueryBlock; s < s1; ++s) {
    float* out = a.out + ((b * a.seq + s) * a.heads + n) * h;
    const int64_t keys = std::min(std::min(past + s + 1, total), a.present_len);
    if (keys <= 0) {
      std::fill(out, out + h, 0.f);
      continue;
    }
    rotate(a.qkv + (b * a.seq + s) * width + n * h, a, position(past, s, total), q.data());
    scores.resize(static_cast<size_t>(keys));
    const float top = score(q.data(), kp, keys, h, a.scale, scores.data());
    weigh(scores.data(), vp, keys, h, 1.f / exponentiate(scores.data(), keys, top), out);
  }
}

// Decode (one query a sequence): the keys in chunks of kKeyChunk, each task (b, g, chunk) over all the query heads
// that share kv head g, so a step reads each row's cache once and both threads share even a single sequence's.
// A chunk leaves per head its largest score, its sum of e^(score − largest) and its unnormalized Σ p·v (DecodeWork);
// merge_task joins a head's chunks. The chunks are fixed by each sequence's own length: a sequence gets the same sums
// whatever else is in the step.
constexpr int64_t kKeyChunk = 256;

struct DecodeWork {
  const AttentionArgs* a;
  int64_t chunks;    // per sequence (the longest's count)
  float* top;        // [B, heads, chunks]
  float* sum;        // [B, heads, chunks]
  float* acc;        // [B, heads, chunks, head_size]
};

void decode_task(void* data, size_t task) {
  const auto& w = *static_cast<const DecodeWork*>(data);
  const AttentionArgs& a = *w.a;
  const int64_t chunk = static_cast<int64_t>(task) % w.chunks, bg = static_cast<int64_t>(task) / w.chunks;
  const int64_t b = bg / a.kv_heads, g = bg % a.kv_heads, group = a.heads / a.kv_heads;
  const int64_t h = a.head_size, width = (a.heads + 2 * a.kv_heads) * h;
  int64_t past, total;
  extent(a, b, &past, &total);
  const int64_t keys = std::min(total, a.present_len), k0 = chunk * kKeyChunk, k1 = std::min(keys, k0 + kKeyChunk);
  if (k0 >= k1) return;  // this sequence has fewer chunks (merge skips them)
  const float* kp = a.present_k + ((b * a.kv_heads + g) * a.present_len + k0) * h;
  const float* vp = a.present_v + ((b * a.kv_heads + g) * a.present_len + k0) * h;
  thread_local std::vector<float> scores, q;
  q.resize(static_cast<size_t>(h));
  scores.resize(static_cast<size_t>(kKeyChunk));
  for (int64_t n = g * group; n < (g + 1) * group; ++n) {
    rotate(a.qkv + b * width + n * h, a, position(past, 0, total), q.data());
    const int64_t at = (b * a.heads + n) * w.chunks + chunk;
    w.top[at] = score(q.data(), kp, k1 - k0, h, a.scale, scores.data());
    w.sum[at] = exponentiate(scores.data(), k1 - k0, w.top[at]);
    weigh(scores.data(), vp, k1 - k0, h, 1.f, w.acc + at * h);
  }
}

// Task (b, n): head n of sequence b from its chunks' partial sums.
void merge_task(void* data, size_t task) {
  const auto& w = *static_cast<const DecodeWork*>(data);
  const AttentionArgs& a = *w.a;
  const int64_t b = static_cast<int64_t>(task) / a.heads, h = a.head_size;
  int64_t past, total;
  extent(a, b, &past, &total);
  const int64_t chunks = (std::min(total, a.present_len) + kKeyChunk - 1) / kKeyChunk;
  const int64_t at = static_cast<int64_t>(task) * w.chunks;
  float* out = a.out + static_cast<int64_t>(task) * h;
  float top = w.top[at];
  for (int64_t c = 1; c < chunks; ++c) top = std::max(top, w.top[at + c]);
  float sum = 0.f;
  std::fill(out, out + h, 0.f);
  for (int64_t c = 0; c < chunks; ++c) {
    const float scale = std::exp(w.top[at + c] - top);
    sum += scale * w.sum[at + c];
    const float* acc = w.acc + (at + c) * h;
    for (int64_t i = 0; i < h; ++i) out[i] += scale * acc[i];
  }
  for (int64_t i = 0; i < h; ++i) out[i] /= sum;
}

}  // namespace

void attention(const AttentionArgs& a, Parallel parallel, void* ctx) {
  auto* args = const_cast<AttentionArgs*>(&a);
  run_tasks(cache_task, args, a.batch * a.kv_heads, 1, parallel, ctx);
  if (a.seq > 1) {
    run_tasks(prompt_task, args, a.batch * a.heads * ((a.seq + kQueryBlock - 1) / kQueryBlock), 1, parallel, ctx);
    return;
  }
  int64_t longest = 1;
  for (int64_t b = 0; b < a.batch; ++b)
    longest = std::max<int64_t>(longest, std::min<int64_t>(a.seqlens[b] + 1, a.present_len));
  DecodeWork work{&a, (longest + kKeyChunk - 1) / kKeyChunk, nullptr, nullptr, nullptr};
  thread_local std::vector<float> partial;  // top | sum | acc
  const int64_t heads = a.batch * a.heads * work.chunks;
  partial.resize(static_cast<size_t>(heads * (2 + a.head_size)));
  work.top = partial.data();
  work.sum = work.top + heads;
  work.acc = work.sum + heads;
  run_tasks(decode_task, &work, a.batch * a.kv_heads * work.chunks, 1, parallel, ctx);
  run_tasks(merge_task, &work, a.batch * a.heads, 1, nullptr, nullptr);
}

}  // namespace slmops
