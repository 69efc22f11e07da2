"""MaskGIT (stage II): a bidirectional masked-token transformer over a tokenizer's
token grid, its training objective, and iterative parallel decoding."""

from fsqkit.maskgit.config import MaskGITConfig
from fsqkit.maskgit.loss import masked_token_loss
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.sampling import (
    DecodeResult,
    guided_logits_fn,
    iterative_decode,
    sample_tokens,
)
from fsqkit.maskgit.schedule import (
    PAPER_R_MIN,
    decoding_schedule,
    r_min_for_fraction,
    random_training_mask,
)

__all__ = [
    "PAPER_R_MIN",
    "DecodeResult",
    "MaskGITConfig",
    "MaskGITTransformer",
    "decoding_schedule",
    "guided_logits_fn",
    "iterative_decode",
    "masked_token_loss",
    "r_min_for_fraction",
    "random_training_mask",
    "sample_tokens",
]
