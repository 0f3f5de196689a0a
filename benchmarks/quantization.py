"""Export size and CPU latency of the quantization methods on a GPT-2-small-shaped model.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/quantization.py [--threads 1] [--repeats 7] [--fast]

The model is ``GPT2LMHeadModel(GPT2Config())`` with random weights (no hub access; size and
speed do not depend on the values). For each method: ``check -> prepare -> finalize`` (no
training: QAT's numbers are those of its frozen quantized model), one forward (initialises
QAT's activation quantizers), ``export``, ``load_export`` (max |logit diff| vs the finalized
model is printed), then latency at batch 1 x ``--seq-len`` tokens: warm-up, then fp32 and the
method timed alternately in the same process, median of ``--repeats``. The machine is shared
and noisy, so only the ratios measured side by side are meaningful:

* ``size x``: fp32 ``save_pretrained`` safetensors bytes / export bytes on disk;
* ``speed-up x``: median fp32 latency / median method latency.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.methods.base import Method, MethodContext
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.ptq_dynamic_int8 import DynamicInt8PTQ
from compbench.methods.ptq_weight_only import WeightOnlyPTQ
from compbench.methods.qat import QAT


def methods(fast: bool) -> list[tuple[str, Method | None]]:
    """(label, method) pairs; method None = torch's quantize_dynamic without Conv1D conversion."""
    specs: list[tuple[str, Method | None]] = [
        ("ptq_weight_only W8 E8 per-channel", WeightOnlyPTQ(w_bits=8, e_bits=8)),
        ("ptq_weight_only W4 E4 g128", WeightOnlyPTQ(w_bits=4, e_bits=4, group_size=128)),
        ("ptq_weight_only W3 E3 g128", WeightOnlyPTQ(w_bits=3, e_bits=3, group_size=128)),
        ("ptq_weight_only W2 E2 per-channel", WeightOnlyPTQ(w_bits=2, e_bits=2)),
        ("qat 8-8-8 lsq", QAT(w_bits=8, e_bits=8, a_bits=8, distill=False)),
        ("qat 4-4-8 lsq", QAT(w_bits=4, e_bits=4, a_bits=8, distill=False)),
        ("qat 2-2-8 lsq", QAT(w_bits=2, e_bits=2, a_bits=8, distill=False)),
        ("ptq_dynamic_int8 torch_ao", DynamicInt8PTQ(backend="torch_ao")),
        ("torch_ao quantize_dynamic, Conv1D NOT converted", None),
    ]
    if not fast:
        specs.append(("ptq_dynamic_int8 torchao", DynamicInt8PTQ(backend="torchao")))
    return specs


@torch.inference_mode()
def interleaved_latency(reference, model, inputs, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds per forward of ``reference`` and ``model``, timed alternately."""
    for _ in range(warmup):
        reference(inputs)
        model(inputs)
    ref_times, times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reference(inputs)
        ref_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        model(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(ref_times), statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--fast", action="store_true", help="skip the (slow on CPU) torchao int8 backend")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
          f"batch 1 x {args.seq_len}, warm-up {args.warmup}, median of {args.repeats}")

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config()).eval()
    inputs = torch.randint(0, base.config.vocab_size, (1, args.seq_len), generator=torch.Generator().manual_seed(0))
    work = Path(tempfile.mkdtemp(prefix="compbench_quant_bench_"))
    try:
        base.save_pretrained(work / "fp32", safe_serialization=True)
        fp32_bytes = artifact_size_bytes(work / "fp32")
        print(f"fp32 safetensors: {fp32_bytes / 2**20:.1f} MiB")
        header = f"{'method':<50} {'size MiB':>9} {'size x':>7} {'fp32 ms':>8} {'ms':>8} {'speed-up x':>10} {'reload diff':>11}"
        print(header)
        print("-" * len(header))
        for label, method in methods(args.fast):
            model = copy.deepcopy(base)
            size_mib = size_x = reload_diff = float("nan")
            if method is None:
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            else:
                ctx = MethodContext(family="decoder", teacher_available=False)
                method.check(ctx)
                model = method.finalize(method.prepare(model, ctx), ctx).eval()
                with torch.inference_mode():
                    logits = model(inputs).logits
                out_dir = work / "export"
                manifest = method.export(model, out_dir, ctx)
                size_mib = manifest["size_bytes"] / 2**20
                size_x = fp32_bytes / manifest["size_bytes"]
                with torch.inference_mode():
                    reload_diff = float((load_export(out_dir)(inputs).logits - logits).abs().max())
                shutil.rmtree(out_dir)
            repeats = args.repeats if "torchao" not in label else min(args.repeats, 3)
            ref_s, method_s = interleaved_latency(base, model, inputs, args.warmup if repeats > 3 else 1, repeats)
            print(f"{label:<50} {size_mib:>9.1f} {size_x:>7.2f} {ref_s * 1e3:>8.1f} {method_s * 1e3:>8.1f} "
                  f"{ref_s / method_s:>10.2f} {reload_diff:>11.2e}", flush=True)
            del model
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
