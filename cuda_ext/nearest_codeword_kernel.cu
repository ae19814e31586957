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
// Tensor-core path (fp16/bf16 inputs, kTcMinDim <= D <= kTcMaxDim; sm_80+): the dot products
// of a block's 128 rows with a tile of 64 codewords run as WMMA 16x16x16 products with fp32
// accumulation, on the inputs centered on the codebook mean (rounded back to the input
// dtype: these scores only rank). Each row keeps its best kTcTopM candidates by that score,
// and they are re-ranked by |z - c|^2 computed exactly in fp32 from the original values, so
// the low-precision products do not decide near ties.
//
// Plain CUDA C++ (no PyTorch headers) so that it compile-checks with nvcc alone.
#include <mma.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "nearest_codeword.h"

namespace tokbench {
namespace {

constexpr int kRows = 16;      // rows of z per block
constexpr int kThreads = 128;  // = codewords per tile
constexpr int kWarps = kThreads / 32;

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


// ---------------------------------------------------------------------------------------
// Tensor-core path.

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
