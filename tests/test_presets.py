"""The paper's presets: each builds with the paper's parameter count, flags
override preset values, ``--help`` lists the presets, and the memory line
before a run states parameters and activation memory per image."""

from __future__ import annotations

import pytest
import torch

from fsqkit.cli import build_parser
from fsqkit.cli.run_args import apply_preset
from fsqkit.experiments.studies.cell import tokenizer_config
from fsqkit.experiments.studies.cells import codebook_size_cells
from fsqkit.experiments.studies.scale import get_scale
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.presets import PRESETS as MASKGIT_PRESETS
from fsqkit.maskgit.presets import preset_arch
from fsqkit.maskgit.train import config_from_tokenizer
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.tokenizer.presets import PRESETS, preset_model_config, tokenizer_params
from fsqkit.training.presets import grad_accum_for, memory_line, saved_bytes_per_item
from fsqkit.uvim.config import Stage2Config
from fsqkit.uvim.oracle import Oracle
from fsqkit.uvim.presets import describe_run_preset, run_presets

PAPER = "maskgit-imagenet256"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tokenizer_preset_builds_maskgits_vqgan():
    p = PRESETS[PAPER]
    fsq, vq = preset_model_config(p, "fsq"), preset_model_config(p, "vq")
    assert fsq.downsample_factor == 16 and fsq.token_grid == 16
    assert fsq.channel_mult == (1, 1, 2, 2, 4) and fsq.base_channels == 128
    counts = tokenizer_params(fsq, gan=True)
    assert counts == {
        "encoder": 20_260_100,
        "quantizer": 0,  # FSQ: no parameters
        "decoder": 24_684_931,
        "discriminator": 167_841,
    }
    vq_counts = tokenizer_params(vq, gan=False)
    assert vq_counts["quantizer"] == 1024 * 256  # the paper's VQ codebook
    # The meta-device count is the real module's.
    with torch.device("meta"):
        assert _count(Tokenizer(fsq)) == counts["encoder"] + counts["decoder"]
    assert p.train["betas"] == (0.0, 0.99) and p.train["r1_weight"] == 10.0
    assert p.args["lr"] == 1e-4 and p.args["perceptual_weight"] == p.args["disc_weight"] == 0.1


def test_maskgit_preset_builds_the_papers_transformer():
    p = MASKGIT_PRESETS[PAPER]
    tok = preset_model_config(PRESETS[PAPER])
    cfg = config_from_tokenizer(tok, 1000, 1000, **preset_arch(p))
    assert (cfg.depth, cfg.dim, cfg.heads, cfg.dim * cfg.mlp_ratio) == (24, 768, 16, 3072)
    assert cfg.grid == (16, 16) and cfg.dropout == 0.1
    with torch.device("meta"):
        n = _count(MaskGITTransformer(cfg))
    # 24 blocks of attention (4 d^2 + 4 d) + MLP (8 d^2 + 5 d) + 2 LayerNorms (4 d)
    # dominate: 24 * (12 d^2 + 13 d) = 170.1M; embeddings, positions and head the rest.
    d = 768
    assert n == 172_613_608
    assert 24 * (12 * d * d + 13 * d) < n < 24 * (12 * d * d + 13 * d) + 3_000_000
    assert p.train["betas"] == (0.9, 0.96)
    assert (p.args["weight_decay"], p.args["warmup_steps"], p.args["lr"]) == (0.045, 5000, 1e-4)


def test_uvim_nyu_preset_and_study_imagenet128_build():
    oracle_preset = run_presets()["train-oracle"]["nyu-depth"]
    a = oracle_preset.args
    from fsqkit.uvim import OracleConfig

    cfg = OracleConfig(
        task="depth", quantizer_kwargs={"levels": a["levels"]}, image_size=a["image_size"],
        base_channels=a["base_channels"], channel_mult=tuple(a["channel_mult"]),
    )  # fmt: skip
    with torch.device("meta"):
        oracle = Oracle(cfg)
    assert oracle.codebook_size == 4375  # [7,5,5,5,5]
    assert _count(oracle) == 14_870_598
    s2 = Stage2Config.from_oracle(
        cfg,
        4375,
        **{
            k: run_presets()["train"]["nyu-depth"].args[k]
            for k in ("decoder", "dim", "depth", "heads")
        },
    )
    assert s2.grid == (16, 16)

    with pytest.raises(ValueError, match="needs --data"):
        get_scale("imagenet128")
    scale = get_scale("imagenet128", data="folder:/imagenet/train")
    assert (scale.image_size, scale.precision, scale.stage2.depth) == (128, "bf16", 24)
    cells = codebook_size_cells(["fsq", "vq"], [2**16], scale.vq_dim, scale.seed)
    tok = tokenizer_config(cells[0], scale)
    assert tok.token_grid == 8 and tok.quantizer_kwargs["levels"] == [8, 8, 8, 5, 5, 5]
    with torch.device("meta"):
        assert _count(Tokenizer(tok)) == 44_963_465


def _parse(*argv: str):
    args = build_parser().parse_args(list(argv))
    args.argv = list(argv)
    return args


def test_flags_override_preset_values_and_global_batch_sets_accumulation():
    args = _parse(
        "train-tokenizer", "--preset", PAPER, "--data", "folder:/x", "--lr", "1e-3",
        "--batch-size", "16", "--out", "o",
    )  # fmt: skip
    settings = apply_preset(args, PRESETS[PAPER])
    assert args.lr == 1e-3 and args.batch_size == 16  # given: kept
    assert args.base_channels == 128 and args.channel_mult == [1, 1, 2, 2, 4]  # from the preset
    assert settings == {"precision": "bf16", "grad_accum": 16}  # 256 / 16
    args = _parse(
        "train-tokenizer", "--preset", PAPER, "--data", "folder:/x", "--precision", "fp32",
        "--grad-accum", "2", "--out", "o",
    )  # fmt: skip
    settings = apply_preset(args, PRESETS[PAPER])
    assert "grad_accum" not in settings  # --grad-accum given: the flag decides
    from fsqkit.cli.run_args import trainer_config_from_args

    tc = trainer_config_from_args(args, **settings)
    assert (tc.precision, tc.grad_accum) == ("fp32", 2)
    assert grad_accum_for(256, 32, 2) == 4 and grad_accum_for(256, 300, 1) == 1


def test_preset_without_data_is_one_clear_error():
    args = _parse("train-tokenizer", "--preset", PAPER, "--out", "o")
    with pytest.raises(ValueError, match=f"--preset {PAPER} needs --data"):
        apply_preset(args, PRESETS[PAPER])


@pytest.mark.parametrize(
    "command", [["train-tokenizer"], ["train-maskgit"], ["uvim", "train-oracle"], ["uvim", "train"]]
)
def test_help_lists_the_presets(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset" in text
    name = "nyu-depth" if command[0] == "uvim" else PAPER
    assert f"{name}:" in text


def test_memory_line_measures_activations_per_image():
    cfg = TokenizerConfig(image_size=16, base_channels=8, channel_mult=(1, 2))
    model = Tokenizer(cfg)

    def forward(batch: int):
        return model(torch.rand(batch, 3, 16, 16)).recon.mean()

    fp32 = saved_bytes_per_item(forward, "fp32")
    bf16 = saved_bytes_per_item(forward, "bf16")
    # The first conv alone saves its 3x16x16 float32 input per image.
    assert fp32 > 3 * 16 * 16 * 4 and bf16 < fp32
    line = memory_line("preset x", {"encoder": 10, "decoder": 20}, fp32, "fp32", 4)
    assert (
        "30 parameters" not in line and "0.00M parameters" in line and "per image at fp32" in line
    )
    oracle = run_presets()["train-oracle"]["nyu-depth"]
    from fsqkit.uvim import OracleConfig

    small = OracleConfig(task="depth", image_size=32, base_channels=8, channel_mult=(1, 2))
    text = describe_run_preset(oracle, small, "bf16", 8)
    assert "preset nyu-depth (oracle, 32px)" in text and "MiB per image at bf16" in text


def test_r1_penalty_of_the_presets_discriminator(tmp_path):
    from fsqkit.tokenizer.losses import r1_penalty

    w = torch.randn(12)
    x = torch.randn(5, 12, requires_grad=True)
    assert r1_penalty(x @ w, x).item() == pytest.approx(float(w @ w), rel=1e-6)
    from .train_helpers import tiny_fit, train_records

    out = str(tmp_path / "gan")
    gan = {"disc_weight": 0.1, "disc_start": 1, "r1_weight": 10.0}
    tiny_fit(out, 3, train=gan)
    recs = train_records(out)
    assert "r1" not in recs[0] and all(r["r1"] > 0 and "d_loss" in r for r in recs[1:])
