"""The deployment table of docs/deployment.md, one test per cell: every quantizer
(rows) through eager mode, torch.compile (default and fullgraph), torch.export,
ONNX (dynamo and classic exporters, run in ONNX Runtime), TorchScript tracing
and bf16/fp16 autocast and module casts. DDP is test_deployment_ddp.py; copies,
pickling and EMA of weights are test_quantizer_copy_cast.py.

Each model quantizes a channel-first ``(B, C, H, W)`` input and decodes the
indices again: ``(quantized, indices, decoded)``."""

from __future__ import annotations

import importlib.util
import logging
import warnings

import pytest
import torch
from torch import nn

from fsqkit import FSQ, ResidualFSQ, ResidualVQ, VectorQuantizer
from fsqkit.quantizers import GroupedResidualFSQ

# Rows of the table. Projections (dim 8 > the code width) are on everywhere.
QUANTIZERS = {
    "FSQ": lambda: FSQ([8, 5, 5, 5], dim=8, channel_first=True),
    "VQ": lambda: VectorQuantizer(8, 64, codebook_dim=4, channel_first=True),
    "ResidualFSQ": lambda: ResidualFSQ([8, 5, 5, 5], num_stages=3, dim=8, channel_first=True),
    "ResidualVQ": lambda: ResidualVQ(8, 64, num_stages=2, codebook_dim=4, channel_first=True),
    "GroupedResidualFSQ": lambda: GroupedResidualFSQ(
        [5, 5, 3], num_stages=2, groups=2, dim=8, channel_first=True
    ),
}
NAMES = list(QUANTIZERS)
has_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_onnx = pytest.mark.skipif(not has_onnx, reason="onnx/onnxruntime/onnxscript not installed")


class Tokenize(nn.Module):
    """Quantize, then decode the indices: what a tokenizer's export needs."""

    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.quantizer(z)
        return out.quantized, out.indices, self.quantizer.indices_to_codes(out.indices)


def _model(name: str) -> Tokenize:
    torch.manual_seed(0)
    model = Tokenize(QUANTIZERS[name]())
    model.quantizer(_input())  # one training call: VQ codebooks move off their init
    return model.eval()


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(seed)) * 2


def _assert_same(got, expected, exact: bool = True) -> None:
    quantized, indices, decoded = got
    assert torch.equal(indices, expected[1])
    for a, b in ((quantized, expected[0]), (decoded, expected[2])):
        if exact:
            assert torch.equal(a, b)
        else:  # the projections' matmuls may round differently (1 ulp)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_eager(name: str) -> None:
    model = _model(name)
    quantized, indices, decoded = model(_input())
    assert torch.equal(decoded, quantized) and indices.dtype == torch.int32
    model.train()
    z = _input().requires_grad_()
    out = model.quantizer(z)
    (out.quantized.square().sum() + out.aux_loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_compile_default(name: str) -> None:
    """Inductor: same indices; values to float tolerance (fused kernels may reorder
    float operations); a training step compiles too."""
    model = _model(name)
    torch._dynamo.reset()
    _assert_same(torch.compile(model)(_input()), model(_input()), exact=False)
    model.train()
    step = torch.compile(lambda z: model.quantizer(z).quantized.square().sum())
    z = _input().requires_grad_()
    step(z).backward()
    assert z.grad is not None


def _train_step(quantizer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    out = quantizer(z)
    return out.quantized.square().mean() + out.aux_loss


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph(name: str) -> None:
    """One graph, no break: inference (bit-identical with aot_eager) and a training
    step, VQ's EMA codebook update included."""
    model = _model(name)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    _assert_same(compiled(_input()), model(_input()))
    eager_q, compiled_q = model.quantizer, _model(name).quantizer
    eager_q.train()
    compiled_q.train()
    step = torch.compile(_train_step, fullgraph=True, backend="aot_eager")
    for seed in (2, 3):
        z1, z2 = _input(seed).requires_grad_(), _input(seed).requires_grad_()
        loss_eager, loss_compiled = _train_step(eager_q, z1), step(compiled_q, z2)
        torch.testing.assert_close(loss_compiled, loss_eager)
        loss_eager.backward()
        loss_compiled.backward()
        torch.testing.assert_close(z2.grad, z1.grad)
    for a, b in zip(eager_q.buffers(), compiled_q.buffers()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_export(name: str) -> None:
    model = _model(name)
    exported = torch.export.export(model, (_input(),))
    for seed in (1, 4):
        _assert_same(exported.module()(_input(seed)), model(_input(seed)))


def _onnx_run(path, z: torch.Tensor) -> list[torch.Tensor]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: z.numpy()})
    return [torch.from_numpy(o) for o in outputs]


def _export_onnx(model: nn.Module, path, dynamo: bool, example: torch.Tensor) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo)


@needs_onnx
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "classic"])
@pytest.mark.parametrize("name", NAMES)
def test_onnx(name: str, dynamo: bool, tmp_path) -> None:
    """Exported and run in ONNX Runtime: indices equal eager's; values too, up to
    the projections' matmuls. The classic exporter's graph has no negative
    Transpose permutation (ONNX Runtime rejects them)."""
    import onnx

    model = _model(name)
    path = tmp_path / "model.onnx"
    _export_onnx(model, path, dynamo, _input())
    for seed in (1, 5):
        z = _input(seed)
        quantized, indices, decoded = _onnx_run(path, z)
        _assert_same((quantized, indices.to(torch.int32), decoded), model(z), exact=False)
    for node in onnx.load(str(path)).graph.node:
        for attribute in node.attribute:
            if node.op_type == "Transpose" and attribute.name == "perm":
                assert min(attribute.ints) >= 0, list(attribute.ints)


@needs_onnx
def test_onnx_without_projections_is_exact(tmp_path) -> None:
    """Without projections no matmul is involved: ONNX Runtime gives FSQ's codes
    bit for bit (its tanh agrees with torch's on these inputs)."""
    model = Tokenize(FSQ([8, 5, 5, 5], channel_first=True)).eval()
    z = torch.randn(4, 4, 32, 32, generator=torch.Generator().manual_seed(7)) * 2
    for dynamo in (True, False):
        _export_onnx(model, tmp_path / "fsq.onnx", dynamo, z)
        quantized, indices, decoded = _onnx_run(tmp_path / "fsq.onnx", z)
        _assert_same((quantized, indices.to(torch.int32), decoded), model(z))


@pytest.mark.parametrize("name", NAMES)
def test_jit_trace(name: str) -> None:
    """Tracing records the reference operations (never a fused kernel call)."""
    model = _model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (_input(),))
    for seed in (1, 6):
        _assert_same(traced(_input(seed)), model(_input(seed)))
    if name == "FSQ":
        assert "aten::tanh" in str(traced.inlined_graph)


# Without projections, so that autocast leaves the quantizer's input as it is.
PLAIN = {
    "FSQ": lambda: FSQ([8, 5, 5, 5]),
    "VQ": lambda: VectorQuantizer(4, 256),
    "ResidualFSQ": lambda: ResidualFSQ([8, 5, 5, 5], num_stages=3),
    "ResidualVQ": lambda: ResidualVQ(4, 256, num_stages=2),
    "GroupedResidualFSQ": lambda: GroupedResidualFSQ([8, 5, 5, 5], num_stages=2, groups=2),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_autocast(name: str, dtype: torch.dtype) -> None:
    """Under autocast, quantization (and VQ's distance search) stays float32: the
    indices of a low-precision input are those of the same values in float32."""
    q = PLAIN[name]().eval()
    width = 8 if name == "GroupedResidualFSQ" else 4
    z = (torch.randn(4096, width, generator=torch.Generator().manual_seed(2)) * 2).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        low = q(z)
    high = q(z.float())
    assert torch.equal(low.indices, high.indices)
    assert low.quantized.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_module_casts(name: str) -> None:
    """``.bfloat16()``: FSQ-based quantizers compute exactly what the float32 module
    computes on the same values (their constants are not castable); a VQ codebook
    is data and is rounded to bfloat16, the search stays float32."""
    q32 = PLAIN[name]().eval()
    width = 8 if name == "GroupedResidualFSQ" else 4
    z = (torch.randn(4096, width, generator=torch.Generator().manual_seed(3)) * 2).bfloat16()
    q16 = _copy(q32).bfloat16()
    if name in ("VQ", "ResidualVQ"):
        with torch.no_grad():
            for b in q32.buffers():
                if b.is_floating_point():
                    b.copy_(b.bfloat16().float())
    assert torch.equal(q16(z).indices, q32(z.float()).indices)


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
