"""Iterative parallel decoding of MaskGIT, and classifier-free guidance.

Dimension legend: ``B`` batch, ``S`` tokens per image, ``K`` codebook size,
``T`` decoding steps.

:func:`iterative_decode` is a pure function of a logits function and a seeded
generator: start with every position masked; at step ``t`` (0-based) sample a
token for every masked position, score each by its log-probability plus
Gumbel noise scaled by the annealed *choice temperature*
``τ · (1 - (t+1)/T)``, and reveal the ``decoding_schedule(S, T)[t]``
best-scoring masked positions. Revealed tokens are never re-masked, so after
``T`` steps every position has been revealed exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.maskgit.schedule import decoding_schedule

LogitsFn = Callable[[Tensor], Tensor]
"""Maps token ids ``[B, S]`` (MASK id where unknown) to logits ``[B, S, K]``."""


@dataclass
class DecodeResult:
    """Output of :func:`iterative_decode`.

    Attributes:
        tokens: decoded ids ``[B, S]`` (int64), all in ``[0, K)``.
        reveal_step: ``[B, S]`` (int64): the step (0-based) at which each position
            was revealed.
        schedule: tokens revealed per step (``len == T``, sums to ``S``).
    """

    tokens: Tensor
    reveal_step: Tensor
    schedule: list[int]


def gumbel_noise(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Standard Gumbel noise drawn on the generator's device (so results for a seed
    do not depend on where the model runs), then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    u = u.clamp(1e-20, 1.0 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def iterative_decode(
    logits_fn: LogitsFn,
    batch: int,
    seq_len: int,
    mask_id: int,
    num_steps: int = 12,
    *,
    choice_temperature: float = 4.5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> DecodeResult:
    """MaskGIT decoding of ``batch`` sequences of ``seq_len`` tokens in ``num_steps`` steps.

    Args:
        logits_fn: ``[B, S]`` ids -> ``[B, S, K]`` logits (e.g. :func:`guided_logits_fn`).
        batch: ``B``.
        seq_len: ``S``.
        mask_id: id of the MASK token (``K``).
        num_steps: ``T`` (``1 <= T <= S``).
        choice_temperature: scale of the Gumbel noise on the confidences at the
            first step, annealed linearly to 0 at the last step (MaskGIT: 4.5).
        temperature: sampling temperature of the tokens; 0 = greedy argmax.
        generator: seeded RNG; the same seed gives the same tokens.
        device: device of the token tensors passed to ``logits_fn``.
    """
    if choice_temperature < 0 or temperature < 0:
        raise ValueError(
            f"temperatures must be >= 0, got choice_temperature={choice_temperature}, "
            f"temperature={temperature}"
        )
    schedule = decoding_schedule(seq_len, num_steps)
    device = torch.device(device)
    tokens = torch.full((batch, seq_len), mask_id, dtype=torch.long, device=device)
    reveal_step = torch.full_like(tokens, -1)
    for t, n_reveal in enumerate(schedule):
        logits = logits_fn(tokens).float()  # [B, S, K]
        if logits.shape[:2] != (batch, seq_len) or logits.shape[-1] != mask_id:
            raise ValueError(
                f"logits_fn must return [B={batch}, S={seq_len}, K={mask_id}], got {list(logits.shape)}"
            )
        if temperature > 0:
            logits = logits / temperature
            sampled = (logits + gumbel_noise(logits.shape, generator, device)).argmax(-1)
        else:
            sampled = logits.argmax(-1)  # [B, S]
        logp = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]  # [B, S]
        anneal = choice_temperature * (1.0 - (t + 1) / num_steps)
        confidence = logp + anneal * gumbel_noise(logp.shape, generator, device)
        masked = tokens == mask_id
        # Known positions can never be chosen again: each position is revealed once.
        confidence = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
        chosen = confidence.topk(n_reveal, dim=-1).indices  # [B, n_reveal]
        tokens.scatter_(1, chosen, sampled.gather(1, chosen))
        reveal_step.scatter_(1, chosen, torch.full_like(chosen, t))
    return DecodeResult(tokens=tokens, reveal_step=reveal_step, schedule=schedule)


def guided_logits_fn(
    model: torch.nn.Module, labels: Tensor | None, guidance: float = 0.0
) -> LogitsFn:
    """Logits function for a (conditional) MaskGIT model.

    With ``guidance = α > 0`` and labels, returns classifier-free guided logits
    ``l_c + α (l_c - l_∅)`` where ``l_∅`` are the logits under the "no class"
    label; both are computed in one batched forward pass.
    """
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    config = model.config

    def fn(tokens: Tensor) -> Tensor:
        if labels is None or guidance == 0.0:
            return model(tokens, labels)
        null = torch.full_like(labels, config.null_class)
        both = model(torch.cat([tokens, tokens]), torch.cat([labels, null]))  # [2B, S, K]
        cond, uncond = both.float().chunk(2)
        return cond + guidance * (cond - uncond)

    return fn


def resolve_labels(
    model: torch.nn.Module, num: int, class_label: int | Tensor | None
) -> Tensor | None:
    """Labels ``[num]`` for sampling, validated against the model.

    ``class_label`` may be ``None`` (unconditional / "no class"), one int for all
    samples, or a tensor of ``num`` ints. Raises ``ValueError`` for a class the
    model does not know.
    """
    config = model.config
    if class_label is None:
        return None
    if not config.num_classes:
        raise ValueError("this MaskGIT model is unconditional; it accepts no class label")
    labels = torch.as_tensor(class_label, dtype=torch.long)
    if labels.dim() == 0:
        labels = labels.expand(num).clone()
    if labels.shape != (num,):
        raise ValueError(
            f"expected one class label or {num} labels, got shape {list(labels.shape)}"
        )
    bad = labels[(labels < 0) | (labels >= config.num_classes)]
    if bad.numel():
        raise ValueError(
            f"unknown class {int(bad[0])}: this model knows classes 0..{config.num_classes - 1}"
        )
    return labels


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    num: int,
    class_label: int | Tensor | None = None,
    *,
    num_steps: int = 12,
    guidance: float = 0.0,
    choice_temperature: float = 4.5,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """Sample ``num`` token grids ``[num, h, w]`` (int64) from a MaskGIT model.

    Deterministic for a ``seed`` (and a batch size). ``class_label``: see
    :func:`resolve_labels`; ``guidance``: classifier-free guidance scale ``α``.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    config = model.config
    decoding_schedule(config.seq_len, num_steps)  # validate steps before any work
    labels = resolve_labels(model, num, class_label)
    if guidance and labels is None:
        raise ValueError("guidance needs a class label (it contrasts a class with 'no class')")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    try:
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            lab = labels[start : start + n].to(device) if labels is not None else None
            result = iterative_decode(
                guided_logits_fn(model, lab, guidance),
                n,
                config.seq_len,
                config.mask_id,
                num_steps,
                choice_temperature=choice_temperature,
                temperature=temperature,
                generator=generator,
                device=device,
            )
            out.append(result.tokens.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).view(num, *config.grid)
