"""UViM stage II: a transformer that predicts the oracle's token grid from the
image alone, conditioned on conv image features.

Dimension legend: ``B`` batch, ``S = h * w`` tokens, ``K`` codebook size (id
``K`` is MASK, and BOS for the autoregressive decoder), ``E`` transformer width.

The image encoder's top feature map sits on the token grid, so each token
position gets the image features of its own patch added to its embedding. Two
decoders (``Stage2Config.decoder``):

- ``"masked"`` (default): MaskGIT's bidirectional transformer, trained on
  cosine-schedule masks and decoded in ``decode_steps`` parallel steps
  (:func:`fsqkit.maskgit.iterative_decode`). Default because it needs a few
  forward passes instead of ``S``, which matters on a CPU, and every token sees
  the whole image and every decided token.
- ``"autoregressive"``: UViM's original choice, raster order with a causal mask;
  the ``S`` image features are also given as a bidirectional prefix so early
  tokens see the whole image. Decoding takes ``S`` forward passes.

Decoding is greedy by default (``temperature=0``: deterministic); with
``temperature > 0`` it samples from a generator seeded by ``seed``.

Greedy decoding has a fast path (:meth:`TokenPredictor.predict_tokens`,
``fast=True``): the ``K``-way head runs only on the positions still masked (the
autoregressive decoder: only on the position being decided), ``HEAD_ROWS``
positions at a time into one reused buffer, instead of producing the whole
``(B, S, K)`` logits tensor per step; the image encoder runs on
``CONV_BATCH`` images at a time. Same operations per position, so the same
tokens bit for bit (``tests/test_uvim_predict.py``); ``fast=False`` is the
general decoder that sampling uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.maskgit.model import Block
from fsqkit.maskgit.sampling import gumbel_noise, iterative_decode
from fsqkit.maskgit.schedule import PAPER_R_MIN, decoding_schedule, random_training_mask
from fsqkit.uvim.config import Stage2Config
from fsqkit.uvim.nets import ContextEncoder, in_batches, inference
from fsqkit.uvim.oracle import check_images

HEAD_ROWS = 1024
"""Token positions whose ``K`` logits the fast greedy decoder computes at once
on the CPU (an ~18 MB buffer for ``K = 4375``; the whole ``(B, S, K)`` tensor of
128 images is 143 MB, allocated and freed at every step). On a GPU: all at once."""


class TokenPredictor(nn.Module):
    """Stage II transformer; see the module docstring."""

    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.image_encoder = ContextEncoder(widths, cfg.norm_groups)
        self.image_proj = nn.Conv2d(widths[-1], cfg.dim, 1)
        self.tok_emb = nn.Embedding(cfg.codebook_size + 1, cfg.dim)
        self.pos_emb = nn.Parameter(torch.randn(1, cfg.seq_len, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.codebook_size)
        self.autoregressive = cfg.decoder == "autoregressive"
        if self.autoregressive:
            self.prefix_pos = nn.Parameter(torch.randn(1, cfg.seq_len, cfg.dim) * 0.02)
            s = cfg.seq_len
            mask = torch.ones(2 * s, 2 * s, dtype=torch.bool).tril()
            mask[:, :s] = True  # everyone sees the image prefix
            mask[:s, s:] = False  # the prefix never sees tokens
            self.register_buffer("attn_mask", mask, persistent=False)

    def image_features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> per-token image features ``(B, S, E)``."""
        check_images(images, self.cfg.image_size)
        top = self.image_encoder(images * 2.0 - 1.0)[-1]  # (B, c_top, h, w)
        return self.image_proj(top).flatten(2).transpose(1, 2)

    def hidden(self, feats: Tensor, tokens: Tensor) -> Tensor:
        """The last block's output ``(B, S, E)`` at the token positions, for input
        ids ``(B, S)`` (MASK/BOS = ``K``) and image features ``(B, S, E)``."""
        x = self.tok_emb(tokens.long()) + self.pos_emb + feats  # (B, S, E)
        mask = None
        if self.autoregressive:
            x = torch.cat([feats + self.prefix_pos, x], 1)  # (B, 2S, E)
            mask = self.attn_mask
        for block in self.blocks:
            x = block(x, mask)
        return x[:, -self.cfg.seq_len :]

    def logits(self, feats: Tensor, tokens: Tensor, select: Tensor | None = None) -> Tensor:
        """Logits ``(B, S, K)`` (or ``(M, K)`` at ``select``) for input ids ``(B, S)``
        (MASK/BOS = ``K``) and image features ``(B, S, E)``."""
        x = self.hidden(feats, tokens)
        if select is not None:
            x = x[select]
        return self.head(self.ln_f(x))

    def _shift_right(self, tokens: Tensor) -> Tensor:
        bos = torch.full_like(tokens[:, :1], self.cfg.mask_id)
        return torch.cat([bos, tokens[:, :-1]], 1)

    def forward(
        self,
        images: Tensor,
        tokens: Tensor,
        generator: torch.Generator | None = None,
        label_smoothing: float = 0.1,
    ) -> tuple[Tensor, dict[str, float]]:
        """Training loss (what ``forward`` computes, so DDP syncs it) for target
        tokens ``(B, h, w)``: cross-entropy on masked
        positions (masked decoder) or on every next token (autoregressive)."""
        b = tokens.shape[0]
        tokens = tokens.reshape(b, -1).long()  # (B, S)
        feats = self.image_features(images)
        if self.autoregressive:
            logits = self.logits(feats, self._shift_right(tokens)).flatten(0, 1)
            target = tokens.flatten()
        else:
            mask = random_training_mask(b, self.cfg.seq_len, PAPER_R_MIN, generator=generator)
            mask = mask.to(tokens.device)
            inputs = torch.where(mask, torch.full_like(tokens, self.cfg.mask_id), tokens)
            logits, target = self.logits(feats, inputs, mask), tokens[mask]
        loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
        acc = (logits.detach().argmax(-1) == target).float().mean()
        return loss, {"loss": float(loss.detach()), "token_acc": float(acc)}

    @inference
    def predict_tokens(
        self, images: Tensor, temperature: float = 0.0, seed: int = 0, *, fast: bool = True
    ) -> Tensor:
        """Token grids ``(B, h, w)`` int64 predicted from ``images`` (deterministic
        for a ``seed``; greedy for ``temperature=0``). ``fast`` (greedy only): the
        fast path of the module docstring, same tokens; ``False``: the general decoder
        on the whole batch at once (the reference the fast path is tested against)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        check_images(images, self.cfg.image_size)
        feats = in_batches(self.image_features, images) if fast else self.image_features(images)
        b, s, k = feats.shape[0], self.cfg.seq_len, self.cfg.codebook_size
        if fast and temperature == 0:
            greedy = self._greedy_autoregressive if self.autoregressive else self._greedy_masked
            return greedy(feats).view(b, *self.cfg.grid)
        gen = torch.Generator().manual_seed(seed)
        if not self.autoregressive:
            out = iterative_decode(
                lambda ids: self.logits(feats, ids),
                b,
                s,
                k,
                self.cfg.decode_steps,
                choice_temperature=0.0,
                temperature=temperature,
                generator=gen,
                device=feats.device,
            ).tokens
        else:
            out = torch.full((b, s), k, dtype=torch.long, device=feats.device)
            for i in range(s):
                logit = self.logits(feats, self._shift_right(out))[:, i].float()  # (B, K)
                if temperature > 0:
                    logit = logit / temperature + gumbel_noise(logit.shape, gen, feats.device)
                out[:, i] = logit.argmax(-1)
        return out.view(b, *self.cfg.grid)

    def _greedy_masked(self, feats: Tensor) -> Tensor:
        """Greedy MaskGIT decoding (``iterative_decode`` with both temperatures 0)
        of image features ``(B, S, E)`` -> tokens ``(B, S)``; the head runs only
        on masked positions, and the last step, which reveals every position
        left, needs no confidences."""
        b, s, k = feats.shape[0], self.cfg.seq_len, self.cfg.codebook_size
        head = _GreedyHead(self.ln_f, self.head, feats.device)
        tokens = torch.full((b, s), k, dtype=torch.long, device=feats.device)
        confidence = torch.empty(b, s, device=feats.device)
        sampled = torch.empty_like(tokens)
        left = s
        for n_reveal in decoding_schedule(s, self.cfg.decode_steps):
            masked = tokens == k
            best, logp = head(self.hidden(feats, tokens)[masked], confidence=n_reveal < left)
            if n_reveal == left:
                return tokens.masked_scatter_(masked, best)
            # as iterative_decode: decided positions are never chosen again
            confidence.fill_(-torch.inf).masked_scatter_(masked, logp)
            sampled.zero_().masked_scatter_(masked, best)
            chosen = confidence.topk(n_reveal, dim=-1).indices  # (B, n_reveal)
            tokens.scatter_(1, chosen, sampled.gather(1, chosen))
            left -= n_reveal
        raise AssertionError("the decoding schedule reveals every position")

    def _greedy_autoregressive(self, feats: Tensor) -> Tensor:
        """Greedy raster-order decoding -> tokens ``(B, S)``; the head runs only
        on the position being decided."""
        b, s, k = feats.shape[0], self.cfg.seq_len, self.cfg.codebook_size
        head = _GreedyHead(self.ln_f, self.head, feats.device)
        out = torch.full((b, s), k, dtype=torch.long, device=feats.device)
        for i in range(s):
            out[:, i] = head(self.hidden(feats, self._shift_right(out))[:, i])[0]
        return out


class _GreedyHead:
    """Argmax code ``(M,)`` of hidden states ``(M, E)`` under ``head(ln_f(.))``
    and, with ``confidence``, its log-probability ``(M,)``; ``HEAD_ROWS`` rows at
    a time into reused buffers, per row the same operations as on the whole
    logits tensor."""

    def __init__(self, ln_f: nn.LayerNorm, head: nn.Linear, device: torch.device) -> None:
        self.ln_f, self.weight, self.bias = ln_f, head.weight.t(), head.bias
        self.k, self.device = head.weight.shape[0], device
        # grown at the first call; float32 log-softmax as in the general decoder
        self.logits = torch.empty(0, self.k, device=device, dtype=head.weight.dtype)
        self.logp: Tensor | None = None

    def __call__(self, hidden: Tensor, confidence: bool = False) -> tuple[Tensor, Tensor]:
        m = hidden.shape[0]
        best = torch.empty(m, dtype=torch.long, device=hidden.device)
        logp = torch.empty(m if confidence else 0, device=hidden.device)
        x = self.ln_f(hidden)
        chunk = HEAD_ROWS if self.device.type == "cpu" else max(m, 1)
        if len(self.logits) < min(chunk, m):
            self.logits = self.logits.new_empty(min(chunk, m), self.k)
            self.logp = None
        for i in range(0, m, chunk):
            rows = x[i : i + chunk]
            n = len(rows)
            logits = torch.addmm(self.bias, rows, self.weight, out=self.logits[:n]).float()
            top = logits.argmax(-1)
            best[i : i + n] = top
            if confidence:
                if self.logp is None:
                    self.logp = torch.empty(len(self.logits), self.k, device=self.device)
                lsm = torch.ops.aten._log_softmax.out(logits, -1, False, out=self.logp[:n])
                logp[i : i + n] = lsm.gather(-1, top[:, None])[:, 0]
        return best, logp
