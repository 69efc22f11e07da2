"""Bidirectional masked-token transformer of MaskGIT (stage II).

Dimension legend: ``B`` batch, ``S`` tokens per image (``h * w`` of the
tokenizer's grid), ``K`` codebook size (the MASK token has id ``K``),
``D`` model width, ``N`` number of classes (label ``N`` = "no class").

Input: token ids ``[B, S]`` in ``{0 … K}`` (``K`` = MASK) and, for a
class-conditional model, labels ``[B]`` in ``{0 … N}``. The label is embedded as
one extra token prepended to the sequence (as in MaskGIT), so attention can
read it everywhere. Output: logits ``[B, S, K]`` over the real codes only (MASK
is never a prediction target).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.maskgit.config import MaskGITConfig


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention (no causal mask)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``[B, L, D] -> [B, L, D]``; ``attn_mask [L, L]`` bool (True = may attend),
        e.g. a causal or prefix mask (other users of the block: UViM's stage II)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:  # [B, L, D]
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


class MaskGITTransformer(nn.Module):
    """MaskGIT's bidirectional transformer; see the module docstring for shapes."""

    def __init__(self, config: MaskGITConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.codebook_size + 1, c.dim)  # +1: the MASK token
        self.pos_emb = nn.Parameter(torch.zeros(1, c.seq_len, c.dim))
        # Conditional models get one embedding per class plus the "no class" label.
        self.cls_emb = nn.Embedding(c.num_classes + 1, c.dim) if c.num_classes else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)
        )
        self.ln_f = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.codebook_size)
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # BERT-style init (what MaskGIT uses): N(0, 0.02) weights, zero biases.
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def check_inputs(self, tokens: Tensor, labels: Tensor | None) -> None:
        """Raise ``ValueError`` for token ids / labels the model cannot embed."""
        c = self.config
        if tokens.dim() != 2 or tokens.shape[1] != c.seq_len:
            raise ValueError(
                f"tokens must have shape [B, {c.seq_len}] (grid {c.grid}), got {list(tokens.shape)}"
            )
        if tokens.dtype.is_floating_point:
            raise TypeError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > c.mask_id):
            raise ValueError(
                f"token ids must be in [0, {c.codebook_size}] ({c.codebook_size} = MASK), "
                f"got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        if labels is None:
            return
        if not c.num_classes:
            raise ValueError("this MaskGIT model is unconditional; pass labels=None")
        if labels.shape != tokens.shape[:1]:
            raise ValueError(
                f"labels must have shape [{tokens.shape[0]}], got {list(labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > c.null_class):
            raise ValueError(
                f"class labels must be in [0, {c.num_classes - 1}] (or {c.null_class} = no class), "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )

    def forward(
        self, tokens: Tensor, labels: Tensor | None = None, select: Tensor | None = None
    ) -> Tensor:
        """Logits ``[B, S, K]`` for token ids ``[B, S]`` and optional labels ``[B]``.

        A conditional model given ``labels=None`` uses the "no class" label. With a
        boolean ``select [B, S]``, returns only the selected positions' logits
        ``[M, K]`` (training needs the masked ones only; the output head is the
        largest matrix product when ``K`` is large).
        """
        c = self.config
        self.check_inputs(tokens, labels)
        x = self.tok_emb(tokens.long()) + self.pos_emb  # [B, S, D]
        if self.cls_emb is not None:
            if labels is None:
                labels = torch.full(tokens.shape[:1], c.null_class, device=tokens.device)
            x = torch.cat([self.cls_emb(labels.long())[:, None], x], dim=1)  # [B, 1+S, D]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = x[:, -c.seq_len :]  # drop the class position: [B, S, D]
        if select is not None:
            x = x[select]  # [M, D]
        return self.head(self.ln_f(x))  # [B, S, K] or [M, K]
