"""LLM.int8(): refused on CPU with one sentence; parameters validated at construction."""

import pytest
import torch
from omegaconf import OmegaConf

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext
from compbench.methods.quantization.ptq_llm_int8 import LLMInt8PTQ
from method_harness import METHOD_CONF as CONF


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for CPU-only machines")
@pytest.mark.parametrize("family", ["encoder", "decoder", "encoder_decoder"])
def test_refused_on_cpu_suggesting_dynamic_int8(family):
    method = LLMInt8PTQ()
    with pytest.raises(ConfigError, match="ptq_dynamic_int8") as err:
        method.check(MethodContext(family=family))
    assert str(err.value).count(".") <= 2 and "CUDA" in str(err.value)


def test_bad_threshold_refused():
    with pytest.raises(ConfigError, match="threshold"):
        LLMInt8PTQ(threshold=-1)


def test_yaml_builds_with_list_of_skips():
    method = build_method(OmegaConf.load(CONF / "ptq_llm_int8.yaml"))
    assert method.skip_modules == ("lm_head", "classifier", "score")
    assert method.row_params() == {"threshold": 6.0, "skip_modules": "lm_head,classifier,score"}


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: LLM.int8() (bitsandbytes) has CUDA kernels only, and this machine has no CUDA device")
def test_runs_and_reloads_on_cuda(tmp_path):
    pytest.importorskip("bitsandbytes", reason="needs bitsandbytes (LLM.int8()'s kernels): pip install bitsandbytes on the CUDA machine")
    from method_harness import tiny_batch, tiny_model

    from compbench.methods.export import load_export

    device = torch.device("cuda")
    model = tiny_model("decoder")
    batch = {k: v.to(device) for k, v in tiny_batch("decoder").items()}
    with torch.no_grad():
        reference = model.to(device)(**batch).logits.float()
    method = LLMInt8PTQ()
    ctx = MethodContext(family="decoder", device=device)
    method.check(ctx)
    model = method.finalize(method.prepare(model, ctx), ctx)
    with torch.no_grad():
        logits = model(**batch).logits.float()
    assert torch.isfinite(logits).all() and (logits - reference).abs().max() < 0.1 * reference.abs().max()
    method.export(model, tmp_path, ctx)
    with torch.no_grad():
        torch.testing.assert_close(load_export(tmp_path)(**batch).logits.float(), logits)
