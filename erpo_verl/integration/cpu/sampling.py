"""Autoregressive sampling with a Hugging Face causal LM on the CPU, returning per-token log-probs.

Written for the CPU rollout: a KV cache, temperature / top-k / top-p like vLLM's ``SamplingParams``, and a
``torch.Generator`` per request so that a seeded server samples reproducibly. :func:`sample_batch` serves many
requests at once (left-padded, one forward pass per token for the whole batch), drawing each row from its own
generator exactly as a request served alone would, so batching changes the speed, not the random numbers a request
consumes (tests/test_cpu_rollout_batching.py checks it against a plain one-request-at-a-time loop).

The returned log-probabilities are those of the *temperature-scaled* distribution, log softmax(logits / T),
before top-k/top-p truncation — the same quantity verl's actor computes for ``old_log_probs`` (it divides the
logits by the rollout temperature), so rollout-vs-actor diagnostics compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


@dataclass
class SampleRequest:
    """One request of a batch: its prompt, token budget, sampling settings and random stream."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    generator: torch.Generator | None = None


@torch.inference_mode()
def sample_batch(
    model: torch.nn.Module, requests: Sequence[SampleRequest], eos_token_ids: Iterable[int] = (), pad_token_id: int = 0
) -> list[tuple[list[int], list[float], str]]:
    """Generate for several requests with one forward pass per generated token.

    Returns one ``(token_ids, log_probs, finish_reason)`` per request, in order: finish_reason ``"stop"`` (an EOS
    token was produced; it is included, as vLLM does) or ``"length"``; ``temperature == 0`` means greedy decoding.
    Prompts are left-padded (attention mask and explicit position ids, so each row sees exactly its own tokens);
    a row that has stopped keeps a slot in the batch until the longest one ends, fed a padding token whose output
    is ignored. Row i draws from ``requests[i].generator`` once per sampled token, as it would alone; the
    logits of a padded batch may differ from an unpadded forward pass by float rounding only.
    """
    if not requests:
        return []
    for r in requests:
        if r.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {r.max_new_tokens}")
        if len(r.prompt_ids) < 1:
            raise ValueError("a request needs at least one prompt token")
    eos = set(int(t) for t in eos_token_ids)
    n, width = len(requests), max(len(r.prompt_ids) for r in requests)
    input_ids = torch.full((n, width), int(pad_token_id), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(requests):
        input_ids[i, width - len(r.prompt_ids):] = torch.tensor(list(r.prompt_ids), dtype=torch.long)
        attention[i, width - len(r.prompt_ids):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :].float()
    next_position = attention.sum(-1, keepdim=True)  # (n, 1): the position of each row's next token

    tokens: list[list[int]] = [[] for _ in requests]
    log_probs: list[list[float]] = [[] for _ in requests]
    finish = ["length"] * n
    active = list(range(n))
    settings = {(r.temperature, r.top_k, r.top_p) for r in requests}
    shared = next(iter(settings)) if len(settings) == 1 else None
    for _ in range(max(r.max_new_tokens for r in requests)):
        if shared is not None:  # the usual case: one temperature / top-k / top-p for the whole batch
            scaled_all = logits / shared[0] if shared[0] > 0 else logits
            logp_all = torch.log_softmax(scaled_all, dim=-1)
            probs_all = torch.softmax(filter_logits(scaled_all, shared[1], shared[2]), dim=-1) if shared[0] > 0 else None
        next_tokens = torch.full((n, 1), int(pad_token_id), dtype=torch.long)
        still = []
        for i in active:
            r = requests[i]
            if shared is not None:
                logp, probs = logp_all[i], (probs_all[i:i + 1] if probs_all is not None else None)
            else:
                scaled = logits[i:i + 1] / r.temperature if r.temperature > 0 else logits[i:i + 1]
                logp = torch.log_softmax(scaled, dim=-1)[0]
                probs = torch.softmax(filter_logits(scaled, r.top_k, r.top_p), dim=-1) if r.temperature > 0 else None
            if probs is not None:
                token = int(torch.multinomial(probs, 1, generator=r.generator).item())
            else:
                token = int(torch.argmax(logits[i]).item())
            tokens[i].append(token)
            log_probs[i].append(float(logp[token].item()))
            next_tokens[i, 0] = token
            if token in eos:
                finish[i] = "stop"
            elif len(tokens[i]) < r.max_new_tokens:
                still.append(i)
        active = still
        if not active:
            break
        attention = torch.cat([attention, torch.ones((n, 1), dtype=torch.long)], dim=-1)
        out = model(input_ids=next_tokens, attention_mask=attention, position_ids=next_position, past_key_values=past,
                    use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :].float()
        next_position = next_position + 1
    return [(tokens[i], log_probs[i], finish[i]) for i in range(n)]
