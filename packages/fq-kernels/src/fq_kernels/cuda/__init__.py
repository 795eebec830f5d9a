"""CUDA C++ kernels, compiled at first use by NVRTC (which every CUDA build of torch ships).

Where Triton cannot express what a kernel needs: `decode_gemm.cu` places each weight byte in the
register a tensor-core instruction reads it from, which Triton's layouts do not allow;
`transform_quant.cu` keeps a token's transform in the registers the tensor cores write through the
reduction and the quantisation. `nvrtc.py` compiles them, `launch.py` launches the decode GEMM so that
it overlaps the kernel before it (programmatic dependent launch). No compiler toolchain is needed at
install time; without CUDA (or NVRTC) the callers keep the Triton kernels.
"""
