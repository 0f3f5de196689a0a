"""Model specs and tiny twins: the family of an architecture, the context length a model really
accepts, seeded construction, the meta-device skeleton, and tiny configs that follow their
tokenizer. (Bad ``name_or_path`` values are in ``tests/reliability/bad_inputs.py``.)"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from compbench.models.loader import ModelSpec, detect_family
from compbench.models.tiny import FAMILY_MODEL_TYPE, tiny_config


@pytest.mark.parametrize("model_type,family", [
    ("bert", "encoder"), ("xlm-roberta", "encoder"), ("roberta", "encoder"), ("distilbert", "encoder"),
    ("gpt2", "decoder"), ("llama", "decoder"), ("opt", "decoder"),
    ("bart", "encoder_decoder"), ("t5", "encoder_decoder"), ("mbart", "encoder_decoder"),
])
def test_family_of_well_known_architectures(model_type, family):
    assert detect_family(AutoConfig.for_model(model_type)) == family


@pytest.mark.parametrize("family,positions", [
    ("encoder", {"max_position_embeddings": 20}),
    ("decoder", {"n_positions": 16}),
    ("encoder_decoder", {"max_position_embeddings": 16}),
])
def test_context_length_is_the_longest_input_the_model_accepts(family, positions):
    """Reference: the model itself: ``context_length()`` tokens run, one more does not."""
    spec = ModelSpec(name="t", family=family, tiny={"model_type": FAMILY_MODEL_TYPE[family], **positions})
    n = spec.context_length()
    torch.manual_seed(0)
    model = AutoModel.from_config(spec.architecture_config(vocab_size=50, pad_token_id=1)).eval()
    with torch.no_grad():
        model(input_ids=torch.randint(3, 50, (1, n)))
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.randint(3, 50, (1, n + 1)))


class _LMTask:
    """The two things a spec asks of a task to build a model."""

    def auto_model_class(self):
        return AutoModelForCausalLM

    def model_kwargs(self):
        return {}


class _Tokenizer:
    pad_token_id, bos_token_id, eos_token_id = 1, 0, 2

    def __len__(self):
        return 77


def test_a_tiny_twin_is_built_under_its_seed_whatever_ran_before():
    spec = ModelSpec(name="t", family="decoder", tiny={"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2})
    first = spec.build_model(_LMTask(), _Tokenizer(), seed=3)
    torch.rand(100)  # the global RNG moves on
    again = spec.build_model(_LMTask(), _Tokenizer(), seed=3)
    other = spec.build_model(_LMTask(), _Tokenizer(), seed=4)
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters()))
    assert first.config.vocab_size == 77 and first.config.pad_token_id == 1


def test_the_skeleton_has_the_architecture_and_no_memory():
    spec = ModelSpec(name="t", family="decoder", tiny={"model_type": "gpt2", "n_layer": 3, "n_embd": 16, "n_head": 2})
    skeleton = spec.skeleton(_LMTask())
    built = spec.build_model(_LMTask(), _Tokenizer(), seed=0)
    assert all(p.is_meta for p in skeleton.parameters())
    assert [n for n, _ in skeleton.named_parameters()] == [n for n, _ in built.named_parameters()]
    assert skeleton.config.n_layer == 3


@pytest.mark.parametrize("model_type", sorted(set(FAMILY_MODEL_TYPE.values())))
def test_tiny_config_follows_its_tokenizer_and_overrides(model_type):
    config = tiny_config(model_type, _Tokenizer(), num_labels=4)
    assert config.vocab_size == 77 and config.num_labels == 4
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (1, 0, 2)
    if model_type == "bart":  # BART starts decoding from </s>
        assert config.decoder_start_token_id == 2 and config.forced_eos_token_id == 2
    assert tiny_config(model_type, _Tokenizer(), vocab_size=90).vocab_size == 90  # an explicit value wins
