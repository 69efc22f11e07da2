"""Running a UViM model (or the direct baseline) on image files and writing its
predictions as images (PNG) and arrays (``.npy``).

Depth is written as a 16-bit PNG in millimetres (``NAME_depth.png``, the
format ``pairs:PATH`` reads) plus ``NAME_depth.npy`` (float32 metres ``(H, W)``);
colours as ``NAME_colorize.png`` plus ``NAME_colorize.npy`` (float32
``(H, W, 3)`` in ``[0, 1]``); panoptic maps as ``NAME_panoptic.png`` (a colour
per class, shaded per instance) plus ``NAME_panoptic.npy`` (int32 ``(H, W, 2)``:
semantic class, instance id).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fsqkit.data.io import expand_image_paths, load_image, save_image
from fsqkit.uvim.model import UViM
from fsqkit.uvim.oracle import DirectModel
from fsqkit.uvim.tasks import DenseBatch


def predict_files(
    model: UViM | DirectModel, inputs: list[str], out_dir: str, seed: int = 0
) -> list[str]:
    """Predict for every image of ``inputs`` (resized and centre-cropped to the
    model's size) and write PNG + ``.npy`` per image into ``out_dir``; returns
    the written PNG paths."""
    files = expand_image_paths(inputs)
    cfg = model.oracle.cfg if isinstance(model, UViM) else model.cfg
    task = model.task
    images = torch.stack([load_image(f, cfg.image_size) for f in files])
    if isinstance(model, UViM):
        pred = model.predict(images, seed=seed)
    else:
        pred = torch.cat(
            [
                model.predict(task.inputs(DenseBatch(images[i : i + 128])))
                for i in range(0, len(images), 128)
            ]
        )
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for f, p in zip(files, pred):
        stem = os.path.join(out_dir, os.path.splitext(os.path.basename(f))[0] + f"_{task.name}")
        if task.name == "depth":
            from PIL import Image

            depth = p[0].numpy().astype(np.float32)
            np.save(stem + ".npy", depth)
            mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(stem + ".png")
        elif task.name == "panoptic":
            np.save(stem + ".npy", p.permute(1, 2, 0).numpy().astype(np.int32))
            save_image(task.to_rgb(p[None])[0], stem + ".png")
        else:
            np.save(stem + ".npy", task.to_rgb(p[None])[0].permute(1, 2, 0).numpy())
            save_image(task.to_rgb(p[None])[0], stem + ".png")
        written.append(stem + ".png")
    return written
