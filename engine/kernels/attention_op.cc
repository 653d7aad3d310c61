// The custom op slmops.GroupQueryAttention over attention.cc: the ONNX Runtime side (inputs, attributes, checks,
// outputs) of com.microsoft.GroupQueryAttention's computation for the graphs it fits (engine/onnx_affine.py:
// fits_attention_op).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ort_kernel.h"

namespace slm_ort {
namespace {

// slmops.GroupQueryAttention: com.microsoft.GroupQueryAttention's inputs (query as packed QKV; key and value
// absent; past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache) and attributes (num_heads,
// kv_num_heads, scale, do_rotary, rotary_interleaved) → output, present_key, present_value, computed by attention.cc.
struct AttentionKernel {
  const OrtApi* api;
  int64_t heads = 0, kv_heads = 0, rotary = 0, interleaved = 0;
  float scale = 0.f;
};

// An attribute of the node (`fallback` when it has none).
template <class T>
T attribute(const OrtApi* api, const OrtKernelInfo* info, const char* name, T fallback) {
  T value = fallback;
  OrtStatus* s;
  if constexpr (std::is_same_v<T, float>)
    s = fn<KernelInfoGetAttributeFloatFn>(api, kKernelInfoGetAttributeFloat)(info, name, &value);
  else
    s = fn<KernelInfoGetAttributeInt64Fn>(api, kKernelInfoGetAttributeInt64)(info, name, &value);
  if (s != nullptr) {
    fn<ReleaseStatusFn>(api, kReleaseStatus)(s);
    return fallback;
  }
  return value;
}

OrtStatus* compute_attention(void* kernel_data, OrtKernelContext* context) {
  const auto& kernel = *static_cast<AttentionKernel*>(kernel_data);
  const OrtApi* api = kernel.api;
  Tensor t[9];
  if (OrtStatus* s = read_inputs(api, context, t, 9, 0, true)) return s;
  if (t[0].data == nullptr || t[3].data == nullptr || t[4].data == nullptr || t[5].data == nullptr ||
      t[6].data == nullptr)
    return error(api, "GroupQueryAttention (slmops): query, past_key, past_value, seqlens_k and "
                      "total_sequence_length are required");
  if (t[1].data != nullptr || t[2].data != nullptr)
    return error(api, "GroupQueryAttention (slmops): only packed QKV (key and value absent)");
  if (t[0].type != kSlmFloat || t[3].type != kSlmFloat || t[4].type != kSlmFloat || t[5].type != kSlmInt32 ||
      t[6].type != kSlmInt32)
    return error(api, "GroupQueryAttention (slmops): float query and cache, int32 seqlens_k and total length");
  const int64_t heads = kernel.heads, kv_heads = kernel.kv_heads;
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0)
    return error(api, "GroupQueryAttention (slmops): num_heads must be a multiple of kv_num_heads");
  if (t[0].dims.size() != 3 || t[3].dims.size() != 4 || t[3].dims != t[4].dims)
    return error(api, "GroupQueryAttention (slmops): query [B, S, D] and past caches [B, kv_heads, L, H]");
  const int64_t batch = t[0].dims[0], seq = t[0].dims[1], h = t[0].dims[2] / (heads + 2 * kv_heads);
  if (h % 8 != 0 || h * (heads + 2 * kv_heads) != t[0].dims[2] || t[3].dims[0] != batch ||
      t[3].dims[1] != kv_heads || t[3].dims[3] != h || elements(t[5]) != batch || elements(t[6]) != 1)
    return error(api, "GroupQueryAttention (slmops): the shapes of query, caches and seqlens_k do not agree");
  const int64_t total = *static_cast<const int32_t*>(t[6].data), past_len = t[3].dims[2];
  const bool first_prompt = seq == total;
  if (!first_prompt && seq > 1 && batch != 1)
    return error(api, "GroupQueryAttention (slmops): a prompt after a past must be one sequence");
  int64_t rot_half = 0;
  if (kernel.rotary) {
    if (t[7].data == nullptr || t[8].data == nullptr || t[7].type != kSlmFloat || t[7].dims.size() != 2 ||
        t[7].dims != t[8].dims || 2 * t[7].dims[1] > h || t[7].dims[0] < total)
      return error(api, "GroupQueryAttention (slmops): cos and sin caches [positions, rotary_dim/2] are required");
    rot_half = t[7].dims[1];
  }
  const int64_t present_len = std::max(total, past_len);
  const auto* seqlens = static_cast<const int32_t*>(t[5].data);
  for (int64_t b = 0; b < batch; ++b)
    if (seqlens[b] < 0 || seqlens[b] >= present_len || (kernel.rotary && seqlens[b] >= t[7].dims[0]) ||
        (!first_prompt && seqlens[b] + 1 < seq))
      return error(api, "GroupQueryAttention (slmops): seqlens_k out of range");
  OrtValue* outs[3] = {};
  const int64_t out_dims[3] = {batch, seq, heads * h}, cache_dims[4] = {batch, kv_heads, present_len, h};
  for (size_t i = 0; i < 3; ++i)
    if (OrtStatus* s = fn<KernelContextGetOutputFn>(api, kKernelContextGetOutput)(
            context, i, i == 0 ? out_dims : cache_dims, i == 0 ? 3 : 4, &outs[i]))
      return s;
  void* data[3] = {};
  for (size_t i = 0; i < 3; ++i)
    if (OrtStatus* s = fn<GetTensorMutableDataFn>(api, kGetTensorMutableData)(outs[i], &data[i])) return s;
  slmops::AttentionArgs args{static_cast<const float*>(t[0].data), static_cast<const float*>(t[3].data),
                             static_cast<const float*>(t[4].data), static_cast<float*>(data[1]),
                             static_cast<float*>(data[2]), seqlens, static_cast<const float*>(t[7].data),
                             static_cast<const float*>(t[8].data), static_cast<float*>(data[0]), batch, seq, heads,
                             kv_heads, h, rot_half, past_len, present_len, first_prompt, kernel.interleaved != 0,
                             kernel.scale != 0.f ? kernel.scale : 1.f / std::sqrt(static_cast<float>(h))};
  if ((args.past_k == args.present_k) != (args.past_v == args.present_v))
    return error(api, "GroupQueryAttention (slmops): past and present share one cache but not the other");
  ParallelCtx pc{api, context, nullptr};
  slmops::attention(args, parallel_for, &pc);
  return pc.status;
}

OrtCustomOp make_attention_op() {
  OrtCustomOp op = cpu_op();
  op.GetName = [](const OrtCustomOp*) { return "GroupQueryAttention"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) {
    return static_cast<int>(i == 5 || i == 6 ? kSlmInt32 : kSlmFloat);
  };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return size_t{9}; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return size_t{3}; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<AttentionKernel*>(kernel); };
  // key, value and the rotary caches optional
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t i) { return i == 1 || i == 2 || i >= 7 ? 1 : 0; };
  op.CreateKernelV2 = [](const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info,
                         void** kernel) -> OrtStatus* {
    auto* created = new AttentionKernel{api};
    created->heads = attribute<int64_t>(api, info, "num_heads", 0);
    created->kv_heads = attribute<int64_t>(api, info, "kv_num_heads", 0);
    created->rotary = attribute<int64_t>(api, info, "do_rotary", 0);
    created->interleaved = attribute<int64_t>(api, info, "rotary_interleaved", 0);
    created->scale = attribute<float>(api, info, "scale", 0.f);
    *kernel = created;
    return nullptr;
  };
  op.KernelComputeV2 = compute_attention;
  return op;
}

const OrtCustomOp g_attention = make_attention_op();

}  // namespace

const OrtCustomOp* const kAttentionOp = &g_attention;

}  // namespace slm_ort
