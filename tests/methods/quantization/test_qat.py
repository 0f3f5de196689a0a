"""QAT: losses against written-out references, distillation wiring, param groups, frozen levels, exports."""


import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext, method_training_step, teacher_inputs
from compbench.methods.export import load_export
from compbench.methods.quantization.qat import QAT
from compbench.methods.quantization.quantized_modules import QuantEmbedding, QuantLinear
from compbench.methods.quantization.quantizers import Quantizer
from compbench.models.families import FAMILIES
from method_harness import run_steps, tiny_batch, tiny_model
from method_harness import METHOD_CONF as CONF


def _train(family, method, teacher=None, steps=8, lr=1e-2):
    torch.manual_seed(0)
    batches = [tiny_batch(family, seed=0)] * steps
    return run_steps(method, tiny_model(family, seed=0), batches, teacher=teacher, lr=lr, family=family)


def _trajectory_against_reference(family, method, reference_loss, teacher=None, steps=8, lr=1e-2):
    """Train ``steps`` AdamW steps on one batch; at every step compare the method's loss with
    ``reference_loss(batch, student_logits, teacher_logits)`` written out in plain torch ops on
    the same outputs. Returns the losses. (Unlike a trajectory recorded on one day, which drifts
    with dependency releases, these hold for any correct implementation.)"""
    torch.manual_seed(0)
    batch = tiny_batch(family, seed=0)
    ctx = MethodContext(family=family, teacher=teacher)
    method.check(ctx)
    model = method.prepare(tiny_model(family, seed=0), ctx)
    model.train()
    opt = torch.optim.AdamW(method.param_groups(model, lr, 0.0), lr=lr)
    losses = []
    for step in range(steps):
        loss, _, student = method_training_step(method, model, teacher, batch)
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(**batch).logits
        reference = reference_loss(batch, student.logits.detach(), teacher_logits)
        torch.testing.assert_close(loss.detach(), reference, rtol=1e-5, atol=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_train_step(model, step + 1, steps)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_inputs_drop_labels_but_not_the_outputs(family):
    """The teacher forward without labels (no loss computed) gives the same logits and hidden
    states as with them; an encoder-decoder gets the decoder inputs its forward derives."""
    teacher = tiny_model(family, seed=1)
    batch = tiny_batch(family, seed=2)
    if family == "encoder_decoder":
        batch["labels"][0, -2:] = -100  # padded targets: the shift must map them to pad
    inputs = teacher_inputs(teacher, batch)
    assert "labels" not in inputs and "labels" in batch
    with torch.no_grad():
        with_labels = teacher(**batch, output_hidden_states=True)
        without = teacher(**inputs, output_hidden_states=True)
    assert without.loss is None
    torch.testing.assert_close(without.logits, with_labels.logits, rtol=0, atol=0)
    states = "decoder_hidden_states" if family == "encoder_decoder" else "hidden_states"
    for got, expected in zip(getattr(without, states), getattr(with_labels, states)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert teacher_inputs(teacher, {"input_ids": batch["input_ids"]}) == {"input_ids": batch["input_ids"]}


def _next_token_cross_entropy(batch, logits, _teacher_logits):
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), batch["labels"][:, 1:].reshape(-1))


def _written_out_kd(temperature):
    def kd(_batch, logits, teacher_logits):
        # Hinton et al. (2015): T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes and
        # averaged over the (all valid) positions.
        p_t = torch.softmax(teacher_logits / temperature, -1)
        kl = (p_t * (torch.log(p_t) - torch.log_softmax(logits / temperature, -1))).sum(-1)
        return kl.mean() * temperature**2

    return kd


def test_task_loss_decoder_lsq_is_next_token_cross_entropy_and_decreases():
    method = QAT(w_bits=4, e_bits=4, a_bits=8, quantizer="lsq", max_steps=8, lr=1e-2, distill=False)
    losses = _trajectory_against_reference("decoder", method, _next_token_cross_entropy)
    assert all(b < a for a, b in zip(losses[:4], losses[1:5]))  # the first steps go down monotonically
    assert losses[-1] < 0.6 * losses[0]


def test_distillation_loss_seq2seq_lsq_is_written_out_kd_and_decreases():
    teacher = tiny_model("encoder_decoder", seed=1)
    method = QAT(w_bits=2, e_bits=2, a_bits=8, quantizer="lsq", max_steps=8, lr=1e-2, kd_temperature=2.0)
    losses = _trajectory_against_reference("encoder_decoder", method, _written_out_kd(2.0), teacher=teacher)
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quantizer", ["minmax", "pact", "lsq"])
def test_kd_loss_decreases_for_every_family(family, quantizer):
    teacher = tiny_model(family, seed=1)
    method = QAT(w_bits=4, e_bits=4, a_bits=8, quantizer=quantizer, max_steps=6, lr=3e-3, kd_temperature=2.0)
    _, losses = _train(family, method, teacher=teacher, steps=6, lr=3e-3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]  # the quantized student moves towards the teacher


def test_training_loss_mixes_kd_and_task():
    family = "encoder"
    teacher = tiny_model(family, seed=1)
    batch = tiny_batch(family)
    student_model = tiny_model(family)
    method = QAT(kd_alpha=0.25, kd_temperature=2.0)
    from compbench.methods.base import TrainingOutputs
    from compbench.methods.distillation.losses import logit_kd_loss

    student = student_model(**batch)
    with torch.no_grad():
        teacher_out = teacher(**batch)
    loss, logs = method.training_loss(TrainingOutputs(batch, student, teacher_out, student.loss))
    kd = logit_kd_loss(student.logits, teacher_out.logits, 2.0, mask=batch["attention_mask"].bool())
    torch.testing.assert_close(loss, 0.25 * kd + 0.75 * student.loss)
    assert set(logs) == {"loss/kd", "loss/task"}


def test_param_groups_separate_quantizer_parameters():
    method = QAT(quantizer="pact", quantizer_lr=1e-3, lr=1e-4)
    model = method.prepare(tiny_model("decoder"), MethodContext(family="decoder"))
    decay, no_decay, quantizers = method.param_groups(model, 1e-4, 0.01)
    assert [g["lr"] for g in (decay, no_decay, quantizers)] == [1e-4, 1e-4, 1e-3]
    assert [g["weight_decay"] for g in (decay, no_decay, quantizers)] == [0.01, 0.0, 0.0]
    quantizer_ids = {id(p) for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()}
    assert {id(p) for p in quantizers["params"]} == quantizer_ids
    weights = decay["params"] + no_decay["params"]
    assert not quantizer_ids & {id(p) for p in weights}
    # The one weight-decay rule: matrices decay, biases and norm weights do not.
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    n_all = len({id(p) for p in model.parameters()})
    assert len(weights) + len(quantizers["params"]) == n_all


@pytest.mark.parametrize("w_bits,e_bits", [(2, 2), (4, 4), (8, 8)])
def test_finalized_weights_have_at_most_two_to_the_bits_levels(w_bits, e_bits):
    method = QAT(w_bits=w_bits, e_bits=e_bits, a_bits=8, distill=False, max_steps=2)
    final, _ = _train("decoder", method, steps=2)
    fc = final.transformer.h[0].mlp.c_fc
    assert isinstance(fc, QuantLinear) and fc.weight_quantizer is None and fc.act_quantizer is not None
    for row in fc.weight.detach():
        assert len(torch.unique(row)) <= 2**w_bits
    wte = final.transformer.wte.weight.detach()
    assert type(final.transformer.wte) is torch.nn.Embedding
    assert max(len(torch.unique(row)) for row in wte) <= 2**e_bits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("a_bits", [8, 32])
def test_export_reload_matches(tmp_path, family, a_bits):
    teacher = tiny_model(family, seed=1)
    method = QAT(w_bits=2, e_bits=4, a_bits=a_bits, quantizer="pact", max_steps=3, lr=1e-2, group_size=32)
    final, _ = _train(family, method, teacher=teacher, steps=3)
    if a_bits == 32:
        assert not any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in final.modules())
    manifest = method.export(final, tmp_path, None)
    assert manifest["params"]["a_bits"] == a_bits and manifest["params"]["quantizer"] == "pact"
    reloaded = load_export(tmp_path)
    batch = tiny_batch(family, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, final(**batch).logits, rtol=0, atol=1e-5)


def test_teacher_required_only_with_distillation():
    ctx = MethodContext(family="decoder", teacher=None, teacher_available=False)
    with pytest.raises(ConfigError, match="teacher"):
        QAT().check(ctx)
    QAT(distill=False).check(ctx)


@pytest.mark.parametrize(
    "bad",
    [dict(w_bits=1), dict(e_bits=6), dict(a_bits=2), dict(quantizer="nope"), dict(act_quantizer="nope"),
     dict(kd_alpha=1.5), dict(kd_temperature=0), dict(max_steps=0), dict(lr=0), dict(group_size=-4)],
)
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ConfigError):
        QAT(**bad)


def test_yaml_builds():
    method = build_method(OmegaConf.load(CONF / "qat.yaml"))
    assert isinstance(method, QAT)
    assert method.training_steps == 1000 and method.learning_rate == 1e-4


def test_missing_teacher_output_is_an_error_not_a_silent_fallback():
    from compbench.methods.base import TrainingOutputs

    batch = tiny_batch("encoder")
    student = tiny_model("encoder")(**batch)
    with pytest.raises(ConfigError, match="distill=false"):
        QAT().training_loss(TrainingOutputs(batch, student, None, student.loss))


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_generate_works_on_prepared_and_finalized_models(family):
    method = QAT(w_bits=4, e_bits=4, a_bits=8, distill=False, max_steps=1)
    prompt = tiny_batch(family)["input_ids"][:1, :4]
    model = method.prepare(tiny_model(family), MethodContext(family=family))
    with torch.no_grad():
        assert model.generate(prompt, max_new_tokens=3, do_sample=False).shape[0] == 1
    final = method.finalize(model, MethodContext(family=family))
    with torch.no_grad():
        assert final.generate(prompt, max_new_tokens=3, do_sample=False).shape[0] == 1
