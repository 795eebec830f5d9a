"""CUDA C++ kernels, compiled at first use by NVRTC (which every CUDA build of torch ships).

Where Triton cannot express what a kernel needs: `decode_gemm.cu` places each weight byte in the
register a tensor-core instruction reads it from, which Triton's layouts do not allow. No compiler
toolchain is needed at install time; without CUDA (or NVRTC) the callers keep the Triton kernels.
"""
