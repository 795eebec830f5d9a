"""Triton kernels (one job per file), each with a host-side launcher that checks its inputs.

Importing this package imports triton and decorates the kernels; TRITON_INTERPRET must be set
before that for the CPU interpreter to be used (see `fq_kernels._runtime`).
"""
