"""UViM-style dense prediction on quantized tokens (Kolesnikov et al. 2022, as
used by the FSQ paper): a stage-I "oracle" autoencodes the target (depth,
colours, a panoptic map) conditioned on the image through an FSQ or VQ
bottleneck; a stage-II transformer predicts those tokens from the image alone; the oracle's decoder
turns them into the prediction. A direct regression baseline says what the
token language buys. Tasks live in a registry (:mod:`fsqkit.uvim.tasks`; panoptic
segmentation: :mod:`fsqkit.uvim.tasks.panoptic`)."""

from fsqkit.data.dense import DENSE_DATA_SPECS, DenseDataset, build_dense_dataset
from fsqkit.uvim.config import OracleConfig, Stage2Config
from fsqkit.uvim.evaluate import evaluate_dense
from fsqkit.uvim.model import UViM, load_oracle, load_uvim_model
from fsqkit.uvim.oracle import DirectModel, Oracle
from fsqkit.uvim.stage2 import TokenPredictor
from fsqkit.uvim.tasks import DenseBatch, DenseTask, available_tasks, get_task, register_task
from fsqkit.uvim.train import (
    UViMTrainConfig,
    train_direct,
    train_oracle,
    train_stage2,
)

__all__ = [
    "DENSE_DATA_SPECS",
    "DenseBatch",
    "DenseDataset",
    "DenseTask",
    "DirectModel",
    "Oracle",
    "OracleConfig",
    "Stage2Config",
    "TokenPredictor",
    "UViM",
    "UViMTrainConfig",
    "available_tasks",
    "build_dense_dataset",
    "evaluate_dense",
    "get_task",
    "load_oracle",
    "load_uvim_model",
    "register_task",
    "train_direct",
    "train_oracle",
    "train_stage2",
]
