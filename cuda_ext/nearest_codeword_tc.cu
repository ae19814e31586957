// Nearest-codeword search on tensor cores (fp16/bf16 inputs, kTcMinDim <= D <= kTcMaxDim;
// sm_80+). The dot products
// of a block's 128 rows with a tile of 64 codewords run as WMMA 16x16x16 products with fp32
// accumulation, on the inputs centered on the codebook mean (rounded back to the input
// dtype: these scores only rank). Each row keeps its best kTcTopM candidates by that score,
// and they are re-ranked by |z - c|^2 computed exactly in fp32 from the original values, so
// the low-precision products do not decide near ties.
// See nearest_codeword_kernel.cu for the score every path ranks by.
#include <mma.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "nearest_codeword.h"
#include "nearest_codeword_device.cuh"

namespace tokbench {
namespace {

using detail::better;
using detail::exact_sq_distance;

constexpr int kTcRows = 128;                // rows of z per block: one 16-row strip per warp
constexpr int kTcWarps = kTcRows / 16;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcCodes = 64;                // codewords per tile: four 16-wide WMMA tiles
constexpr int kTcTopM = 4;                  // candidates per row re-ranked exactly
constexpr int kAccStride = kTcCodes + 4;    // floats per row of a warp's score strip (WMMA: multiple of 4)
constexpr int kTcMinDim = 64, kTcMaxDim = 256;

template <typename T>
__device__ __forceinline__ T zero_of();
template <>
__device__ __forceinline__ __half zero_of<__half>() { return __float2half(0.f); }
template <>
__device__ __forceinline__ __nv_bfloat16 zero_of<__nv_bfloat16>() { return __float2bfloat16(0.f); }

// Keeps s[0..M) ascending in (score, index) order; inserts (score, code) if it belongs there.
__device__ __forceinline__ void top_insert(float (&s)[kTcTopM], int64_t (&idx)[kTcTopM], float score, int64_t code) {
  if (!better(score, code, s[kTcTopM - 1], idx[kTcTopM - 1])) return;
  s[kTcTopM - 1] = score;
  idx[kTcTopM - 1] = code;
#pragma unroll
  for (int j = kTcTopM - 1; j > 0; --j) {
    if (better(s[j], idx[j], s[j - 1], idx[j - 1])) {
      const float ts = s[j]; s[j] = s[j - 1]; s[j - 1] = ts;
      const int64_t ti = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = ti;
    }
  }
}

// zc, cc: z and the codebook minus the codebook mean, in T; cc_sqnorm: |cc|^2 in fp32.
// z, codebook: the original values, for the exact re-rank. dp: d rounded up to 16.
template <typename T>
__global__ void __launch_bounds__(kTcThreads)
nearest_codeword_tc_kernel(const T* __restrict__ zc, const T* __restrict__ cc, const float* __restrict__ cc_sqnorm,
                           const T* __restrict__ z, const T* __restrict__ codebook, int64_t n, int64_t k, int d,
                           int dp, int64_t* __restrict__ out_index, float* __restrict__ out_distance) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int ld = dp + 8;  // elements per smem row: a multiple of 8 (WMMA), shifted banks per row
  T* z_tile = reinterpret_cast<T*>(smem_raw);                         // kTcRows x ld
  T* c_tile = z_tile + kTcRows * ld;                                   // kTcCodes x ld
  float* strips = reinterpret_cast<float*>(c_tile + kTcCodes * ld);    // kTcWarps x 16 x kAccStride
  float* norm_tile = strips + kTcWarps * 16 * kAccStride;              // kTcCodes

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  for (int e = tid; e < kTcRows * dp; e += kTcThreads) {
    const int r = e / dp, c = e % dp;
    const int64_t row = row0 + r;
    z_tile[r * ld + c] = (row < n && c < d) ? zc[row * d + c] : zero_of<T>();
  }

  // Lane l scans row (l % 16) of its warp's strip, the even (l < 16) or odd columns:
  // neighbouring lanes read neighbouring words (two-way bank conflicts at most).
  const int my_row = lane % 16, my_parity = lane / 16;
  float best_s[kTcTopM];
  int64_t best_i[kTcTopM];
#pragma unroll
  for (int m = 0; m < kTcTopM; ++m) { best_s[m] = INFINITY; best_i[m] = INT64_MAX; }
  float* strip = strips + warp * 16 * kAccStride;

  for (int64_t k0 = 0; k0 < k; k0 += kTcCodes) {
    __syncthreads();  // the previous tile is fully used (and z_tile written on the first pass)
    const int tile = static_cast<int>(k - k0 < kTcCodes ? k - k0 : kTcCodes);
    for (int e = tid; e < kTcCodes * dp; e += kTcThreads) {
      const int j = e / dp, c = e % dp;
      c_tile[j * ld + c] = (j < tile && c < d) ? cc[(k0 + j) * d + c] : zero_of<T>();
    }
    for (int j = tid; j < kTcCodes; j += kTcThreads) norm_tile[j] = j < tile ? cc_sqnorm[k0 + j] : INFINITY;
    __syncthreads();

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTcCodes / 16];
#pragma unroll
    for (int t = 0; t < kTcCodes / 16; ++t) wmma::fill_fragment(acc[t], 0.f);
    for (int kk = 0; kk < dp; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, z_tile + warp * 16 * ld + kk, ld);
#pragma unroll
      for (int t = 0; t < kTcCodes / 16; ++t) {
        // B = codewords^T (d x 16): codeword-major rows in smem are B's columns.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::load_matrix_sync(b, c_tile + t * 16 * ld + kk, ld);
        wmma::mma_sync(acc[t], a, b, acc[t]);
      }
    }
#pragma unroll
    for (int t = 0; t < kTcCodes / 16; ++t) {
      wmma::store_matrix_sync(strip + t * 16, acc[t], kAccStride, wmma::mem_row_major);
    }
    __syncwarp();
    const float* dots = strip + my_row * kAccStride;
    for (int j = my_parity; j < tile; j += 2) {
      top_insert(best_s, best_i, fmaf(-2.f, dots[j], norm_tile[j]), k0 + j);
    }
    __syncwarp();
  }

  // The two lanes of a row merge their candidates; the even lane re-ranks them exactly.
  float other_s[kTcTopM];
  int64_t other_i[kTcTopM];
#pragma unroll
  for (int m = 0; m < kTcTopM; ++m) {
    other_s[m] = __shfl_xor_sync(0xffffffffu, best_s[m], 16);
    other_i[m] = __shfl_xor_sync(0xffffffffu, best_i[m], 16);
  }
#pragma unroll
  for (int m = 0; m < kTcTopM; ++m) top_insert(best_s, best_i, other_s[m], other_i[m]);
  const int64_t row = row0 + warp * 16 + my_row;
  if (my_parity == 0 && row < n) {
    float dist = INFINITY;
    int64_t index = INT64_MAX;
#pragma unroll
    for (int m = 0; m < kTcTopM; ++m) {
      if (best_i[m] == INT64_MAX) continue;  // fewer than kTcTopM codewords
      const float candidate = exact_sq_distance(z + row * d, codebook + best_i[m] * d, d);
      if (better(candidate, best_i[m], dist, index)) { dist = candidate; index = best_i[m]; }
    }
    out_index[row] = index;
    out_distance[row] = dist;
  }
#else
  __trap();  // the host refuses this path below sm_80 (bf16 WMMA needs it)
#endif
}

template <typename T>
cudaError_t launch_tc_typed(const void* zc, const void* cc, const float* cc_sqnorm, const void* z, const void* codebook,
                            int64_t n, int64_t k, int d, int64_t* out_index, float* out_distance, cudaStream_t stream) {
  const int dp = (d + 15) / 16 * 16;
  const size_t shared = static_cast<size_t>(kTcRows + kTcCodes) * (dp + 8) * sizeof(T) +
                        (static_cast<size_t>(kTcWarps) * 16 * kAccStride + kTcCodes) * sizeof(float);
  if (shared > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(nearest_codeword_tc_kernel<T>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = static_cast<unsigned>((n + kTcRows - 1) / kTcRows);
  if (blocks > 0) {
    nearest_codeword_tc_kernel<T><<<blocks, kTcThreads, shared, stream>>>(
        static_cast<const T*>(zc), static_cast<const T*>(cc), cc_sqnorm, static_cast<const T*>(z),
        static_cast<const T*>(codebook), n, k, d, dp, out_index, out_distance);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_nearest_codeword_tc(ScalarKind kind, const void* z_centered, const void* codebook_centered,
                                       const float* centered_sqnorm, const void* z, const void* codebook, int64_t n,
                                       int64_t k, int d, int64_t* out_index, float* out_distance, cudaStream_t stream) {
  if (d < kTcMinDim || d > kTcMaxDim) return cudaErrorInvalidValue;
  switch (kind) {
    case ScalarKind::kFloat16:
      return launch_tc_typed<__half>(z_centered, codebook_centered, centered_sqnorm, z, codebook, n, k, d, out_index,
                                     out_distance, stream);
    case ScalarKind::kBFloat16:
      return launch_tc_typed<__nv_bfloat16>(z_centered, codebook_centered, centered_sqnorm, z, codebook, n, k, d,
                                            out_index, out_distance, stream);
    case ScalarKind::kFloat32:
      break;  // fp32 stays on the exact FMA path
  }
  return cudaErrorInvalidValue;
}

int tensor_core_min_dim() { return kTcMinDim; }
int tensor_core_max_dim() { return kTcMaxDim; }

}  // namespace tokbench
