"""ptq_half: a cast to bf16/fp16 whose export is half the fp32 bytes and reloads bit-identically."""

import copy

import pytest
import torch

from compbench.errors import ConfigError
from compbench.methods.base import MethodContext
from compbench.methods.export import artifact_size_bytes, load_export, save_hf_export
from compbench.methods.quantization.ptq_half import DTYPES, HalfPrecisionPTQ
from compbench.models.families import FAMILIES
from method_harness import tiny_batch, tiny_model



@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("family", FAMILIES)
def test_cast_export_reload(family, dtype, tmp_path):
    model = tiny_model(family).eval()
    method = HalfPrecisionPTQ(dtype=dtype)
    final = method.finalize(copy.deepcopy(model), MethodContext(family=family))
    assert {p.dtype for p in final.parameters()} == {DTYPES[dtype]}
    batch = tiny_batch(family)
    with torch.no_grad():
        ref = model(**batch).logits
        # Reference: the same weights cast by plain torch ops, run in that dtype.
        plain = copy.deepcopy(model).to(DTYPES[dtype])(**batch).logits.float()
        out = final(**batch).logits
    assert out.dtype == torch.float32
    assert torch.equal(out, plain)
    assert 0 < (out - ref).abs().max() < 0.1  # really half precision, still close

    method.export(final, tmp_path / "half", MethodContext(family=family))
    save_hf_export(model, tmp_path / "fp32", method="none")
    reloaded = load_export(tmp_path / "half")
    assert {p.dtype for p in reloaded.parameters()} == {DTYPES[dtype]}
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, out)
    ratio = artifact_size_bytes(tmp_path / "fp32") / artifact_size_bytes(tmp_path / "half")
    assert 1.8 < ratio <= 2.0  # 2 bytes instead of 4 per weight; config.json is the same size


def test_fp32_logits_switch_off_keeps_half_logits():
    model = tiny_model("decoder").eval()
    final = HalfPrecisionPTQ(fp32_logits=False).finalize(model, MethodContext(family="decoder"))
    with torch.no_grad():
        assert final(**tiny_batch("decoder")).logits.dtype == torch.bfloat16


def test_unknown_dtype_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="bfloat16, float16"):
        HalfPrecisionPTQ(dtype="int4")
