"""Knowledge distillation: student construction, losses, training, export, validation."""

import copy

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext, TrainingOutputs
from compbench.methods.export import artifact_size_bytes, load_export, save_hf_export
from compbench.methods.distillation.kd import KnowledgeDistillation, select_layers
from compbench.models.families import FAMILIES
from method_harness import run_steps, tiny_batch, tiny_model

#: Four-block teachers, so that a two-block student is a real subset.
DEEP = {
    "encoder": dict(num_hidden_layers=4),
    "decoder": dict(n_layer=4),
    "encoder_decoder": dict(encoder_layers=4, decoder_layers=4),
}
#: Block-stack prefixes in the state dict of each family's tiny model.
STACK_PREFIXES = {
    "encoder": ["roberta.encoder.layer"],
    "decoder": ["transformer.h"],
    "encoder_decoder": ["model.encoder.layers", "model.decoder.layers"],
}
#: Config overrides for a narrower, randomly initialised student.
NARROW = {
    "encoder": {"hidden_size": 32, "intermediate_size": 64},
    "decoder": {"hidden_size": 32, "n_inner": 64},
    "encoder_decoder": {"hidden_size": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64},
}


def _teacher(family):
    return tiny_model(family, **DEEP[family])


def _prepare(method, family, teacher=None):
    teacher = teacher if teacher is not None else _teacher(family)
    ctx = MethodContext(family=family, teacher=teacher)
    method.check(ctx)
    return teacher, method.prepare(copy.deepcopy(teacher), ctx)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _forward(method, model, batch):
    return model(**batch, output_hidden_states=method.needs_hidden_states, output_attentions=method.needs_attentions)


def test_select_layers_follows_the_distilbert_convention():
    assert select_layers(6, 12, "uniform") == [1, 3, 5, 7, 9, 11]
    assert select_layers(4, 12, "uniform") == [2, 5, 8, 11]
    assert select_layers(3, 12, "first") == [0, 1, 2]
    assert select_layers(3, 12, "last") == [9, 10, 11]


@pytest.mark.parametrize("family", FAMILIES)
def test_student_is_smaller_and_same_class(family, tmp_path):
    teacher, student = _prepare(KnowledgeDistillation(student_layers=2), family)
    assert type(student) is type(teacher)
    assert _n_params(student) < _n_params(teacher)
    save_hf_export(teacher, tmp_path / "teacher", method="none")
    method = KnowledgeDistillation(student_layers=2)
    _, student = _prepare(method, family, teacher)
    method.export(student, tmp_path / "student", MethodContext(family=family))
    teacher_bytes = artifact_size_bytes(tmp_path / "teacher")
    student_bytes = artifact_size_bytes(tmp_path / "student")
    assert student_bytes < teacher_bytes
    weights = (tmp_path / "student" / "model.safetensors").stat().st_size
    assert weights < (tmp_path / "teacher" / "model.safetensors").stat().st_size


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "kwargs, expected_ids",
    [(dict(student_layers=2), [1, 3]), (dict(student_layers=2, layer_init="first"), [0, 1]),
     (dict(student_layers=1, layer_init="last"), [3]), (dict(layer_ids=[0, 2]), [0, 2])],
)
def test_student_blocks_copy_the_chosen_teacher_blocks(family, kwargs, expected_ids):
    teacher, student = _prepare(KnowledgeDistillation(**kwargs), family)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    copied_blocks = 0
    for key, value in student_state.items():
        prefix = next((p for p in STACK_PREFIXES[family] if key.startswith(p + ".")), None)
        if prefix is None:  # embeddings, norms, heads: copied unchanged
            assert torch.equal(value, teacher_state[key]), key
            continue
        index, rest = key[len(prefix) + 1:].split(".", 1)
        assert torch.equal(value, teacher_state[f"{prefix}.{expected_ids[int(index)]}.{rest}"]), key
        copied_blocks += 1
    assert copied_blocks > 0


def test_encoder_decoder_stacks_can_have_different_depths():
    method = KnowledgeDistillation(student_encoder_layers=3, student_decoder_layers=1)
    _, student = _prepare(method, "encoder_decoder")
    assert (student.config.encoder_layers, student.config.decoder_layers) == (3, 1)
    assert method._teacher_ids == {"encoder": [0, 1, 3], "decoder": [3]}


@pytest.mark.parametrize("family", FAMILIES)
def test_kd_loss_is_zero_when_student_matches_teacher(family):
    # The layer map pairs the student's blocks with themselves, as the "teacher" here is the student.
    method = KnowledgeDistillation(student_layers=2, alpha=1.0, hidden_weight=1.0, attention_weight=1.0,
                                   layer_map=[[0, 0], [1, 1]])
    _, student = _prepare(method, family)
    batch = tiny_batch(family)
    out = _forward(method, student, batch)
    loss, logs = method.training_loss(TrainingOutputs(batch, out, out, out.loss))
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert logs["kd_logit"] == pytest.approx(0.0, abs=1e-6)
    assert any(k.startswith("kd_hidden") for k in logs) and any(k.startswith("kd_attention") for k in logs)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_student_and_projection(family):
    method = KnowledgeDistillation(student_config=NARROW[family], student_layers=2, hidden_weight=1.0)
    teacher, student = _prepare(method, family)
    assert student.config.hidden_size == 32 and teacher.config.hidden_size == 64
    student.train()
    batch = tiny_batch(family)
    with torch.no_grad():
        teacher_out = _forward(method, teacher, batch)
    out = _forward(method, student, batch)
    loss, logs = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss))
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert any(k.startswith("kd_hidden") for k in logs)
    groups = method.param_groups(student, 1e-3, 0.01)
    grouped = {id(p) for group in groups for p in group["params"]}
    projection_params = list(method._projections.parameters())
    assert {id(p) for p in projection_params} <= grouped
    assert {id(p) for p in student.parameters()} <= grouped
    assert projection_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projection_params)
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_decreases_on_a_fixed_batch(family):
    teacher = _teacher(family)
    method = KnowledgeDistillation(student_layers=2, max_steps=10, hidden_weight=0.5, attention_weight=0.5)
    batch = tiny_batch(family)
    _, losses = run_steps(method, copy.deepcopy(teacher), [batch] * 10, teacher=teacher, family=family, lr=3e-3)
    assert losses[-1] < 0.85 * losses[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_training_loss_is_written_out_kd_plus_task_loss_over_steps(family):
    """Over 6 AdamW steps on different batches, the loss (alpha=0.5, no hidden/attention terms)
    equals 0.5 * T^2 KL(softmax(t/T) || softmax(s/T)) + 0.5 * task loss, written out here."""
    teacher = _teacher(family)
    method = KnowledgeDistillation(student_layers=2, max_steps=6, lr=1e-3, temperature=2.0, alpha=0.5)
    _, student = _prepare(method, family, teacher)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for seed in range(6):
        batch = tiny_batch(family, seed=seed)
        out = _forward(method, student, batch)
        with torch.no_grad():
            teacher_out = teacher(**batch)
        loss, _ = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss))
        p_t = torch.softmax(teacher_out.logits / 2.0, -1)
        kl = (p_t * (torch.log(p_t) - torch.log_softmax(out.logits.detach() / 2.0, -1))).sum(-1)
        expected = 0.5 * kl.mean() * 4.0 + 0.5 * out.loss.detach()  # every tiny_batch position is valid
        torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("narrow", [False, True])
def test_export_round_trip(family, narrow, tmp_path):
    kwargs = dict(student_config=NARROW[family], hidden_weight=1.0) if narrow else {}
    method = KnowledgeDistillation(student_layers=2, **kwargs)
    _, student = _prepare(method, family)
    student.eval()
    manifest = method.export(student, tmp_path, MethodContext(family=family))
    assert manifest["size_bytes"] == artifact_size_bytes(tmp_path)
    saved_keys = set(load_file(tmp_path / "model.safetensors"))
    # Nothing beyond the student's own tensors: the training-only width projections stay behind.
    assert saved_keys <= set(student.state_dict())
    if narrow:
        assert method._projections is not None
    reloaded = load_export(tmp_path)
    assert type(reloaded) is type(student)
    batch = tiny_batch(family)
    with torch.no_grad():
        diff = (reloaded(**batch).logits - student(**batch).logits).abs().max()
    assert float(diff) <= 1e-5


def test_gpt2_token_classifier_student(tmp_path):
    teacher = tiny_model("decoder_tokcls", n_layer=4)
    method = KnowledgeDistillation(student_layers=2, hidden_weight=1.0)
    _, losses = run_steps(method, copy.deepcopy(teacher), [tiny_batch("decoder_tokcls")] * 3, teacher=teacher)
    assert all(torch.isfinite(torch.tensor(losses)))
    _, student = _prepare(method, "decoder", teacher)
    method.export(student.eval(), tmp_path, MethodContext(family="decoder"))
    batch = tiny_batch("decoder_tokcls")
    with torch.no_grad():
        assert float((load_export(tmp_path)(**batch).logits - student(**batch).logits).abs().max()) <= 1e-5


def test_seq2seq_student_generates():
    _, student = _prepare(KnowledgeDistillation(student_layers=1), "encoder_decoder")
    batch = tiny_batch("encoder_decoder")
    generated = student.eval().generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == batch["input_ids"].shape[0]


def test_logit_loss_ignores_padding():
    method = KnowledgeDistillation(student_layers=2, alpha=1.0)
    teacher, student = _prepare(method, "encoder")
    batch = tiny_batch("encoder")
    batch["attention_mask"][:, -3:] = 0
    with torch.no_grad():
        teacher_out, out = teacher(**batch), student(**batch)
        loss, _ = method.training_loss(TrainingOutputs(batch, out, teacher_out, out.loss))
        noisy = copy.copy(out)
        noisy.logits = out.logits.clone()
        noisy.logits[:, -3:] += 100.0
        noisy_loss, _ = method.training_loss(TrainingOutputs(batch, noisy, teacher_out, out.loss))
    assert float(noisy_loss) == pytest.approx(float(loss), rel=1e-6)


def test_needs_outputs_follow_the_loss_weights():
    assert not KnowledgeDistillation().needs_hidden_states
    assert not KnowledgeDistillation().needs_attentions
    assert KnowledgeDistillation(hidden_weight=0.1).needs_hidden_states
    assert KnowledgeDistillation(attention_weight=0.1).needs_attentions
    assert KnowledgeDistillation.requires_teacher


def test_default_student_is_half_the_teacher():
    _, student = _prepare(KnowledgeDistillation(), "decoder")
    assert student.config.n_layer == 2


def test_yaml_builds_and_row_params():
    method = build_method(OmegaConf.load("conf/method/kd.yaml"))
    assert isinstance(method, KnowledgeDistillation) and method.training_steps == method.max_steps
    assert method.learning_rate == method.lr
    row = method.row_params()
    assert row["alpha"] == method.alpha and not any(k.startswith("_") for k in row)
    with pytest.raises(ConfigError, match="no parameter"):
        build_method({**OmegaConf.to_container(OmegaConf.load("conf/method/kd.yaml")), "temprature": 2.0})


def _one_sentence(message):
    return message.endswith(".") and ". " not in message


@pytest.mark.parametrize(
    "kwargs",
    [dict(alpha=1.5), dict(alpha=-0.1), dict(temperature=0.0), dict(student_layers=0), dict(layer_init="middle"),
     dict(hidden_weight=-1.0), dict(layer_ids=[1, 1]), dict(layer_ids=[0, 1], student_layers=3), dict(max_steps=0),
     dict(lr=0.0), dict(layer_map=[[0]])],
)
def test_invalid_parameters_refused_at_construction(kwargs):
    with pytest.raises(ConfigError) as err:
        KnowledgeDistillation(**kwargs)
    assert _one_sentence(str(err.value)), str(err.value)


@pytest.mark.parametrize(
    "family, kwargs, match",
    [("decoder", dict(student_layers=4), "< the teacher"), ("encoder", dict(student_layers=5), "< the teacher"),
     ("encoder_decoder", dict(student_decoder_layers=4), "decoder"), ("decoder", dict(layer_ids=[0, 4]), "layer_ids"),
     ("encoder", dict(student_encoder_layers=1), "encoder-decoder"),
     ("decoder", dict(student_config={"n_head": 4}, attention_weight=1.0), "head counts"),
     ("decoder", dict(student_config={"hiden_size": 4}), "spelling"),
     ("encoder", dict(student_layers=2, layer_map=[[2, 0]]), "out of range")],
)
def test_invalid_against_teacher_refused_in_check(family, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        KnowledgeDistillation(**kwargs).check(MethodContext(family=family, teacher=_teacher(family)))
    assert _one_sentence(str(err.value)), str(err.value)


def test_check_requires_a_teacher():
    with pytest.raises(ConfigError, match="teacher"):
        KnowledgeDistillation().check(MethodContext(family="decoder", teacher=None, teacher_available=False))


def test_early_check_without_teacher_defers_depth_checks():
    # Before fine-tuning the teacher does not exist yet; the depth is checked again with it.
    method = KnowledgeDistillation(student_layers=9)
    method.check(MethodContext(family="decoder", teacher=None, teacher_available=True))
    with pytest.raises(ConfigError, match="< the teacher"):
        method.check(MethodContext(family="decoder", teacher=_teacher("decoder")))
