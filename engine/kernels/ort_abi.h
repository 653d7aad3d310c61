// The few pieces of ONNX Runtime's C ABI that the Q4_1 custom-op library uses, declared here because no package
// on this project's registries ships onnxruntime's headers. Two facts of that ABI:
//  - OrtApi is a table of function pointers that only ever grows at the end; each function below is read by its
//    slot number (fixed since the ONNX Runtime version noted with it).
//  - OrtCustomOp is a struct of a version number and 25 function pointers that the runtime reads according to
//    that version. With version 17 it reads slots up to GetEndVersion (the last four stay null).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
struct OrtStatus;
struct OrtApi;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtTensorTypeAndShapeInfo;
struct OrtShapeInferContext;

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};

enum SlmElementType : int { kSlmFloat = 1, kSlmUint8 = 2, kSlmInt32 = 6, kSlmFloat16 = 10 };
enum SlmErrorCode : int { kSlmFail = 1, kSlmInvalidArgument = 2 };

struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*);
  const char* (*GetName)(const OrtCustomOp*);
  const char* (*GetExecutionProviderType)(const OrtCustomOp*);
  int (*GetInputType)(const OrtCustomOp*, size_t);
  size_t (*GetInputTypeCount)(const OrtCustomOp*);
  int (*GetOutputType)(const OrtCustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const OrtCustomOp*);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const OrtCustomOp*, size_t);   // 0 = required
  int (*GetOutputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetInputMemoryType)(const OrtCustomOp*, size_t);       // 0 = the provider's default memory
  int (*GetVariadicInputMinArity)(const OrtCustomOp*);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp*);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp*);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp*);
  OrtStatus* (*CreateKernelV2)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
  OrtStatus* (*KernelComputeV2)(void*, OrtKernelContext*);
  OrtStatus* (*InferOutputShapeFn)(const OrtCustomOp*, OrtShapeInferContext*);
  int (*GetStartVersion)(const OrtCustomOp*);
  int (*GetEndVersion)(const OrtCustomOp*);
  size_t (*GetMayInplace)(int**, int**);
  void (*ReleaseMayInplace)(int*, int*);
  size_t (*GetAliasMap)(int**, int**);
  void (*ReleaseAliasMap)(int*, int*);
};
}

namespace slm_ort {

constexpr uint32_t kApiVersion = 17;  // KernelContext_ParallelFor arrived with it (ONNX Runtime 1.17)

// slot numbers in OrtApi
enum Slot : int {
  kCreateStatus = 0,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kGetTensorMutableData = 51,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorTypeAndShape = 65,
  kKernelInfoGetAttributeFloat = 85,
  kKernelInfoGetAttributeInt64 = 86,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseStatus = 93,
  kReleaseTensorTypeAndShapeInfo = 99,
  kKernelInfoGetConstantInputTensor = 249,  // since 1.15
  kKernelContextParallelFor = 274,
};

template <typename F>
inline F fn(const OrtApi* api, Slot slot) {
  return reinterpret_cast<F>(reinterpret_cast<void* const*>(api)[slot]);
}

using CreateStatusFn = OrtStatus* (*)(int code, const char* message) noexcept;
using CreateCustomOpDomainFn = OrtStatus* (*)(const char* domain, OrtCustomOpDomain** out) noexcept;
using CustomOpDomainAddFn = OrtStatus* (*)(OrtCustomOpDomain* domain, const OrtCustomOp* op) noexcept;
using AddCustomOpDomainFn = OrtStatus* (*)(OrtSessionOptions* options, OrtCustomOpDomain* domain) noexcept;
using GetTensorMutableDataFn = OrtStatus* (*)(OrtValue* value, void** out) noexcept;
using GetTensorElementTypeFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, int* out) noexcept;
using GetDimensionsCountFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, size_t* out) noexcept;
using GetDimensionsFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims, size_t count) noexcept;
using GetTensorTypeAndShapeFn = OrtStatus* (*)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out) noexcept;
using KernelContextGetInputFn = OrtStatus* (*)(const OrtKernelContext* ctx, size_t index,
                                               const OrtValue** out) noexcept;
using KernelContextGetOutputFn = OrtStatus* (*)(OrtKernelContext* ctx, size_t index, const int64_t* dims,
                                                size_t count, OrtValue** out) noexcept;
using ReleaseStatusFn = void (*)(OrtStatus* status) noexcept;
using KernelInfoGetAttributeFloatFn = OrtStatus* (*)(const OrtKernelInfo* info, const char* name, float* out) noexcept;
using KernelInfoGetAttributeInt64Fn = OrtStatus* (*)(const OrtKernelInfo* info, const char* name,
                                                     int64_t* out) noexcept;
using ReleaseTensorTypeAndShapeInfoFn = void (*)(OrtTensorTypeAndShapeInfo* info) noexcept;
using KernelInfoGetConstantInputTensorFn = OrtStatus* (*)(const OrtKernelInfo* info, size_t index, int* is_constant,
                                                           const OrtValue** out) noexcept;
using KernelContextParallelForFn = OrtStatus* (*)(const OrtKernelContext* ctx, void (*task)(void*, size_t),
                                                  size_t total, size_t batches, void* data) noexcept;

}  // namespace slm_ort
