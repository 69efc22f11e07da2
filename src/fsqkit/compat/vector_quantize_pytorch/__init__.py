"""vector-quantize-pytorch 1.32's quantizers on fsqkit: change the import line.

    # from vector_quantize_pytorch import FSQ, ResidualFSQ, VectorQuantize
    from fsqkit.compat.vector_quantize_pytorch import FSQ, ResidualFSQ, VectorQuantize

Same constructor arguments, forward signatures, return conventions and
state-dict keys (vector-quantize-pytorch checkpoints load as they are), and the
same outputs: ``FSQ`` uses fsqkit's ``FSQ(bound="vq-pytorch")``, which
reproduces its bins bit for bit; the residual and VQ classes compute with the
same float operations. Arguments fsqkit does not implement raise
``NotImplementedError`` (unless left at their defaults), unknown ones
``TypeError``. docs/migrating.md has the argument mapping to fsqkit's own
classes and the known differences.
"""

from fsqkit.compat.vector_quantize_pytorch.fsq import FSQ
from fsqkit.compat.vector_quantize_pytorch.residual_fsq import GroupedResidualFSQ, ResidualFSQ
from fsqkit.compat.vector_quantize_pytorch.residual_vq import ResidualVQ
from fsqkit.compat.vector_quantize_pytorch.vq import VectorQuantize

__all__ = ["FSQ", "GroupedResidualFSQ", "ResidualFSQ", "ResidualVQ", "VectorQuantize"]
