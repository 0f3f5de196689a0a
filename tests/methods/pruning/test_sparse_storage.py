"""Sparse safetensors storage: exact round trip, dense tensors untouched, real size savings."""

import torch
from safetensors.torch import save_file

from compbench.methods.pruning.sparse_storage import load_sparse_safetensors, save_sparse_safetensors, sparse_bytes


def _sparse(shape, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    t[torch.rand(shape, generator=g) < sparsity] = 0.0
    return t


def test_round_trip_is_exact_and_dense_tensors_stay_dense(tmp_path):
    tensors = {"sparse": _sparse((64, 48), 0.8), "dense": torch.randn(48), "ints": torch.arange(10), "odd": _sparse((3, 7), 0.9)}
    counts = save_sparse_safetensors(tensors, tmp_path / "w.safetensors")
    assert counts == {"sparse_tensors": 2, "dense_tensors": 2}
    back = load_sparse_safetensors(tmp_path / "w.safetensors")
    assert set(back) == set(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)


def test_80_percent_sparse_file_is_about_4x_smaller_than_dense(tmp_path):
    weight = _sparse((512, 512), 0.8)
    save_file({"w": weight}, str(tmp_path / "dense.safetensors"))
    save_sparse_safetensors({"w": weight}, tmp_path / "sparse.safetensors")
    save_sparse_safetensors({"w": weight}, tmp_path / "half.safetensors", value_dtype=torch.float16)
    dense = (tmp_path / "dense.safetensors").stat().st_size
    ratio = dense / (tmp_path / "sparse.safetensors").stat().st_size
    # mask 1/32 + ~20 % values = 0.23 of dense -> ~4.3x (small header overhead)
    assert 4.0 < ratio < 4.6, ratio
    assert dense / (tmp_path / "half.safetensors").stat().st_size > 7.0
    half = load_sparse_safetensors(tmp_path / "half.safetensors")["w"]
    assert torch.equal(half != 0, weight != 0)
    assert torch.allclose(half, weight, atol=1e-2, rtol=1e-3)


def test_sparse_bytes_formula():
    assert sparse_bytes(16, 3, torch.float32) == 2 + 12
    assert sparse_bytes(17, 0, torch.float16) == 3
