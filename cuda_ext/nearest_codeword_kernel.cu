// Fused nearest-codeword search: for each row of z (N x D) the index of the nearest row of
// a codebook (K x D), without ever materializing the N x K distance matrix.
//
// Every path ranks by score = |c - m|^2 - 2 (z - m).(c - m), which orders codewords exactly
// like |z - c|^2 (the |z - m|^2 term is the same for every codeword); centering on the
// codebook mean m keeps the expansion well conditioned when codewords sit far from the
// origin. Ties go to the lowest index, with no atomics (deterministic). The returned
// distance is |z - c_best|^2 computed directly in fp32 from the original values, never read
// off the expansion. Three paths:
//
// Short codewords (D <= 32): one row of z per thread, in registers; see below.
//
// General path (33 <= D <= max_code_dim()): one block scores kRows rows of z against the
// whole codebook. Tiles of kThreads codewords are staged in shared memory (centered, fp32);
// each thread owns one codeword of the tile and keeps a running (score, index) per row in
// registers. At the end the per-thread bests are reduced with warp shuffles and then across
// warps through shared memory.
//
// Tensor-core path (fp16/bf16, 64 <= D <= 256): nearest_codeword_tc.cu.
//
// Plain CUDA C++ (no PyTorch headers) so that it compile-checks with nvcc alone.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "nearest_codeword.h"
#include "nearest_codeword_device.cuh"

namespace tokbench {
namespace {

constexpr int kRows = 16;      // rows of z per block
constexpr int kThreads = 128;  // = codewords per tile
constexpr int kWarps = kThreads / 32;

using detail::better;
using detail::exact_sq_distance;
using detail::to_float;

__device__ __forceinline__ void warp_argmin(float& s, int64_t& i) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other_s = __shfl_down_sync(0xffffffffu, s, offset);
    const int64_t other_i = __shfl_down_sync(0xffffffffu, i, offset);
    if (better(other_s, other_i, s, i)) { s = other_s; i = other_i; }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
nearest_codeword_kernel(const T* __restrict__ z, const T* __restrict__ codebook, const float* __restrict__ mean,
                        const float* __restrict__ code_sqnorm, int64_t n, int64_t k, int d,
                        int64_t* __restrict__ out_index, float* __restrict__ out_distance) {
  extern __shared__ float smem[];
  const int stride = d + 1;                      // +1 float: no bank conflicts on column reads
  float* z_tile = smem;                          // kRows x stride, centered rows of z
  float* c_tile = z_tile + kRows * stride;       // kThreads x stride, centered codewords
  float* red_s = c_tile + kThreads * stride;     // kWarps x kRows scores
  int64_t* red_i = reinterpret_cast<int64_t*>(red_s + kWarps * kRows);  // kWarps x kRows indices

  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int rows = static_cast<int>(n - row0 < kRows ? n - row0 : kRows);

  for (int e = tid; e < kRows * d; e += kThreads) {
    const int r = e / d, c = e % d;
    z_tile[r * stride + c] = r < rows ? to_float(z[(row0 + r) * d + c]) - mean[c] : 0.f;
  }

  float best_s[kRows];
  int64_t best_i[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) { best_s[r] = INFINITY; best_i[r] = INT64_MAX; }

  for (int64_t k0 = 0; k0 < k; k0 += kThreads) {
    __syncthreads();  // previous tile fully used (and z_tile written on the first pass)
    const int tile = static_cast<int>(k - k0 < kThreads ? k - k0 : kThreads);
    for (int e = tid; e < tile * d; e += kThreads) {  // coalesced: consecutive threads, consecutive floats
      const int j = e / d, c = e % d;
      c_tile[j * stride + c] = to_float(codebook[(k0 + j) * d + c]) - mean[c];
    }
    __syncthreads();
    if (tid < tile) {
      const int64_t code = k0 + tid;
      const float norm = code_sqnorm[code];
      const float* cw = c_tile + tid * stride;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float* zr = z_tile + r * stride;  // same address for every thread: a broadcast
        float dot = 0.f;
        for (int c = 0; c < d; ++c) dot = fmaf(zr[c], cw[c], dot);
        const float score = fmaf(-2.f, dot, norm);
        if (better(score, code, best_s[r], best_i[r])) { best_s[r] = score; best_i[r] = code; }
      }
    }
  }

  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float s = best_s[r];
    int64_t i = best_i[r];
    warp_argmin(s, i);
    if (lane == 0) { red_s[warp * kRows + r] = s; red_i[warp * kRows + r] = i; }
  }
  __syncthreads();
  if (tid < rows) {
    float s = red_s[tid];
    int64_t i = red_i[tid];
    for (int w = 1; w < kWarps; ++w) {
      if (better(red_s[w * kRows + tid], red_i[w * kRows + tid], s, i)) { s = red_s[w * kRows + tid]; i = red_i[w * kRows + tid]; }
    }
    const int64_t row = row0 + tid;
    out_index[row] = i;
    out_distance[row] = exact_sq_distance(z + row * d, codebook + i * d, d);
  }
}

template <typename T>
__global__ void centered_sqnorm_kernel(const T* __restrict__ codebook, const float* __restrict__ mean, int64_t k, int d,
                                       float* __restrict__ out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= k) return;
  float acc = 0.f;
  for (int c = 0; c < d; ++c) {
    const float v = to_float(codebook[j * d + c]) - mean[c];
    acc = fmaf(v, v, acc);
  }
  out[j] = acc;
}

// Short codewords (D <= 32, the LlamaGen regime): each thread owns one row of z in registers
// and walks the codebook tile in shared memory, every codeword read as float4 broadcasts, so
// a (row, codeword) pair costs D FMAs plus a compare -- no shared-memory load per FMA and no
// cross-thread reduction. Codewords are visited in increasing index and replaced only on a
// strictly smaller score, so ties keep the lowest index.
constexpr int kSmallThreads = 128;  // = rows of z per block
constexpr int kSmallTile = 256;     // codewords per shared-memory tile
constexpr int kSmallMaxDim = 32;

template <typename T, int DC>  // DC: d rounded up to 4, 8, 16 or 32 (zero padding adds nothing)
__global__ void __launch_bounds__(kSmallThreads)
nearest_codeword_small_d_kernel(const T* __restrict__ z, const T* __restrict__ codebook, const float* __restrict__ mean,
                                const float* __restrict__ code_sqnorm, int64_t n, int64_t k, int d,
                                int64_t* __restrict__ out_index, float* __restrict__ out_distance) {
  __shared__ __align__(16) float c_tile[kSmallTile * DC];  // centered codewords
  __shared__ float norm_tile[kSmallTile];
  const int tid = threadIdx.x;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kSmallThreads + tid;
  float zr[DC];
#pragma unroll
  for (int c = 0; c < DC; ++c) zr[c] = (row < n && c < d) ? to_float(z[row * d + c]) - mean[c] : 0.f;

  float best_s = INFINITY;
  int64_t best_i = 0;
  for (int64_t k0 = 0; k0 < k; k0 += kSmallTile) {
    const int tile = static_cast<int>(k - k0 < kSmallTile ? k - k0 : kSmallTile);
    __syncthreads();  // the previous tile is fully used
    for (int e = tid; e < kSmallTile * DC; e += kSmallThreads) {
      const int j = e / DC, c = e % DC;
      c_tile[e] = (j < tile && c < d) ? to_float(codebook[(k0 + j) * d + c]) - mean[c] : 0.f;
    }
    for (int j = tid; j < kSmallTile; j += kSmallThreads) norm_tile[j] = j < tile ? code_sqnorm[k0 + j] : INFINITY;
    __syncthreads();
    for (int j = 0; j < tile; ++j) {
      const float4* cw = reinterpret_cast<const float4*>(c_tile + j * DC);
      float dot = 0.f;
#pragma unroll
      for (int q = 0; q < DC / 4; ++q) {
        const float4 v = cw[q];
        dot = fmaf(zr[4 * q], v.x, dot);
        dot = fmaf(zr[4 * q + 1], v.y, dot);
        dot = fmaf(zr[4 * q + 2], v.z, dot);
        dot = fmaf(zr[4 * q + 3], v.w, dot);
      }
      const float score = fmaf(-2.f, dot, norm_tile[j]);
      if (score < best_s) { best_s = score; best_i = k0 + j; }
    }
  }
  if (row < n) {
    out_index[row] = best_i;
    out_distance[row] = exact_sq_distance(z + row * d, codebook + best_i * d, d);
  }
}

template <typename T, int DC>
cudaError_t launch_small_d(const void* z, const void* codebook, const float* mean, const float* code_sqnorm, int64_t n,
                           int64_t k, int d, int64_t* out_index, float* out_distance, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((n + kSmallThreads - 1) / kSmallThreads);
  if (blocks > 0) {
    nearest_codeword_small_d_kernel<T, DC><<<blocks, kSmallThreads, 0, stream>>>(
        static_cast<const T*>(z), static_cast<const T*>(codebook), mean, code_sqnorm, n, k, d, out_index, out_distance);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const void* z, const void* codebook, const float* mean, float* code_sqnorm, int64_t n,
                         int64_t k, int d, int64_t* out_index, float* out_distance, cudaStream_t stream) {
  centered_sqnorm_kernel<T><<<static_cast<unsigned>((k + 255) / 256), 256, 0, stream>>>(
      static_cast<const T*>(codebook), mean, k, d, code_sqnorm);
  if (d <= 4) return launch_small_d<T, 4>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
  if (d <= 8) return launch_small_d<T, 8>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
  if (d <= 16) return launch_small_d<T, 16>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
  if (d <= kSmallMaxDim) {
    return launch_small_d<T, kSmallMaxDim>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
  }
  const size_t stride = static_cast<size_t>(d) + 1;
  const size_t shared = (kRows + kThreads) * stride * sizeof(float) + kWarps * kRows * (sizeof(float) + sizeof(int64_t));
  if (shared > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(nearest_codeword_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shared));
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = static_cast<unsigned>((n + kRows - 1) / kRows);
  if (blocks > 0) {
    nearest_codeword_kernel<T><<<blocks, kThreads, shared, stream>>>(
        static_cast<const T*>(z), static_cast<const T*>(codebook), mean, code_sqnorm, n, k, d, out_index, out_distance);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_nearest_codeword(ScalarKind kind, const void* z, const void* codebook, const float* mean,
                                    float* code_sqnorm, int64_t n, int64_t k, int d, int64_t* out_index,
                                    float* out_distance, cudaStream_t stream) {
  switch (kind) {
    case ScalarKind::kFloat32:
      return launch_typed<float>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
    case ScalarKind::kFloat16:
      return launch_typed<__half>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
    case ScalarKind::kBFloat16:
      return launch_typed<__nv_bfloat16>(z, codebook, mean, code_sqnorm, n, k, d, out_index, out_distance, stream);
  }
  return cudaErrorInvalidValue;
}

size_t max_code_dim() {
  // (kRows + kThreads) * (d + 1) floats must fit in the 227 KiB an H100/A100 block may use.
  return (227 * 1024 - kWarps * kRows * (sizeof(float) + sizeof(int64_t))) / ((kRows + kThreads) * sizeof(float)) - 1;
}

}  // namespace tokbench
