"""Quantization methods and their machinery.

``quantizers`` (STE fake-quantizers: minmax, PACT, LSQ, QuantGPT's dynamic scaling; quantized
module wrappers; bit-width checks) → ``packing`` (2/3/4/8-bit codes on disk) → the methods:
``ptq_weight_only``, ``ptq_dynamic_int8``, ``ptq_half``, ``ptq_llm_int8``, ``qat``,
``contrastive_qat``.
"""
