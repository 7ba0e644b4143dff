"""Kernels for budgeted MoE inference: fused routing and grouped expert computation.

Every kernel has a pure-torch reference beside it (``*_reference``) and a dispatcher that picks
Triton on CUDA and the fastest torch formulation on CPU.
"""
