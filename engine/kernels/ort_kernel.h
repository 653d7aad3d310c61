// What the custom ops of the library share (ort_ops.cc: the matmuls and the entry point; attention_op.cc): status
// errors, a tensor's shape and data, inputs read with their shapes, ONNX Runtime's thread pool as the kernels'
// `Parallel`, and the fields every op's OrtCustomOp has.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "ort_abi.h"

namespace slm_ort {

inline OrtStatus* error(const OrtApi* api, const char* message) {
  return fn<CreateStatusFn>(api, kCreateStatus)(kSlmInvalidArgument, message);
}

// Shape, element type and data of one tensor (a status when ONNX Runtime refuses).
struct Tensor {
  std::vector<int64_t> dims;
  int type = 0;
  void* data = nullptr;
};

inline OrtStatus* describe(const OrtApi* api, const OrtValue* value, Tensor* out) {
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

inline void parallel_for(void* ctx, void (*task)(void*, size_t), size_t count, void* data) {
  auto* p = static_cast<ParallelCtx*>(ctx);
  // one batch per thread, so each thread takes whole slices (0 would let ONNX Runtime choose; not measured apart)
  const size_t batches = std::min<size_t>(count, static_cast<size_t>(slmops::cores()));
  p->status = fn<KernelContextParallelForFn>(p->api, kKernelContextParallelFor)(p->context, task, count, batches, data);
}

// Inputs [first, first + count); an absent one (ONNX Runtime gives null, also past the node's last input) is an
// error unless `optional` (then its Tensor stays empty).
inline OrtStatus* read_inputs(const OrtApi* api, OrtKernelContext* context, Tensor* t, size_t count, size_t first = 0,
                       bool optional = false) {
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* value = nullptr;
    if (OrtStatus* s = fn<KernelContextGetInputFn>(api, kKernelContextGetInput)(context, first + i, &value)) return s;
    if (value == nullptr) {
      if (optional) continue;
      return error(api, "slmops kernel: an input is missing");
    }
    if (OrtStatus* s = describe(api, value, &t[i])) return s;
  }
  return nullptr;
}

inline int64_t elements(const Tensor& t) {
  int64_t count = 1;
  for (int64_t v : t.dims) count *= v;
  return count;
}

// What every op of the library shares: the CPU provider, float outputs, inputs and outputs in CPU memory, none
// variadic; characteristics 0 required, 1 optional (ONNX Runtime's OrtCustomOpInputOutputCharacteristic).
inline OrtCustomOp cpu_op() {
  OrtCustomOp op{};
  op.version = kApiVersion;
  op.GetExecutionProviderType = [](const OrtCustomOp*) { return "CPUExecutionProvider"; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return static_cast<int>(kSlmFloat); };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return 0; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  return op;
}

// slmops.GroupQueryAttention (attention_op.cc).
extern const OrtCustomOp* const kAttentionOp;

}  // namespace slm_ort
