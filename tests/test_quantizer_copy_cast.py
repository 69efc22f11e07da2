"""What users do to modules: copy, pickle, save and average them after a forward
pass, and cast them to another dtype. Quantizers must survive all of it, and a
cast must not change what a parameter-free quantizer computes."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from fsqkit import FSQ, ResidualFSQ, ResidualVQ, VectorQuantizer
from fsqkit.quantizers import GroupedResidualFSQ

QUANTIZERS = {
    "fsq": lambda: FSQ([8, 5, 5, 5]),
    "fsq_projected_channel_first": lambda: FSQ([8, 5, 5, 5], dim=12, channel_first=True),
    "residual_fsq": lambda: ResidualFSQ([8, 5, 5, 5], num_stages=3, dim=12),
    "grouped_residual_fsq": lambda: GroupedResidualFSQ([5, 5, 3], num_stages=2, groups=2),
    "vq": lambda: VectorQuantizer(12, 32, kmeans_init=True),
    "residual_vq": lambda: ResidualVQ(12, 32, num_stages=2, codebook_dim=4),
}


def _input(q: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(3)
    if getattr(q, "channel_first", False):
        return torch.randn(2, q.dim, 5, 7)
    return torch.randn(64, q.dim) * 2


def _same(a: torch.nn.Module, b: torch.nn.Module, z: torch.Tensor) -> None:
    oa, ob = a.eval()(z), b.eval()(z)
    assert torch.equal(oa.indices, ob.indices)
    assert torch.equal(oa.quantized, ob.quantized)


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_copy_pickle_save_and_average_after_a_forward(name: str) -> None:
    q = QUANTIZERS[name]()
    z = _input(q)
    q(z)  # a training-mode CPU forward (FSQ: through the fused kernel where it builds)
    q(z.requires_grad_()).quantized.sum().backward()
    z = z.detach()
    _same(q, copy.deepcopy(q), z)
    _same(q, pickle.loads(pickle.dumps(q)), z)
    buffer = io.BytesIO()
    torch.save(q, buffer)
    buffer.seek(0)
    _same(q, torch.load(buffer, weights_only=False), z)
    averaged = AveragedModel(q)
    averaged.update_parameters(q)
    _same(q, averaged.module, z)


@pytest.mark.parametrize("cast", ["bfloat16", "half", "double", "to_bfloat16"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_casting_fsq_does_not_change_its_indices(cast: str, symmetric: bool) -> None:
    reference = FSQ([8, 5, 5, 5], symmetric=symmetric)
    dtype = {"bfloat16": torch.bfloat16, "half": torch.float16, "double": torch.float64}.get(
        cast, torch.bfloat16
    )
    cast_module = copy.deepcopy(reference)
    cast_module = cast_module.to(dtype) if cast.startswith("to_") else getattr(cast_module, cast)()
    z = (torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    low, high = cast_module(z), reference(z.float())  # the same values either way
    assert torch.equal(low.indices, high.indices)
    assert low.quantized.dtype == dtype
    assert torch.equal(cast_module.indices_to_codes(low.indices), high.quantized)
    # .float() afterwards: the module computes exactly what it did before the cast
    restored = cast_module.float()
    w = torch.randn(4096, 4) * 3
    assert torch.equal(restored(w).quantized, reference(w).quantized)
    assert torch.equal(restored(w).indices, reference(w).indices)


@pytest.mark.parametrize("stage_scale", ["L-1", "L"])
def test_casting_residual_fsq_does_not_change_its_indices(stage_scale: str) -> None:
    reference = ResidualFSQ([8, 5, 5, 3], num_stages=4, stage_scale=stage_scale).eval()
    z = (torch.randn(50_000, 4, generator=torch.Generator().manual_seed(1)) * 2).bfloat16()
    cast_module = copy.deepcopy(reference).bfloat16()
    assert torch.equal(cast_module(z).indices, reference(z.float()).indices)
    restored = cast_module.float()
    w = torch.randn(4096, 4)
    assert torch.equal(restored(w).quantized, reference(w).quantized)


def test_fsq_has_no_castable_state() -> None:
    """Nothing dtype-dependent is registered: the constants are Python numbers."""
    q = FSQ([8, 5, 5, 5])
    assert list(q.buffers()) == [] and list(q.parameters()) == []
    assert q.state_dict() == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_constants_follow_the_input_device() -> None:
    q = FSQ([8, 5, 5, 5], dim=8).cuda()
    z = torch.randn(16, 8, device="cuda")
    out = q(z)
    assert out.indices.device.type == "cuda"
    assert torch.equal(q.indices_to_codes(out.indices), q.eval()(z).quantized)
    residual = ResidualFSQ([8, 5, 5, 5], num_stages=2).cuda().eval()
    idx = residual(z[:, :4]).indices
    assert residual.indices_to_codes(idx).device.type == "cuda"
