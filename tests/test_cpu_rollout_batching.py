"""The CPU rollout serves concurrent requests as one batch and samples exactly what one-at-a-time serving samples."""

import asyncio
from types import SimpleNamespace

import pytest
import torch

from erpo_verl.integration.cpu.sampling import SampleRequest, filter_logits, sample_batch


@torch.inference_mode()
def sample_response(model, prompt_ids, max_new_tokens, temperature=1.0, top_p=1.0, top_k=-1, eos_token_ids=(),
                    generator=None):
    """The oracle: one request, no padding, one token at a time (the rollout's sampler before batching)."""
    eos = set(eos_token_ids)
    out = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :].float()
    tokens, log_probs, finish = [], [], "length"
    for _ in range(max_new_tokens):
        scaled = logits / temperature if temperature > 0 else logits
        if temperature > 0:
            probs = torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator).item())
        else:
            token = int(torch.argmax(logits, dim=-1).item())
        log_probs.append(float(torch.log_softmax(scaled, dim=-1)[0, token].item()))
        tokens.append(token)
        if token in eos:
            finish = "stop"
            break
        out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :].float()
    return tokens, log_probs, finish


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from erpo_verl.toy.assets import build_model, build_tokenizer

    folder = tmp_path_factory.mktemp("toy")
    build_model(folder, build_tokenizer(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa").eval()
    return folder, model


def _prompts(model, count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 20, (count,), generator=gen)
    return [torch.randint(3, model.config.vocab_size, (int(n),), generator=gen).tolist() for n in lengths]


def test_a_left_padded_batch_samples_the_same_tokens_as_one_request_at_a_time(toy_model):
    _, model = toy_model
    eos = [model.generation_config.eos_token_id]
    prompts = _prompts(model, 12)
    # mixed settings and budgets in one batch: each row follows its own
    settings = [(1.0, 1.0, -1), (0.7, 0.9, -1), (1.3, 1.0, 5), (0.0, 1.0, -1)] * 3
    budgets = [16, 3, 9, 1] * 3
    single = [sample_response(model, p, b, temperature=t, top_p=tp, top_k=k, eos_token_ids=eos,
                              generator=torch.Generator().manual_seed(i))
              for i, (p, b, (t, tp, k)) in enumerate(zip(prompts, budgets, settings))]
    batch = sample_batch(model, [SampleRequest(p, b, t, tp, k, torch.Generator().manual_seed(i))
                                 for i, (p, b, (t, tp, k)) in enumerate(zip(prompts, budgets, settings))], eos)
    assert [row[0] for row in batch] == [row[0] for row in single]  # tokens
    assert [row[2] for row in batch] == [row[2] for row in single]  # finish reasons
    assert all(len(row[0]) <= b for row, b in zip(batch, budgets))
    for (_, lp_b, _), (_, lp_s, _) in zip(batch, single):
        assert torch.allclose(torch.tensor(lp_b), torch.tensor(lp_s), atol=1e-5)
    assert any(row[2] == "length" for row in batch) and any(len(row[0]) > 3 for row in batch)


def test_a_batch_with_one_shared_setting_matches_per_row_sampling(toy_model):
    _, model = toy_model
    prompts = _prompts(model, 20, seed=1)
    single = [sample_response(model, p, 12, generator=torch.Generator().manual_seed(100 + i))
              for i, p in enumerate(prompts)]
    batch = sample_batch(model, [SampleRequest(p, 12, generator=torch.Generator().manual_seed(100 + i))
                                 for i, p in enumerate(prompts)])
    assert [row[0] for row in batch] == [row[0] for row in single]


def test_batch_sampling_rejects_bad_requests(toy_model):
    _, model = toy_model
    assert sample_batch(model, []) == []
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_batch(model, [SampleRequest([5], 0)])
    with pytest.raises(ValueError, match="prompt token"):
        sample_batch(model, [SampleRequest([], 4)])


def _server(folder, **config):
    from erpo_verl.integration.cpu.rollout import CPUHFServer

    settings = {"seed": 3, "full_determinism": True, "prompt_length": 32, "response_length": 8, "max_num_seqs": 256}
    settings.update(config)
    return CPUHFServer(SimpleNamespace(**settings), SimpleNamespace(local_path=str(folder), path=str(folder)), 0)


def test_the_server_batches_concurrent_requests_and_returns_what_serial_serving_returns(toy_model):
    folder, model = toy_model
    prompts = _prompts(model, 10, seed=2)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}

    async def serve(server, concurrent):
        await server.set_global_steps(1)
        if concurrent:
            return await asyncio.gather(*(server.generate(p, params, f"r{i}") for i, p in enumerate(prompts)))
        return [await server.generate(p, params, f"r{i}") for i, p in enumerate(prompts)]

    batched = _server(folder)
    together = asyncio.run(serve(batched, True))
    serial_server = _server(folder, max_num_seqs=1)
    serial = asyncio.run(serve(serial_server, False))
    assert batched.batch_sizes == [10]  # all ten in one forward pass per token
    assert serial_server.batch_sizes == [1] * 10
    assert [o.token_ids for o in together] == [o.token_ids for o in serial]
    assert all(len(o.log_probs) == len(o.token_ids) <= 8 for o in together)

    capped = _server(folder, max_num_seqs=4)
    asyncio.run(serve(capped, True))
    assert capped.batch_sizes == [4, 4, 2]


def test_a_failing_batch_fails_every_waiting_request_instead_of_hanging(toy_model):
    folder, _ = toy_model
    server = _server(folder)

    def broken(*args, **kwargs):
        raise RuntimeError("forward failed")

    server.model = broken

    async def serve():
        return await asyncio.gather(*(server.generate([5, 6], {"temperature": 1.0}, f"r{i}") for i in range(3)),
                                    return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(serve(), timeout=30))
    assert [type(r) for r in results] == [RuntimeError] * 3
