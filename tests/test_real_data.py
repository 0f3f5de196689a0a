"""A real-data run on MasakhaNER Hausa (``../shared/data``): fine-tuning clearly beats no training."""

from __future__ import annotations

import pytest

ARGS = ("task=masakhaner", "task.lang=hau", "task.max_length=128", "evaluation.robustness.enabled=false",
        "evaluation.efficiency.repeats=2", "evaluation.calibration.temperature_scaling=false")


def test_masakhaner_hau_tiny_model_learns(shared_data, run_compbench, tmp_path):
    data_dir = shared_data / "masakhaner" / "hau"
    if not data_dir.is_dir():
        pytest.skip(f"{data_dir} is absent")
    _, untrained = run_compbench(*ARGS, f"task.data_dir={data_dir}", "finetune.enabled=false",
                                 output_dir=tmp_path / "untrained")
    yor = shared_data / "masakhaner" / "yor"
    _, trained = run_compbench(*ARGS, f"task.data_dir={data_dir}", "finetune.max_steps=250",
                               "finetune.val_every_n_steps=250", "evaluation.robustness.max_examples=100",
                               f"+evaluation.ood.yor={{lang: yor, data_dir: '{yor}'}}",
                               output_dir=tmp_path / "trained")
    f1_untrained, f1_trained = untrained[0]["quality.f1"], trained[0]["quality.f1"]
    print(f"MasakhaNER hau, tiny_afriberta: untrained F1 {f1_untrained:.3f}, after 250 steps {f1_trained:.3f}")
    assert trained[0]["status"] == "ok" and trained[0]["lang"] == "hau"
    assert f1_untrained < 0.1
    assert f1_trained > f1_untrained + 0.2
    # Zero-shot Yoruba: evaluated with the Hausa model's labels, finite, and a one-language mean.
    assert 0 <= trained[0]["robust.ood.yor.f1"] <= 1
    assert trained[0]["robust.ood.mean_f1"] == trained[0]["robust.ood.yor.f1"]
