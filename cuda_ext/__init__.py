"""The fused nearest-codeword CUDA extension (sources here, built on first use by `loader`)."""
