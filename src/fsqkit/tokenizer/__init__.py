"""Image tokenizer (stage I): a VQGAN-style autoencoder around any quantizer."""

from fsqkit.tokenizer.config import TokenizerConfig
from fsqkit.tokenizer.model import Tokenizer, TokenizerOutput
from fsqkit.tokenizer.train import (
    TokenizerTask,
    TokenizerTrainConfig,
    TrainResult,
    evaluate_tokenizer,
    train_tokenizer,
)

__all__ = [
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "TokenizerTask",
    "TokenizerTrainConfig",
    "TrainResult",
    "evaluate_tokenizer",
    "train_tokenizer",
]
