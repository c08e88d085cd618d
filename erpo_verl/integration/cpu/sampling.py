"""Autoregressive sampling with a Hugging Face causal LM on the CPU, returning per-token log-probs.

Written for the CPU rollout: one request at a time, a KV cache, temperature / top-k / top-p like vLLM's
``SamplingParams``, and a ``torch.Generator`` so that a seeded server samples reproducibly.

The returned log-probabilities are those of the *temperature-scaled* distribution, log softmax(logits / T),
before top-k/top-p truncation — the same quantity verl's actor computes for ``old_log_probs`` (it divides the
logits by the rollout temperature), so rollout-vs-actor diagnostics compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the top-k and outside the top-p nucleus of ``logits`` (1, V)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the mass *before* it already reaches top_p (the first token always stays)
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.inference_mode()
def sample_response(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = -1,
    eos_token_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[float], str]:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids``.

    Returns ``(token_ids, log_probs, finish_reason)`` with finish_reason ``"stop"`` (an EOS token was
    produced; it is included, as vLLM does) or ``"length"``. ``temperature == 0`` means greedy decoding.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = set(int(t) for t in eos_token_ids)
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    out = model(input_ids=input_ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[:, -1, :].float()
    tokens: list[int] = []
    log_probs: list[float] = []
    finish = "length"
    for _ in range(max_new_tokens):
        if temperature > 0:
            scaled = logits / temperature
            probs = torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator).item())
        else:
            scaled = logits
            token = int(torch.argmax(logits, dim=-1).item())
        log_probs.append(float(torch.log_softmax(scaled, dim=-1)[0, token].item()))
        tokens.append(token)
        if token in eos:
            finish = "stop"
            break
        out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
    return tokens, log_probs, finish
