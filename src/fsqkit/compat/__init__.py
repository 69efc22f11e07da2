"""Drop-in classes for users of other quantization libraries, built on
:mod:`fsqkit.quantizers` (the only part of fsqkit this package imports).

- :mod:`fsqkit.compat.vector_quantize_pytorch`: vector-quantize-pytorch 1.32's
  ``FSQ``, ``ResidualFSQ``, ``GroupedResidualFSQ``, ``VectorQuantize`` and
  ``ResidualVQ``: change the import line, keep the code and the checkpoints.
"""
