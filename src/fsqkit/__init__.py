"""fsqkit: Finite Scalar Quantization made easy, exact and fast.

>>> from fsqkit import FSQ
>>> fsq = FSQ([8, 5, 5, 5])
>>> out = fsq(torch.randn(2, 16, 4))   # out.quantized (2, 16, 4), out.indices (2, 16)
"""

from fsqkit.quantizers import (
    FSQ,
    GroupedResidualFSQ,
    Quantizer,
    QuantizerOutput,
    ResidualFSQ,
    ResidualVQ,
    UsageTracker,
    VectorQuantizer,
    available_quantizers,
    build_quantizer,
    levels_for,
)

__version__ = "0.1.0"

__all__ = [
    "FSQ",
    "GroupedResidualFSQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualFSQ",
    "ResidualVQ",
    "UsageTracker",
    "VectorQuantizer",
    "__version__",
    "available_quantizers",
    "build_quantizer",
    "levels_for",
]
