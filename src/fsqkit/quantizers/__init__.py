"""Quantizers: FSQ, the VQ baseline and residual variants, behind one interface."""

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.fsq import FSQ
from fsqkit.quantizers.levels import PAPER_LEVELS, codebook_size_of, levels_for, validate_levels
from fsqkit.quantizers.output import QuantizerOutput
from fsqkit.quantizers.registry import available_quantizers, build_quantizer, register_quantizer
from fsqkit.quantizers.residual_fsq import GroupedResidualFSQ, ResidualFSQ
from fsqkit.quantizers.residual_vq import ResidualVQ
from fsqkit.quantizers.stats import (
    UsageTracker,
    batch_stats,
    code_counts,
    entropy_bits,
    perplexity,
    usage_fraction,
)
from fsqkit.quantizers.vq import VectorQuantizer

__all__ = [
    "FSQ",
    "PAPER_LEVELS",
    "GroupedResidualFSQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualFSQ",
    "ResidualVQ",
    "UsageTracker",
    "VectorQuantizer",
    "available_quantizers",
    "batch_stats",
    "build_quantizer",
    "code_counts",
    "codebook_size_of",
    "entropy_bits",
    "levels_for",
    "perplexity",
    "register_quantizer",
    "usage_fraction",
    "validate_levels",
]
