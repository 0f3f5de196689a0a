"""Exported artifacts through the public API of ``compbench.methods.export``: the round trip of
each family, tied weights stored once in every method's format, the size on disk, and the
manifest's refusals (an unknown model class, a loader outside compbench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from method_harness import METHOD_CONF, run_steps, tiny_batch, tiny_model
from omegaconf import OmegaConf
from safetensors.torch import load_file

from compbench.errors import ConfigError
from compbench.methods import build_method
from compbench.methods.base import MethodContext
from compbench.methods.export import MANIFEST, artifact_size_bytes, load_export, save_hf_export, tied_groups

#: Every method config (a new method is picked up automatically); ``chain`` is not a method.
METHODS = sorted(p.stem for p in METHOD_CONF.glob("*.yaml") if p.stem != "chain")
FAMILIES = ("encoder", "decoder", "encoder_decoder")
#: Settings that fit a 2-layer model (methods that train do one step).
SMALL = {"prune_structured": {"head_sparsity": 0.5, "ffn_sparsity": 0.5}, "kd": {"student_layers": 1}}


def off_init(model: torch.nn.Module) -> torch.nn.Module:
    """Noise on every weight, so that a tensor re-initialised at load (LayerNorm to 1, bias to 0) shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def outputs(model, family: str) -> torch.Tensor:
    batch = tiny_batch(family, batch_size=2, seq_len=8)
    with torch.no_grad():
        return model(**batch).logits.float()


def compressed(method_name: str, family: str):
    """(method, finalized model) of one method on a tiny model, through the pipeline's lifecycle."""
    cfg = OmegaConf.to_container(OmegaConf.load(METHOD_CONF / f"{method_name}.yaml"), resolve=True)
    cfg.update(SMALL.get(method_name, {}))
    trains = "max_steps" in cfg
    if trains:  # one step is enough to export what training produces
        cfg["max_steps"] = 1
    method = build_method(cfg)
    teacher = off_init(tiny_model(family, seed=1)) if method.requires_teacher else None
    batches = [tiny_batch(family, batch_size=2, seq_len=8)] if trains else []
    try:
        model, _ = run_steps(method, off_init(tiny_model(family)), batches, teacher=teacher, family=family)
    except ConfigError as exc:  # e.g. bitsandbytes LLM.int8() without a CUDA GPU: refused in one sentence
        pytest.skip(f"{method_name} on {family}: {exc}")
    return method, model


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip_of_each_family(family, tmp_path):
    model = off_init(tiny_model(family))
    manifest = save_hf_export(model, tmp_path, method="none")
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk == manifest and manifest["method"] == "none" and manifest["model_class"] == type(model).__name__
    reloaded = load_export(tmp_path)
    assert type(reloaded) is type(model) and not reloaded.training
    want = model.state_dict()
    assert set(reloaded.state_dict()) == set(want)
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(outputs(reloaded, family), outputs(model, family), rtol=0, atol=0)


def test_the_size_on_disk_counts_model_files_only(tmp_path):
    save_hf_export(tiny_model("decoder"), tmp_path, method="none")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_bytes(b"x" * 12345)
    model_files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != MANIFEST and "tokenizer" not in p.parts]
    assert {p.name for p in model_files} >= {"model.safetensors", "config.json"}
    assert artifact_size_bytes(tmp_path) == sum(p.stat().st_size for p in model_files)
    assert json.loads((tmp_path / MANIFEST).read_text())["size_bytes"] == artifact_size_bytes(tmp_path)


def stored_tensors(out_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(out_dir.rglob("*.safetensors")):
        tensors.update({f"{path.name}:{k}": v for k, v in load_file(str(path)).items()})
    return tensors


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])  # GPT-2 and BART tie embeddings to the head
@pytest.mark.parametrize("method_name", METHODS)
def test_tied_weights_are_stored_once_and_stay_tied_on_reload(method_name, family, tmp_path):
    method, model = compressed(method_name, family)
    method.export(model, tmp_path, MethodContext(family=family))
    # No two stored tensors hold the same bytes (random weights never coincide; a tied tensor
    # written under each of its names does). Small tensors (scales, masks of a few heads) may.
    seen: dict[tuple, str] = {}
    for name, tensor in stored_tensors(tmp_path).items():
        if tensor.numel() < 256:
            continue
        fingerprint = (tensor.dtype, tuple(tensor.shape), tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        assert fingerprint not in seen, f"{name} stores the same tensor as {seen[fingerprint]}"
        seen[fingerprint] = name
    # The reload rebuilds the tie: the same outputs as the compressed model in memory.
    reloaded = load_export(tmp_path)
    torch.testing.assert_close(outputs(reloaded, family), outputs(model, family), rtol=1e-4, atol=1e-4)


def exported(tmp_path: Path, method_name: str) -> Path:
    method, model = compressed(method_name, "decoder")
    method.export(model, tmp_path, MethodContext(family="decoder"))
    return tmp_path


def rewrite_manifest(out_dir: Path, **changes) -> None:
    manifest = json.loads((out_dir / MANIFEST).read_text())
    (out_dir / MANIFEST).write_text(json.dumps({**manifest, **changes}))


@pytest.mark.parametrize("method_name", METHODS)
def test_an_unknown_model_class_is_refused_in_one_sentence(method_name, tmp_path):
    out = exported(tmp_path, method_name)
    model_class = json.loads((out / MANIFEST).read_text()).get("model_class")
    if model_class is None:
        pytest.skip(f"{method_name}'s export does not rebuild a transformers class by name")
    rewrite_manifest(out, model_class="NoSuchModelForAnything")
    with pytest.raises(ConfigError, match=r"unknown model class 'NoSuchModelForAnything'") as info:
        load_export(out)
    assert "\n" not in str(info.value)


def test_a_transformers_class_that_is_not_a_model_is_refused_too(tmp_path):
    out = exported(tmp_path, "none")
    rewrite_manifest(out, model_class="GPT2Config")
    with pytest.raises(ConfigError, match="GPT2Config"):
        load_export(out)


@pytest.mark.parametrize("loader", ["os:system", "compbench_evil:load", "compbench.methods.export"])
def test_a_manifest_cannot_make_us_import_code_outside_compbench(loader, tmp_path):
    out = tmp_path / "export"
    save_hf_export(tiny_model("decoder"), out, method="none")
    rewrite_manifest(out, loader=loader)
    with pytest.raises(ConfigError, match="not a compbench loader"):
        load_export(out)


def test_a_folder_without_a_manifest_is_not_an_export(tmp_path):
    tiny_model("decoder").save_pretrained(tmp_path)  # a plain transformers folder
    with pytest.raises(ConfigError, match=f"not a compbench export \\(no {MANIFEST}\\)"):
        load_export(tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_groups_name_each_shared_tensor_once(family):
    model = tiny_model(family)
    groups = tied_groups(model.state_dict())
    # Reference: which parameters the model itself shares (the same Parameter object under several names).
    by_object: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_object.setdefault(id(p), []).append(name)
    shared = sorted(sorted(names) for names in by_object.values() if len(names) > 1)
    assert sorted(sorted([kept, *others]) for kept, others in groups.items() if others) == shared
    assert family == "encoder" or shared  # GPT-2 and BART tie their embeddings to the head
    # Every state-dict tensor is named exactly once: as a kept name or as one of its aliases.
    named = [n for kept, others in groups.items() for n in (kept, *others)]
    assert sorted(named) == sorted(model.state_dict()) and len(named) == len(set(named))


def test_tied_groups_never_tie_views_of_other_shapes_or_empty_tensors():
    base = torch.arange(12.0)
    state = {"a": base, "b": base, "view": base.view(3, 4), "e1": torch.empty(0), "e2": torch.empty(0),
             "other": base.clone(), "meta": "not a tensor"}
    assert tied_groups(state) == {"a": ["b"], "view": [], "e1": [], "e2": [], "other": []}


#: Where each format's loader lived before methods/ was split into families (what older manifests name).
OLD_LOADER_MODULES = {
    "ptq_weight_only": "compbench.methods.packing",
    "ptq_dynamic_int8": "compbench.methods.ptq_dynamic_int8",
    "ptq_half": "compbench.methods.ptq_half",
    "prune_magnitude": "compbench.methods.sparse_storage",
    "prune_structured": "compbench.methods.prune_structured",
}


@pytest.mark.parametrize("method_name", sorted(OLD_LOADER_MODULES))
def test_a_manifest_written_before_the_move_still_loads(method_name, tmp_path):
    """An export written before the restructure names its loader by the old module path and keeps the
    method's parameters at the top of the manifest; it reloads to the same logits."""
    out = exported(tmp_path, method_name)
    manifest = json.loads((out / MANIFEST).read_text())
    old = {**manifest, **manifest.pop("params", {}),
           "loader": OLD_LOADER_MODULES[method_name] + ":" + manifest["loader"].partition(":")[2]}
    old.pop("params", None)
    batch = tiny_batch("decoder")
    batch.pop("labels")
    with torch.inference_mode():
        expected = load_export(out)(**batch).logits
    (out / MANIFEST).write_text(json.dumps(old))
    with torch.inference_mode():
        torch.testing.assert_close(load_export(out)(**batch).logits, expected, rtol=0, atol=0)
