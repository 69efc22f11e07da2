"""Streamed data, measured: decoding throughput, memory at growing data set
sizes, encoding throughput and MaskGIT steps from memory-mapped token shards.

Every ratio compares two things measured in the same run on the same files:

1. images/s of the streamed ``folder:`` source (file list, decode + crop +
   flip in DataLoader workers, batches by step) with 1 and 2 workers, against
   the loop a user would write: a ``Dataset`` that opens each file with PIL,
   resizes the short side, centre-crops, and a shuffled ``DataLoader`` with the
   same number of workers;
2. peak RSS (training process, and the largest worker) of a process that lists
   2k / 8k / 32k images and reads the same number of batches from each (the
   larger sets are hard links to the same files: other paths, no more disk);
3. tokens/s of encoding a folder into token shards (``encode_split``) against
   the tokenizer alone on the same images already in memory;
4. MaskGIT training steps/s from memory-mapped token shards against the same
   tokens loaded into memory.

    python benchmarks/bench_data.py                # ~5 min on 2 CPU cores
    python benchmarks/bench_data.py --quick        # smaller, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_photos(root: str, n: int, size: tuple[int, int] = (320, 256), classes: int = 10) -> None:
    """``n`` JPEGs of ``size`` (smooth colour fields with noise, ~20 KB each) in
    ``classes`` class folders."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        d = os.path.join(root, f"class{i % classes:02d}")
        os.makedirs(d, exist_ok=True)
        f = rng.uniform(0.005, 0.05, size=3)
        ph = rng.uniform(0, 6.3, size=3)
        img = np.stack(
            [127 + 100 * np.sin(f[c] * (xx + yy * (c + 1)) + ph[c]) for c in range(3)], -1
        )
        img += rng.normal(0, 8, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(d, f"{i:06d}.jpg"), quality=90
        )


def link_copies(src: str, dst: str, n: int) -> None:
    """``dst`` with ``n`` hard links to the files of ``src`` (cycled)."""
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs)
    for i in range(n):
        s = files[i % len(files)]
        d = os.path.join(dst, os.path.basename(os.path.dirname(s)))
        os.makedirs(d, exist_ok=True)
        os.link(s, os.path.join(d, f"{i:06d}.jpg"))


# ----------------------------------------------------------- 1. throughput
class PlainPIL(torch.utils.data.Dataset):
    """The floor: PIL open + convert, resize short side, centre crop, to tensor."""

    def __init__(self, root: str, size: int) -> None:
        self.files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = self.size / min(w, h)
            im = im.resize((max(self.size, round(w * s)), max(self.size, round(h * s))),
                           Image.Resampling.BILINEAR)  # fmt: skip
            w, h = im.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def plain_rate(root: str, size: int, batch: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        PlainPIL(root, size), batch_size=batch, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    it = iter(loader)
    next(it)  # start-up (worker processes) not counted
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t0)
    del it
    return rate


def streamed_rate(
    root: str, size: int, batch: int, workers: int, batches: int, cache: str
) -> float:
    from fsqkit.data import open_images
    from fsqkit.data.augment import Augment
    from fsqkit.data.bad_files import BadFiles
    from fsqkit.training import batch_source

    ds = open_images(f"folder:{root}", "train", image_size=size, cache_dir=cache,
                     augment=Augment("crop"), bad=BadFiles(quiet=True))  # fmt: skip
    src = batch_source(ds, batch, 0, workers=workers)
    src.batch(1)
    t0 = time.perf_counter()
    for step in range(2, batches + 2):
        src.batch(step)
    rate = batches * batch / (time.perf_counter() - t0)
    src.close()
    return rate


# ------------------------------------------------------------------- 2. RSS
RSS_CHILD = r"""
import json, resource, sys, time
from fsqkit.data import open_images
from fsqkit.data.augment import Augment
from fsqkit.data.bad_files import BadFiles
from fsqkit.training import batch_source
root, cache, size, batch, steps, workers = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
t0 = time.perf_counter()
ds = open_images(f"folder:{root}", "train", image_size=size, cache_dir=cache,
                 augment=Augment("crop"), bad=BadFiles(quiet=True))
listing = time.perf_counter() - t0
src = batch_source(ds, batch, 0, workers=workers)
for step in range(1, steps + 1):
    src.batch(step)
src.close()
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"items": len(ds), "main_mb": me / 1024, "worker_mb": kids / 1024,
                  "listing_s": listing}))
"""


def rss(root: str, cache: str, size: int, batch: int, steps: int, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, root, cache, str(size), str(batch), str(steps), str(workers)],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- 3. encode
def small_tokenizer(path: str, image_size: int) -> None:
    from fsqkit.tokenizer import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    cfg = TokenizerConfig(quantizer_kwargs={"levels": [8, 5, 5, 5]}, image_size=image_size,
                          base_channels=16, channel_mult=(1, 2, 2))  # fmt: skip
    Tokenizer(cfg).save(path)


def encode_rates(root: str, tok_path: str, work: str, workers: int) -> tuple[float, float, int]:
    from fsqkit.data import build_dataset
    from fsqkit.data.bad_files import BadFiles
    from fsqkit.maskgit.tokens import encode_split
    from fsqkit.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_path).eval()
    shutil.rmtree(os.path.join(work, "enc"), ignore_errors=True)
    t0 = time.perf_counter()
    shards = encode_split(tok, f"folder:{root}", "train", os.path.join(work, "enc"),
                          workers=workers, bad=BadFiles(quiet=True), batch_size=128)  # fmt: skip
    streamed_s = time.perf_counter() - t0
    per_image = shards.grid[0] * shards.grid[1]
    ds = build_dataset(f"folder:{root}", "train", image_size=tok.cfg.image_size)
    x = ds.batch(slice(None))
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(x), 128):
            tok.encode(x[start : start + 128])
    memory_s = time.perf_counter() - t0
    n = len(shards)
    return n * per_image / streamed_s, len(x) * per_image / memory_s, n


# --------------------------------------------------------------- 4. MaskGIT
def maskgit_rates(tok_path: str, work: str, items: int, steps: int) -> tuple[float, float]:
    from fsqkit.data.token_shards import TokenShardWriter
    from fsqkit.maskgit.tokens import encoding_record
    from fsqkit.maskgit.train import MaskGITTrainConfig, train_maskgit
    from fsqkit.tokenizer import Tokenizer
    from fsqkit.training import TrainerConfig

    tok = Tokenizer.load(tok_path)
    grid = tok.cfg.token_grid
    rng = np.random.default_rng(0)
    tokens_dir = os.path.join(work, "tokens")
    shutil.rmtree(tokens_dir, ignore_errors=True)
    for split, n in (("train", items), ("val", 256)):
        rec = encoding_record(tok, "synthetic", split)
        w = TokenShardWriter(os.path.join(tokens_dir, split), rec, tok.codebook_size)
        per = 8192
        for k in range(-(-n // per)):
            m = min(per, n - k * per)
            w.write(k, rng.integers(0, tok.codebook_size, (m, grid, grid)), rng.integers(0, 10, m))
        w.finish(-(-n // per), num_classes=10, extra={"tokenizer_path": tok_path})
    rates = []
    for in_memory in (False, True):
        out = os.path.join(work, f"mg-{in_memory}")
        shutil.rmtree(out, ignore_errors=True)
        cfg = MaskGITTrainConfig(tokens=tokens_dir, tokens_in_memory=in_memory, batch_size=64,
                                 warmup_steps=1, eval_steps=1)  # fmt: skip
        res = train_maskgit({"dim": 64, "depth": 2, "heads": 2}, cfg,
                            TrainerConfig(out, steps, progress=False, log_every=steps))  # fmt: skip
        rates.append(steps / res.train_seconds)
    return rates[0], rates[1]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smaller sets and fewer batches")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    photos = 400 if args.quick else 2000
    batches = 10 if args.quick else 40
    sizes = (2000, 8000) if args.quick else (2000, 8000, 32000)
    work = args.work or tempfile.mkdtemp(prefix="fsqkit-bench-data-")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, work dir {work}")
    try:
        src = os.path.join(work, "photos")
        if not os.path.isdir(src):
            t0 = time.perf_counter()
            make_photos(src, photos)
            print(
                f"wrote {photos} JPEGs of 320x256 in 10 class folders ({time.perf_counter() - t0:.0f} s)"
            )
        S, B = args.image_size, args.batch_size
        print(
            f"\n1. decoding throughput, {S}x{S} crops, batch {B}, {batches} batches after the first"
        )
        print("| workers | plain PIL + DataLoader (img/s) | fsqkit folder: (img/s) | ratio |")
        print("|---|---|---|---|")
        for w in (1, 2):
            base = plain_rate(src, S, B, w, batches)
            ours = streamed_rate(src, S, B, w, batches, work)
            print(f"| {w} | {base:.0f} | {ours:.0f} | {ours / base:.2f} |")
        print(
            f"\n2. peak RSS reading {batches} batches of {B} ({S}x{S}) with 2 workers (median of 3 processes)"
        )
        print(
            "| images in the folder (train split) | file list (s, uncached) | training process (MB) | largest worker (MB) |"
        )
        print("|---|---|---|---|")
        first = None
        for n in sizes:
            d = os.path.join(work, f"links{n}")
            if not os.path.isdir(d):
                link_copies(src, d, n)
            runs = []
            for _ in range(3):  # the median of three processes (peaks vary run to run)
                cache = os.path.join(work, f"cache{n}")
                shutil.rmtree(cache, ignore_errors=True)  # list the folder afresh
                runs.append(rss(d, cache, S, B, batches, 2))
            r = {k: float(np.median([x[k] for x in runs])) for k in runs[0]}
            r["items"] = int(r["items"])
            first = first or r
            print(f"| {n} ({r['items']}) | {r['listing_s']:.2f} | {r['main_mb']:.0f} "
                  f"({r['main_mb'] / first['main_mb']:.2f}x) | {r['worker_mb']:.0f} "
                  f"({r['worker_mb'] / first['worker_mb']:.2f}x) |")  # fmt: skip
        tok = os.path.join(work, "tok")
        small_tokenizer(tok, 32)
        streamed, memory, n = encode_rates(src, tok, work, 2)
        print(f"\n3. encoding {n} images (32x32, 8x8 tokens, FSQ [8,5,5,5], CPU, 2 workers)")
        print(
            "| streamed folder -> token shards (tokens/s) | tokenizer alone, images in memory (tokens/s) | ratio |"
        )
        print("|---|---|---|")
        print(f"| {streamed:.0f} | {memory:.0f} | {streamed / memory:.2f} |")
        items = 8192 if args.quick else 65536
        steps = 20 if args.quick else 60
        mm, mem = maskgit_rates(tok, work, items, steps)
        print(
            f"\n4. MaskGIT training ({items} token grids of 8x8, batch 64, dim 64, depth 2, {steps} steps)"
        )
        print("| memory-mapped shards (steps/s) | in-memory tensor (steps/s) | ratio |")
        print("|---|---|---|")
        print(f"| {mm:.1f} | {mem:.1f} | {mm / mem:.2f} |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
