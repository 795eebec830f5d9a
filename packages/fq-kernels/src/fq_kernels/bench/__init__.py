"""Benchmark harness for the kernels (GPU only): timing by CUDA-graph replay, the contenders of the
linear-layer comparison, and the table/plot writer behind `packages/fq-kernels/benchmarks/`."""
