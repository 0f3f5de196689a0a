"""Bytes on disk of every method's export against the fp32 export (``size``)."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from compbench.bench.fixtures import export_reload, gpt2_config
from compbench.errors import user_sentence


def bench_size(args) -> dict[str, Any]:
    """Export bytes on disk / fp32 export bytes per method, GPT-2-small shape (no training: sizes
    do not depend on weight values except for sparse storage, where magnitude pruning fixes the
    zeros). Each method is built from its ``conf/method/*.yaml`` with the listed overrides."""
    from omegaconf import OmegaConf
    from transformers import GPT2LMHeadModel

    from compbench.configs import conf_dir
    from compbench.methods import build_method

    conf = conf_dir()

    # ptq_dynamic_int8, prune_structured (50%) and KD half depth are exported by the speed-up
    # benchmark (same methods, same shape): their sizes are in speedup.json and in the summary.
    variants = {
        "none": ("none", {}),
        "ptq_half_bf16": ("ptq_half", {}),
        "ptq_weight_only_w4": ("ptq_weight_only", {}),
        "prune_magnitude_80": ("prune_magnitude", {"sparsity": 0.8}),
        "qat_8-8-8": ("qat", {"w_bits": 8, "e_bits": 8, "a_bits": 8, "max_steps": 1}),
        "qat_4-4-8": ("qat", {"w_bits": 4, "e_bits": 4, "a_bits": 8, "max_steps": 1}),
        "qat_2-2-8": ("qat", {"w_bits": 2, "e_bits": 2, "a_bits": 8, "max_steps": 1}),
        # contrastive_qat 2-2-8 stores the same packed 2-bit codes (its dynamic-scaling init costs
        # minutes at this shape): qat_2-2-8 stands for it.
    }
    if args.quick:
        variants = {k: variants[k] for k in ("none", "ptq_half_bf16", "qat_2-2-8")}
    torch.manual_seed(0)
    config = gpt2_config(args.quick)
    fp32 = GPT2LMHeadModel(config).eval()
    sizes, modes, errors, seconds = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (name, overrides) in variants.items():
            start = time.perf_counter()
            cfg = OmegaConf.merge(OmegaConf.load(conf / "method" / f"{name}.yaml"), overrides)
            method = build_method(cfg)
            try:
                _, sizes[label] = export_reload(method, copy.deepcopy(fp32), "decoder", Path(tmp) / label,
                                                 teacher=fp32)
                modes[label] = method.eff_mode
            except Exception as exc:
                errors[label] = user_sentence(exc)
            seconds[label] = time.perf_counter() - start
            print(f"    {label}: {seconds[label]:.0f} s", flush=True)
    ratios = {k: sizes["none"] / v for k, v in sizes.items()}
    key = "qat_2-2-8"
    value = ratios.get(key, float("nan"))
    return {"description": bench_size.__doc__, "config": config.to_diff_dict(), "size_bytes": sizes,
            "compression_ratio_fp32_over_export": ratios, "eff_mode": modes, "errors": errors,
            "prepare_finalize_export_s": seconds,
            "headline": {"name": "QAT 2-2-8 compression ratio (fp32 bytes / export bytes)", "value": value,
                         "target": "> 14.4", "met": value > 14.4}}
