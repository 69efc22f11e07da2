"""fsqkit.compat.vector_quantize_pytorch against vector-quantize-pytorch 1.32 itself:
its README examples with only the import line changed give the same outputs, as
do training steps (gradients, EMA codebooks), checkpoints saved by it, its
layouts and quantize dropout. Unsupported arguments raise clear errors."""

from __future__ import annotations

import textwrap

import pytest
import torch

import fsqkit.compat.vector_quantize_pytorch as compat
from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends import cpu
from fsqkit.quantizers._fsq_backends.edges import compute_bin_edges

vqp = pytest.importorskip("vector_quantize_pytorch")

# vector-quantize-pytorch's README examples (1.32), verbatim but for the import and
# the last line, which collects what the example computed.
README = {
    "fsq": """
        quantizer = FSQ(
            levels = [8, 5, 5, 5]
        )
        x = torch.randn(1, 1024, 4) # 4 since there are 4 levels
        xhat, indices = quantizer(x)
        assert torch.all(xhat == quantizer.indices_to_codes(indices))
        result = (xhat, indices)
    """,
    "residual_fsq": """
        residual_fsq = ResidualFSQ(
            dim = 256,
            levels = [8, 5, 5, 3],
            num_quantizers = 8
        )
        x = torch.randn(1, 1024, 256)
        residual_fsq.eval()
        quantized, indices = residual_fsq(x)
        quantized_out = residual_fsq.get_output_from_indices(indices)
        assert torch.all(quantized == quantized_out)
        result = (quantized, indices, quantized_out)
    """,
    "vector_quantize": """
        vq = VectorQuantize(
            dim = 256,
            codebook_size = 512,     # codebook size
            decay = 0.8,             # the exponential moving average decay
            commitment_weight = 1.   # the weight on the commitment loss
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = vq(x) # (1, 1024, 256), (1, 1024), (1)
        result = (quantized, indices, commit_loss, *vq.state_dict().values())
    """,
    "residual_vq": """
        residual_vq = ResidualVQ(
            dim = 256,
            num_quantizers = 8,      # specify number of quantizers
            codebook_size = 1024,    # codebook size
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = residual_vq(x)
        quantized, indices, commit_loss, all_codes = residual_vq(x, return_all_codes = True)
        result = (quantized, indices, commit_loss, all_codes, *residual_vq.state_dict().values())
    """,
    "kmeans_init": """
        residual_vq = ResidualVQ(
            dim = 256,
            codebook_size = 256,
            num_quantizers = 4,
            kmeans_init = True,   # set to True
            kmeans_iters = 10     # number of kmeans iterations
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = residual_vq(x)
        result = (quantized, indices, commit_loss, *residual_vq.state_dict().values())
    """,
    "codebook_dim": """
        vq = VectorQuantize(
            dim = 256,
            codebook_size = 256,
            codebook_dim = 16      # paper proposes setting this to 32 or as low as 8
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = vq(x)
        result = (quantized, indices, commit_loss, *vq.state_dict().values())
    """,
    "cosine": """
        vq = VectorQuantize(
            dim = 256,
            codebook_size = 256,
            use_cosine_sim = True   # set this to True
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = vq(x)
        result = (quantized, indices, commit_loss, *vq.state_dict().values())
    """,
    "dead_codes": """
        vq = VectorQuantize(
            dim = 256,
            codebook_size = 512,
            threshold_ema_dead_code = 2  # replace codes with an EMA cluster size below 2
        )
        x = torch.randn(1, 1024, 256)
        quantized, indices, commit_loss = vq(x)
        result = (quantized, indices, commit_loss, *vq.state_dict().values())
    """,
}
# README examples that use what the compatibility layer does not implement.
README_UNSUPPORTED = {
    "shared_codebook": "ResidualVQ(dim=256, num_quantizers=8, codebook_size=1024, "
    "stochastic_sample_codes=True, sample_codebook_temp=0.1, shared_codebook=True)",
    "diveq": "ResidualVQ(dim=256, num_quantizers=8, codebook_size=1024, diveq=True)",
    "orthogonal": "VectorQuantize(dim=256, codebook_size=256, accept_image_fmap=True, "
    "orthogonal_reg_weight=10, orthogonal_reg_max_codes=128)",
    "heads": "VectorQuantize(dim=256, codebook_dim=32, heads=8, "
    "separate_codebook_per_head=True, codebook_size=8196, accept_image_fmap=True)",
    "directional_reparam": "VectorQuantize(dim=256, codebook_size=256, "
    "directional_reparam=True, directional_reparam_variance=5e-3)",
}


def _run(code: str, module: object) -> tuple:
    torch.manual_seed(0)
    namespace = {"torch": torch, **{name: getattr(module, name) for name in compat.__all__}}
    exec(textwrap.dedent(code), namespace)
    return namespace["result"]


def _assert_identical(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(README))
def test_readme_examples_give_the_same_outputs(name: str) -> None:
    _assert_identical(_run(README[name], compat), _run(README[name], vqp))


@pytest.mark.parametrize("name", list(README_UNSUPPORTED))
def test_readme_examples_beyond_the_layer_raise_clearly(name: str) -> None:
    with pytest.raises(NotImplementedError, match=r"not supported by fsqkit\.compat"):
        eval(README_UNSUPPORTED[name], {"torch": torch, **vars(compat)})


def _pair(name: str, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same module from both libraries, with vector-quantize-pytorch's state."""
    torch.manual_seed(1)
    theirs = getattr(vqp, name)(**kwargs)
    torch.manual_seed(1)
    ours = getattr(compat, name)(**kwargs)
    ours.load_state_dict(theirs.state_dict())  # strict: the keys must match
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


def _steps(ours, theirs, shape, steps: int = 3, **forward_kwargs) -> None:
    """Training steps on both: outputs, input gradients, parameter gradients and
    the state after every step must be identical."""
    for step in range(steps):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(step)) * 1.5
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(100 + step)
        out1 = ours(x1, **forward_kwargs)
        torch.manual_seed(100 + step)
        out2 = theirs(x2, **forward_kwargs)
        _assert_identical(
            [o for o in out1 if isinstance(o, torch.Tensor)],
            [o for o in out2 if isinstance(o, torch.Tensor)],
        )
        loss1 = out1[0].square().mean() + (out1[2].sum() if len(out1) > 2 else 0)
        loss2 = out2[0].square().mean() + (out2[2].sum() if len(out2) > 2 else 0)
        loss1.backward()
        loss2.backward()
        assert torch.equal(x1.grad, x2.grad)
        for p1, p2 in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(p1.grad, p2.grad)
        _assert_identical(list(ours.state_dict().values()), list(theirs.state_dict().values()))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"levels": [8, 5, 5, 5]}, (2, 50, 4)),
        ({"levels": [8, 5, 5, 5], "dim": 16}, (2, 50, 16)),
        ({"levels": [7, 6, 5], "preserve_symmetry": True}, (3, 40, 3)),
        ({"levels": [2, 4, 5], "preserve_symmetry": True, "dim": 8}, (3, 40, 8)),
        ({"levels": [8, 5, 5], "num_codebooks": 2}, (2, 30, 6)),
        ({"levels": [8, 5, 5, 5], "keep_num_codebooks_dim": True}, (2, 30, 4)),
        ({"levels": [8, 5, 5, 5], "return_indices": False}, (2, 30, 4)),
        ({"levels": [8, 5, 5, 5], "channel_first": True}, (2, 4, 30)),
        ({"levels": [8, 5, 5, 5]}, (2, 4, 7, 4)),  # 4-D: channel-first even though W = dim
        ({"levels": [8, 6, 5], "dim": 12, "projection_has_bias": False}, (2, 12, 3, 5, 7)),
    ],
)
def test_fsq(kwargs, shape) -> None:
    ours, theirs = _pair("FSQ", **kwargs)
    _steps(ours, theirs, shape)
    x = torch.randn(shape)
    _, indices = ours(x)
    if indices is not None:
        assert torch.equal(ours.indices_to_codes(indices), theirs.indices_to_codes(indices))
        assert torch.equal(
            ours.indices_to_level_indices(indices), theirs.indices_to_level_indices(indices)
        )
        codes = theirs.implicit_codebook
        assert torch.equal(ours.implicit_codebook, codes)
        assert torch.equal(ours.codes_to_indices(codes), theirs.codes_to_indices(codes))


@pytest.mark.parametrize("symmetric", [False, True])
def test_fsq_bins_equal_vq_pytorch_near_every_edge(symmetric, monkeypatch) -> None:
    """Every float within 200 steps of every bin edge of vector-quantize-pytorch's
    pipeline (its (1 + eps) bound, its float32 constants, floor(x + 0.5)), through
    both of fsqkit's paths; the paper's bins differ there."""
    levels = [8, 7, 6, 5, 3] if not symmetric else [8, 7, 6, 5, 2]
    core = compat.FSQ(levels, preserve_symmetry=symmetric).core
    edges = compute_bin_edges(core.constants, torch.device("cpu")).edges
    cols = []
    for d in range(len(levels)):
        e = edges[d][~torch.isnan(edges[d])]
        keys = e.view(torch.int32).long().unsqueeze(1) + torch.arange(-200, 201)
        cols.append(keys.flatten().to(torch.int32).view(torch.float32))
    n = max(c.numel() for c in cols)
    z = torch.stack([c.repeat(n // c.numel() + 1)[:n] for c in cols], dim=1)
    theirs = vqp.FSQ(levels, preserve_symmetry=symmetric)
    _, indices = theirs(z.unsqueeze(0))
    assert core._fused_forward(z) is not None  # the fused CPU kernel runs these bins
    for fast, edges in ((None, True), (None, False), (False, True)):
        core.fast = fast
        monkeypatch.setattr(cpu, "USE_BIN_EDGES", edges)  # tanh mode: reference if needed
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        out = core(z1)
        assert torch.equal(out.quantized, theirs(z2.unsqueeze(0))[0][0])
        assert torch.equal(out.indices, indices[0])
        g = torch.randn(z.shape)
        out.quantized.backward(g)
        theirs(z2.unsqueeze(0))[0][0].backward(g)
        assert torch.equal(z1.grad, z2.grad)
    if not symmetric:
        assert not torch.equal(FSQ(levels)(z).indices, indices[0])  # the paper's bins


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"levels": [8, 5, 5, 3], "num_quantizers": 4}, (2, 40, 4)),
        ({"levels": [8, 5, 5, 3], "num_quantizers": 6, "dim": 16}, (2, 40, 16)),
        ({"levels": [7, 5, 2], "num_quantizers": 3, "dim": 8, "is_channel_first": True},
         (2, 8, 5, 6)),
        ({"levels": [8, 5, 5], "num_quantizers": 5, "quantize_dropout": True}, (4, 40, 3)),
        ({"levels": [8, 5, 5], "num_quantizers": 6, "quantize_dropout": True,
          "quantize_dropout_cutoff_index": 1, "quantize_dropout_multiple_of": 2}, (4, 40, 3)),
        ({"levels": [8, 5, 5], "num_quantizers": 3, "bound_hard_clamp": False}, (2, 40, 3)),
        ({"levels": [8, 5, 5], "num_quantizers": 3, "bound_hard_clamp": False,
          "soft_clamp_input_value": 1.5}, (2, 40, 3)),
    ],
)  # fmt: skip
def test_residual_fsq(kwargs, shape) -> None:
    ours, theirs = _pair("ResidualFSQ", **kwargs)
    _steps(ours, theirs, shape, steps=4)
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    q1, i1 = ours(x)
    q2, i2 = theirs(x)
    assert torch.equal(q1, q2) and torch.equal(i1, i2)
    if not kwargs.get("is_channel_first"):
        assert torch.equal(ours.get_output_from_indices(i1), theirs.get_output_from_indices(i2))
        _assert_identical(ours(x, return_all_codes=True), theirs(x, return_all_codes=True))
    if kwargs.get("quantize_dropout"):  # a prefix of the layers decodes too
        prefix = i1[..., :2]
        assert torch.equal(
            ours.get_output_from_indices(prefix), theirs.get_output_from_indices(prefix)
        )
    assert torch.equal(ours.codebooks, theirs.codebooks)


def test_residual_fsq_channel_first_indices_are_b_q_h_w() -> None:
    ours, theirs = _pair("ResidualFSQ", levels=[8, 5, 5], num_quantizers=4, is_channel_first=True)
    x = torch.randn(2, 3, 5, 7)
    assert ours(x)[1].shape == theirs(x)[1].shape == (2, 4, 5, 7)


def test_grouped_residual_fsq() -> None:
    kwargs = {"dim": 16, "groups": 2, "levels": [8, 5, 5], "num_quantizers": 3}
    ours, theirs = _pair("GroupedResidualFSQ", **kwargs)
    _steps(ours, theirs, (2, 30, 16))  # training mode draws a dropout seed, as theirs
    ours.eval(), theirs.eval()
    x = torch.randn(2, 30, 16)
    a, b = ours(x, return_all_codes=True), theirs(x, return_all_codes=True)
    _assert_identical(a[:2], b[:2])
    _assert_identical(a[2], b[2])
    assert torch.equal(ours.get_output_from_indices(a[1]), theirs.get_output_from_indices(b[1]))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"dim": 16, "codebook_size": 32}, (2, 30, 16)),
        ({"dim": 16, "codebook_size": 32, "codebook_dim": 4, "decay": 0.9}, (2, 30, 16)),
        ({"dim": 8, "codebook_size": 64, "kmeans_init": True, "kmeans_iters": 3}, (2, 40, 8)),
        ({"dim": 8, "codebook_size": 64, "use_cosine_sim": True}, (2, 40, 8)),
        ({"dim": 8, "codebook_size": 64, "threshold_ema_dead_code": 2}, (2, 40, 8)),
        ({"dim": 8, "codebook_size": 64, "rotation_trick": False, "commitment_weight": 0.25},
         (2, 40, 8)),
        ({"dim": 8, "codebook_size": 16, "accept_image_fmap": True}, (2, 8, 5, 6)),
        ({"dim": 8, "codebook_size": 16, "accept_3d_fmap": True, "codebook_dim": 4},
         (2, 8, 3, 4, 5)),
        ({"dim": 8, "codebook_size": 16, "channel_last": False}, (2, 8, 30)),
        ({"dim": 8, "codebook_size": 16}, (5, 8)),  # one token per batch element
    ],
)  # fmt: skip
def test_vector_quantize(kwargs, shape) -> None:
    ours, theirs = _pair("VectorQuantize", **kwargs)
    _steps(ours, theirs, shape)
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    _assert_identical(ours(x), theirs(x))
    _assert_identical(
        ours(x, return_loss_breakdown=True)[3], theirs(x, return_loss_breakdown=True)[3]
    )
    idx = ours(x)[1]
    assert torch.equal(ours.get_codes_from_indices(idx), theirs.get_codes_from_indices(idx))
    if not (ours.has_projections and ours._channel_first_input()):  # there it cannot project
        assert torch.equal(ours.get_output_from_indices(idx), theirs.get_output_from_indices(idx))


def test_vector_quantize_freeze_and_ema_switches() -> None:
    ours, theirs = _pair("VectorQuantize", dim=8, codebook_size=16)
    _steps(ours, theirs, (2, 20, 8), freeze_codebook=True)
    _steps(ours, theirs, (2, 20, 8), ema_update=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 16, "num_quantizers": 3, "codebook_size": 32},
        {"dim": 16, "num_quantizers": 3, "codebook_size": 32, "codebook_dim": 4},
        {"dim": 8, "num_quantizers": 4, "codebook_size": 16, "quantize_dropout": True},
        {"dim": 8, "num_quantizers": 4, "codebook_size": 16, "kmeans_init": True,
         "threshold_ema_dead_code": 1, "rotation_trick": False},
    ],
)  # fmt: skip
def test_residual_vq(kwargs) -> None:
    ours, theirs = _pair("ResidualVQ", **kwargs)
    _steps(ours, theirs, (2, 30, kwargs["dim"]))
    ours.eval(), theirs.eval()
    x = torch.randn(2, 30, kwargs["dim"])
    a, b = ours(x, return_all_codes=True), theirs(x, return_all_codes=True)
    _assert_identical(a, b)
    assert torch.equal(ours.get_output_from_indices(a[1]), theirs.get_output_from_indices(b[1]))
    assert torch.equal(ours.codebooks, theirs.codebooks)


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: compat.FSQ([8, 5], noise_dropout=0.1, preserve_symmetry=True),
         NotImplementedError, "noise_dropout=0.1"),
        (lambda: compat.FSQ([8, 5], force_quantization_f32=False), NotImplementedError,
         "force_quantization_f32"),
        (lambda: compat.FSQ([8, 5], allowed_dtypes=(torch.float16,)), NotImplementedError,
         "allowed_dtypes"),
        (lambda: compat.FSQ([8, 2]), ValueError, "preserve_symmetry=True"),
        (lambda: compat.FSQ([8, 5], num_codebooks=2, keep_num_codebooks_dim=False), ValueError,
         "keep_num_codebooks_dim"),
        (lambda: compat.ResidualFSQ(levels=[5, 5], num_quantizers=2, quantize_dropout=0.5),
         ValueError, "is a flag"),
        (lambda: compat.ResidualFSQ(levels=[5, 5], num_quantizers=2, noise_dropout=0.1),
         NotImplementedError, "noise_dropout"),
        (lambda: compat.ResidualFSQ(levels=[5, 5], num_quantizers=2, levles=[3]), TypeError,
         "levles"),
        (lambda: compat.VectorQuantize(8, 16, heads=2), NotImplementedError, "heads=2"),
        (lambda: compat.VectorQuantize(8, 16, learnable_codebook=True), NotImplementedError,
         "learnable_codebook"),
        (lambda: compat.ResidualVQ(dim=8, num_quantizers=2, codebook_size=(16, 8)),
         NotImplementedError, "codebook sizes"),
        (lambda: compat.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, beam_size=4),
         NotImplementedError, "beam_size"),
    ],
)  # fmt: skip
def test_unsupported_arguments_are_refused(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_unsupported_forward_arguments_are_refused() -> None:
    vq = compat.VectorQuantize(8, 16)
    with pytest.raises(NotImplementedError, match="mask"):
        vq(torch.randn(2, 5, 8), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="topk"):
        vq(torch.randn(2, 5, 8), topk=2)
    with pytest.raises(ValueError, match="dimension of 4"):
        compat.FSQ([8, 5, 5, 5])(torch.randn(2, 10, 3))
