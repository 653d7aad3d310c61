// Copies of the kernels' constant weights in memory backed by 2 MiB pages. Decode reads every weight once per token;
// ONNX Runtime maps them from model.onnx.data in 4 KiB pages, one mapping per tensor, so streaming them misses the
// TLB at every page and the hardware prefetchers stop at every page boundary. In 2 MiB pages the weights of one
// token are ~50 pages instead of ~25,000 (the bundled model's export on an AMD EPYC: decode 164 → 176 tok/s,
// medians of 8 alternating runs of benchmarks/huge_pages.py). Kernels are created in graph order and their weights
// are placed side by side, so one token's weights are read front to back.
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kernels.h"

namespace slmops {

struct WeightChunk {
  char* base;
  size_t size, used;
  int holders;
};

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kChunkSize = size_t{64} << 20;  // untouched parts of a chunk take no memory

std::mutex g_mutex;
WeightChunk* g_current = nullptr;  // the chunk new copies go to

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

WeightChunk* new_chunk(size_t need) {
  const size_t size = std::max(kChunkSize, round_up(need, kHugePage));
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  char* start = static_cast<char*>(raw);
  char* base = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(start), kHugePage));
  if (base > start) munmap(start, base - start);
  if (start + kHugePage > base) munmap(base + size, start + kHugePage - base);
  // advice only: where transparent huge pages are off (or SLMOPS_HUGE_PAGES=0), 4 KiB pages as before
  if (huge_page_weights()) madvise(base, size, MADV_HUGEPAGE);
  return new WeightChunk{base, size, 0, 0};
}

void release(WeightChunk* chunk) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (--chunk->holders > 0) return;
  if (chunk == g_current) g_current = nullptr;
  munmap(chunk->base, chunk->size);
  delete chunk;
}

}  // namespace

bool huge_page_weights() {
  static const bool on = [] {
    const char* v = std::getenv("SLMOPS_HUGE_PAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

void* WeightCopy::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (chunk_ != nullptr) return nullptr;  // one allocation a copy
  const size_t total = round_up(bytes, 64);
  if (g_current == nullptr || g_current->size - g_current->used < total) {
    WeightChunk* fresh = new_chunk(total);
    if (fresh == nullptr) return nullptr;
    g_current = fresh;  // the one before lives on with its holders
  }
  chunk_ = g_current;
  char* at = chunk_->base + chunk_->used;
  chunk_->used += total;
  ++chunk_->holders;
  data = at;
  return at;
}

void WeightCopy::drop_source(const void* src, size_t bytes) {
  // File pages of model.onnx.data are dropped and read back if anything touches them again; anonymous ones stay:
  // nothing is lost either way.
  const uintptr_t lo = round_up(reinterpret_cast<uintptr_t>(src), 4096);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(src) + bytes) / 4096 * 4096;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_PAGEOUT);
}

WeightCopy::~WeightCopy() {
  if (chunk_ != nullptr) release(chunk_);
}

}  // namespace slmops
