"""Tiny, randomly initialised twins of each model family, built from config (no hub).

They use the same transformers classes as the real models (XLM-R for AfriBERTa, GPT-2, BART),
so every code path a real model takes is exercised, at a size that trains in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

#: model_type of each family's tiny twin (the architecture class of the real model).
FAMILY_MODEL_TYPE = {"encoder": "xlm-roberta", "decoder": "gpt2", "encoder_decoder": "bart"}

#: Defaults per model_type; a model YAML's ``tiny:`` block overrides any of them.
TINY_DEFAULTS: dict[str, dict[str, Any]] = {
    "xlm-roberta": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=514, type_vocab_size=1,
    ),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=2, n_positions=512),
    "bart": dict(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=512,
    ),
}


def tiny_config(model_type: str, tokenizer: Any = None, **overrides: Any) -> PretrainedConfig:
    """Build a tiny config of ``model_type``; vocabulary and special ids follow ``tokenizer``.

    Args:
        model_type: ``xlm-roberta``, ``gpt2`` or ``bart`` (or any transformers model type,
            given enough ``overrides``).
        tokenizer: a tokenizer whose vocabulary size and special tokens the model must match.
        **overrides: config attributes (e.g. ``num_hidden_layers=4``).
    """
    kwargs = dict(TINY_DEFAULTS.get(model_type, {}))
    kwargs.update(overrides)
    if tokenizer is not None:
        kwargs.setdefault("vocab_size", len(tokenizer))
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(tokenizer, attr, None)
            if value is not None:
                kwargs.setdefault(attr, value)
        if model_type == "bart":
            kwargs.setdefault("decoder_start_token_id", tokenizer.eos_token_id)
            kwargs.setdefault("forced_eos_token_id", tokenizer.eos_token_id)
    return AutoConfig.for_model(model_type, **kwargs)
