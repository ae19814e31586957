// PyTorch binding of the fused nearest-codeword kernel: checks, dtype dispatch, outputs.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "nearest_codeword.h"

namespace {

tokbench::ScalarKind kind_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return tokbench::ScalarKind::kFloat32;
    case at::kHalf: return tokbench::ScalarKind::kFloat16;
    case at::kBFloat16: return tokbench::ScalarKind::kBFloat16;
    default: TORCH_CHECK(false, "nearest_codeword: z and codebook must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

}  // namespace

// tensor_cores: take the WMMA path (fp16/bf16, tensor_core_min_dim() <= D <= tensor_core_max_dim(),
// a device of compute capability 8.0 or newer); the caller decides, after its self-check.
std::vector<at::Tensor> nearest_codeword(at::Tensor z, at::Tensor codebook, bool tensor_cores) {
  TORCH_CHECK(z.is_cuda() && codebook.is_cuda(), "nearest_codeword: both tensors must be on a CUDA device");
  TORCH_CHECK(z.device() == codebook.device(), "nearest_codeword: z is on ", z.device(), " but the codebook is on ", codebook.device());
  TORCH_CHECK(z.dim() == 2 && codebook.dim() == 2 && z.size(1) == codebook.size(1),
              "nearest_codeword: expected z (N, D) and codebook (K, D)");
  TORCH_CHECK(z.scalar_type() == codebook.scalar_type(), "nearest_codeword: z and codebook must share a dtype");
  TORCH_CHECK(codebook.size(0) > 0, "nearest_codeword: empty codebook");
  TORCH_CHECK(static_cast<size_t>(z.size(1)) <= tokbench::max_code_dim(), "nearest_codeword: code dimension ", z.size(1),
              " exceeds the kernel's maximum ", tokbench::max_code_dim());
  const c10::cuda::CUDAGuard guard(z.device());
  z = z.contiguous();
  codebook = codebook.contiguous();
  const auto n = z.size(0), k = codebook.size(0);
  const int d = static_cast<int>(z.size(1));
  auto f32 = z.options().dtype(at::kFloat);
  at::Tensor mean = codebook.to(at::kFloat).mean(0).contiguous();  // centering: see the kernel's comment
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor distance = at::empty({n}, f32);
  if (tensor_cores) {
    TORCH_CHECK(z.scalar_type() != at::kFloat, "nearest_codeword: the tensor-core path takes float16 or bfloat16");
    TORCH_CHECK(d >= tokbench::tensor_core_min_dim() && d <= tokbench::tensor_core_max_dim(),
                "nearest_codeword: the tensor-core path takes ", tokbench::tensor_core_min_dim(), " <= D <= ",
                tokbench::tensor_core_max_dim(), ", got D = ", d);
    int major = 0;  // (the CUDA runtime directly: ATen's CUDAContext.h pulls in cuSPARSE's headers)
    TORCH_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, z.get_device()) == cudaSuccess &&
                major >= 8, "nearest_codeword: the tensor-core path needs compute capability 8.0 or newer");
    // Centered copies in the input dtype rank the candidates; the originals re-rank them exactly.
    const at::Tensor mean_t = mean.to(z.scalar_type());
    const at::Tensor z_centered = (z - mean_t).contiguous();
    const at::Tensor code_centered = (codebook - mean_t).contiguous();
    const at::Tensor centered_sqnorm = code_centered.to(at::kFloat).square().sum(1).contiguous();
    const cudaError_t err = tokbench::launch_nearest_codeword_tc(
        kind_of(z), z_centered.data_ptr(), code_centered.data_ptr(), centered_sqnorm.data_ptr<float>(), z.data_ptr(),
        codebook.data_ptr(), n, k, d, index.data_ptr<int64_t>(), distance.data_ptr<float>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "nearest_codeword tensor-core kernel failed: ", cudaGetErrorString(err));
    return {index, distance};
  }
  at::Tensor code_sqnorm = at::empty({k}, f32);
  const cudaError_t err = tokbench::launch_nearest_codeword(
      kind_of(z), z.data_ptr(), codebook.data_ptr(), mean.data_ptr<float>(), code_sqnorm.data_ptr<float>(), n, k, d,
      index.data_ptr<int64_t>(), distance.data_ptr<float>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "nearest_codeword kernel failed: ", cudaGetErrorString(err));
  return {index, distance};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nearest_codeword", &nearest_codeword, "fused nearest-codeword search (indices int64, distances fp32)",
        pybind11::arg("z"), pybind11::arg("codebook"), pybind11::arg("tensor_cores") = false);
  m.def("tensor_core_dims", []() { return std::make_pair(tokbench::tensor_core_min_dim(), tokbench::tensor_core_max_dim()); },
        "(min, max) code dimension of the tensor-core path");
  m.def("max_code_dim", &tokbench::max_code_dim, "largest code dimension the kernel's shared-memory tiles hold");
}
