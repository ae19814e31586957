// Launcher of the fused nearest-codeword kernel (see nearest_codeword_kernel.cu).
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace tokbench {

enum class ScalarKind { kFloat32, kFloat16, kBFloat16 };

// z: n x d, codebook: k x d (both of `kind`, contiguous, one device); mean: d floats (the
// codebook mean); code_sqnorm: k floats of scratch. Writes out_index (n int64) and
// out_distance (n float: |z - c_best|^2).
cudaError_t launch_nearest_codeword(ScalarKind kind, const void* z, const void* codebook, const float* mean,
                                    float* code_sqnorm, int64_t n, int64_t k, int d, int64_t* out_index,
                                    float* out_distance, cudaStream_t stream);

// Tensor-core path for fp16/bf16 (sm_80+), tensor_core_min_dim() <= d <= tensor_core_max_dim():
// z_centered / codebook_centered are z and the codebook minus the codebook mean (same dtype),
// centered_sqnorm their codewords' squared norms (k floats); z / codebook the original values
// for the exact fp32 re-rank of each row's best candidates. Same outputs as above.
cudaError_t launch_nearest_codeword_tc(ScalarKind kind, const void* z_centered, const void* codebook_centered,
                                       const float* centered_sqnorm, const void* z, const void* codebook, int64_t n,
                                       int64_t k, int d, int64_t* out_index, float* out_distance, cudaStream_t stream);
int tensor_core_min_dim();
int tensor_core_max_dim();

// Largest code dimension the shared-memory tiling supports.
size_t max_code_dim();

}  // namespace tokbench
