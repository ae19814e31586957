// Device helpers shared by the nearest-codeword kernels (nearest_codeword_kernel.cu,
// nearest_codeword_tc.cu).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace tokbench {
namespace detail {

template <typename T>
__device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// |z - c|^2 in fp32 from the original values: the distance every path returns.
template <typename T>
__device__ __forceinline__ float exact_sq_distance(const T* __restrict__ z_row, const T* __restrict__ code, int d) {
  float dist = 0.f;
  for (int c = 0; c < d; ++c) {
    const float diff = to_float(z_row[c]) - to_float(code[c]);
    dist = fmaf(diff, diff, dist);
  }
  return dist;
}

// (score, index) ordering: smaller score first, then the lower index.
__device__ __forceinline__ bool better(float s, int64_t i, float best_s, int64_t best_i) {
  return s < best_s || (s == best_s && i < best_i);
}

}  // namespace detail
}  // namespace tokbench
