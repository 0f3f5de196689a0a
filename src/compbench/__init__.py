"""compbench: a benchmark suite for compressing pretrained language models."""

__version__ = "0.1.0"
