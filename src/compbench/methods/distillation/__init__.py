"""Distillation: ``kd`` (knowledge distillation into a smaller student) and ``losses`` (the
logit / hidden-state / attention losses shared with the quantization-aware methods)."""
