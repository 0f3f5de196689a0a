"""Bit packing round trips and the packed export: exact reloads, tied weights once, size ratio."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.errors import ConfigError
from compbench.methods.export import artifact_size_bytes, load_export
from compbench.methods.quantization.packing import (
    LAYOUT_FILE,
    WEIGHTS_FILE,
    pack_codes,
    round_unquantized_to_fp16,
    save_packed_export,
    unpack_codes,
)
from compbench.methods.quantization.quantized_modules import freeze_quantized, quantize_modules
from method_harness import tiny_batch, tiny_model

FAMILIES = ["encoder", "decoder", "encoder_decoder", "decoder_tokcls"]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("numel", [1, 3, 7, 8, 13, 1001])
def test_pack_unpack_round_trip(bits, numel):
    codes = torch.randint(0, 2**bits, (numel,), generator=torch.Generator().manual_seed(numel), dtype=torch.uint8)
    codes[0] = 2**bits - 1  # the top code survives
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == -(-numel * bits // 8)  # dense: ceil(numel * bits / 8) bytes
    assert torch.equal(unpack_codes(packed, bits, numel), codes)


def test_pack_layout_is_lsb_first():
    assert pack_codes(torch.tensor([1, 2, 3, 0], dtype=torch.uint8), 2).tolist() == [0b00111001]
    assert pack_codes(torch.tensor([0xA, 0x5], dtype=torch.uint8), 4).tolist() == [0x5A]
    # 3-bit: codes 1..8 (mod 8) -> one 24-bit stream, LSB first
    codes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0], dtype=torch.uint8)
    stream = sum(int(c) << (3 * i) for i, c in enumerate(codes))
    assert pack_codes(codes, 3).tolist() == [(stream >> (8 * k)) & 0xFF for k in range(3)]


def test_pack_refuses_bad_input():
    with pytest.raises(ConfigError, match="5-bit"):
        pack_codes(torch.zeros(4, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="exceeds"):
        pack_codes(torch.tensor([4], dtype=torch.uint8), 2)


def _frozen(family, **kwargs):
    model = tiny_model(family)
    quantize_modules(model, **kwargs)
    return round_unquantized_to_fp16(freeze_quantized(model)).eval()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("a_bits", [8, None])
def test_export_reload_is_exact(tmp_path, family, a_bits):
    batch = tiny_batch("encoder" if family == "decoder_tokcls" else family)
    model = _frozen(family, w_bits=2, e_bits=3, a_bits=a_bits, quantizer="lsq", group_size=32)
    with torch.no_grad():
        model(**batch)  # activation quantizers initialise on their first batch
        expected = model(**batch).logits
    save_packed_export(model, tmp_path, "test")
    reloaded = load_export(tmp_path)
    assert type(reloaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=1e-5)


def test_tied_embedding_stored_once(tmp_path):
    model = _frozen("decoder", w_bits=4, e_bits=4)
    save_packed_export(model, tmp_path, "test")
    with safe_open(str(tmp_path / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight.qcodes" in keys
    assert not any(k.startswith("lm_head") for k in keys)
    layout = json.loads((tmp_path / LAYOUT_FILE).read_text())
    assert layout["aliases"]["transformer.wte.weight"] == ["lm_head.weight"]
    # unquantized float tensors are fp16 on disk
    with safe_open(str(tmp_path / WEIGHTS_FILE), "pt") as f:
        assert f.get_tensor("transformer.wpe.weight").dtype == torch.float16


def _ratio_2_2_8(tmp_path, config):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "fp32", safe_serialization=True)
    quantize_modules(model, w_bits=2, e_bits=2, a_bits=8, quantizer="minmax")
    round_unquantized_to_fp16(freeze_quantized(model))
    save_packed_export(model, tmp_path / "q", "test")
    fp32 = sum(p.stat().st_size for p in (tmp_path / "fp32").glob("*.safetensors"))
    return fp32 / artifact_size_bytes(tmp_path / "q")


def test_2_2_8_export_ratio_scaled_down_gpt2(tmp_path):
    # GPT-2 scaled down, keeping the vocabulary large next to the width (64x; GPT-2-small: 65x).
    config = GPT2Config(vocab_size=16384, n_embd=256, n_layer=4, n_head=4, n_positions=128)
    ratio = _ratio_2_2_8(tmp_path, config)
    assert ratio >= 14.4, ratio


@pytest.mark.slow
def test_2_2_8_export_ratio_gpt2_small(tmp_path):
    ratio = _ratio_2_2_8(tmp_path, GPT2Config())
    assert ratio >= 15.0, ratio
