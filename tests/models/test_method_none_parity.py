"""litgpt-style parity: ``method=none`` reproduces the plain transformers model, per family.

Ours: the tiny twin built by compbench's model loader from ``conf/model/tiny_*.yaml``, run
through the pipeline's own method stage and export stage for ``method=none`` (the real
functions of ``compbench.training.pipeline``), in memory and reloaded from the export.
Theirs: the plain transformers class of that architecture, built from the same config and
loaded with the same weights. Logits, loss and greedy generations must agree.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from run_harness import CONF_DIR, compose_run
from transformers import BartForConditionalGeneration, GPT2LMHeadModel, XLMRobertaForTokenClassification

from compbench.methods.export import load_export
from compbench.training.pipeline import RunEnv, apply_methods, write_export
from compbench.training.plan import build_plan

#: The plain transformers class each family's tiny twin must be, for its smoke task.
THEIRS = {
    "encoder": XLMRobertaForTokenClassification,
    "decoder": GPT2LMHeadModel,
    "encoder_decoder": BartForConditionalGeneration,
}


def moved_off_init(model: torch.nn.Module, seed: int = 1) -> None:
    """Add noise to every weight, so LayerNorm weights are not all 1 and biases not all 0: a
    reload that silently re-initialised any tensor (a key missing from the file) would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def inputs_for(family: str, task, tok, num_labels: int) -> dict[str, torch.Tensor]:
    """A padded batch of the task's own text (attention masks with zeros), with labels."""
    # Cut to different lengths, so that the shorter ones are padded.
    texts = [text[:n] for text, n in zip(task.training_texts(), (12, 30, 60, 200))]
    enc = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding to test masking"
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    g = torch.Generator().manual_seed(0)
    if family == "encoder":
        labels = torch.randint(0, num_labels, enc["input_ids"].shape, generator=g)
        batch["labels"] = labels.masked_fill(enc["attention_mask"] == 0, -100)
    elif family == "decoder":
        batch["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    else:
        target = tok(text_target=task.training_texts()[4:8], padding=True, truncation=True, max_length=12,
                     return_tensors="pt")
        batch["labels"] = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
    return batch


@pytest.mark.parametrize("family", sorted(THEIRS))
def test_method_none_reproduces_the_plain_transformers_model(family, tmp_path):
    cfg = compose_run(tmp_path, family)  # method=none is the default
    env = RunEnv(run_dir=tmp_path / "run", config_hash="parity")
    env.run_dir.mkdir()
    plan = build_plan(cfg, CONF_DIR)
    plan.task.load()
    tokenizer = plan.spec.build_tokenizer(plan.task, tmp_path / "cache")
    plan.task.setup(tokenizer)
    teacher = plan.spec.build_model(plan.task, tokenizer, int(cfg.seed))
    moved_off_init(teacher)
    teacher.eval()
    weights = {k: v.clone() for k, v in teacher.state_dict().items()}

    theirs = THEIRS[family](copy.deepcopy(teacher.config))
    theirs.load_state_dict(weights)
    theirs.eval()

    model, mctx = apply_methods(plan, env, teacher, tokenizer)
    reloaded = load_export(write_export(env.run_dir, plan.methods[-1], model, mctx, tokenizer))

    batch = inputs_for(family, plan.task, tokenizer, teacher.config.num_labels)
    with torch.no_grad():
        expected = theirs(**batch)
        for ours in (model, reloaded):
            assert type(ours) is THEIRS[family] and not ours.training
            got = ours(**batch)
            torch.testing.assert_close(got.logits, expected.logits)
            torch.testing.assert_close(got.loss, expected.loss)
    # The method worked on a copy: the teacher (the run's fp32 baseline) is untouched.
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)

    if family != "encoder":  # generation goes through the exported generation config as well
        prompt = {k: batch[k][:2] for k in ("input_ids", "attention_mask")}
        settings = dict(max_new_tokens=6, do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id)
        with torch.no_grad():
            want = theirs.generate(**prompt, **settings)
            torch.testing.assert_close(reloaded.generate(**prompt, **settings), want, rtol=0, atol=0)


def test_cli_method_none_export_reproduces_the_cached_teacher(run_compbench, tmp_path):
    """End to end by subprocess: fine-tune the GPT-2 twin a few steps with ``method=none``, then
    the exported model gives the logits of the plain transformers model loaded from the teacher
    checkpoint the run cached."""
    from transformers import AutoTokenizer

    out = tmp_path / "results"
    _, rows = run_compbench("model=tiny_gpt2", "task=smoke_lm", "debug=fast", "evaluation.robustness.enabled=false",
                            "evaluation.calibration.enabled=false", "evaluation.efficiency.enabled=false",
                            output_dir=out)
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    teacher_dir = out / "cache" / "teachers" / row["teacher_hash"]
    theirs = GPT2LMHeadModel.from_pretrained(teacher_dir).eval()
    ours = load_export(Path(row["run_dir"]) / "export")
    assert type(ours) is GPT2LMHeadModel
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    batch = tok(["the first sentence of a test", "a second one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, rtol=0, atol=0)
