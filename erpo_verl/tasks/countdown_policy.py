"""The warm-started policy of the countdown benchmark: a tiny Qwen2 and its tokenizer, SFT on CPU, pass@k check.

* :func:`build_tokenizer` - a character-level tokenizer (~50 tokens: a-z, 0-9, ``+-*/=,`` space, newline) with a
  ChatML template, built offline like the toy task's (same byte-level construction, so transformers' Qwen2
  tokenizer pipeline and the saved ``tokenizer.json`` agree);
* :func:`train_sft` - a plain PyTorch loop (AdamW, cosine schedule, loss on the response tokens only) on
  generated solutions of the training split: each step draws prompts and, for each, one of its correct
  solutions at random (uniform over distinct solutions, then over the ways to write it), so the policy learns
  a *distribution* over answers, not one answer per prompt. Seeded; about a minute for the default setting.
  verl's SFT trainer is not used: see docs/benchmarks.md ("Why a plain PyTorch SFT loop").
* :func:`sample_pass_at_k` - HF ``generate`` sampling (temperature 1, no top-k/top-p, like the RL rollout)
  of ``k`` responses per test prompt, scored by the task's reward; returns avg@k (pass@1) and unbiased pass@k.
* :func:`build_policy` - all of it, cached under a folder keyed by a hash of every setting.

No verl import: this module runs before any trainer does.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from erpo_verl.tasks import countdown
from erpo_verl.toy.assets import CHAT_TEMPLATE, SPECIAL_TOKENS, _byte_level_symbol

ALPHABET = list(string.ascii_lowercase + string.digits + " \n+-*/=,")
MODEL_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 32: vLLM's CPU attention serves head sizes 32, 64, 80, ...
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=True,
)
POLICY_VERSION = 1  # bump when the code below changes what a cached policy contains


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0


def build_tokenizer(out_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [_byte_level_symbol(c) for c in ALPHABET])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=None, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token=None,
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _new_model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **MODEL_CONFIG)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=True)
    return model


def chat_prompt(tokenizer, numbers, target) -> str:
    """The prompt exactly as verl renders it (chat template, generation prompt)."""
    messages = [{"role": "user", "content": countdown.prompt_text(numbers, target)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _sft_batch(tokenizer, problems, rng: random.Random, batch_size: int):
    import torch

    ids, labels = [], []
    for numbers, target, sols in (rng.choice(problems) for _ in range(batch_size)):
        canonical = rng.choice(sorted(sols))
        response = rng.choice(sorted(sols[canonical]))
        prompt_ids = tokenizer.encode(chat_prompt(tokenizer, numbers, target), add_special_tokens=False)
        response_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
        ids.append(prompt_ids + response_ids)
        labels.append([-100] * len(prompt_ids) + response_ids)
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    label_ids = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
    attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, attention, label_ids


def train_sft(out_dir, train_problems, config: SFTConfig = SFTConfig(), log=print, save_at=()) -> dict:
    """SFT the tiny Qwen2 on solutions of ``train_problems``; saves model + tokenizer to ``out_dir``.

    ``save_at``: extra step counts at which a copy is saved to ``out_dir/step<k>`` (for tuning the SFT length).
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    model = _new_model(tokenizer, config.seed)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))

    def lr_at(step):
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    rng = random.Random(f"sft-{config.seed}")
    start, losses = time.time(), []
    for step in range(config.steps):
        input_ids, attention, labels = _sft_batch(tokenizer, train_problems, rng, config.batch_size)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            log(f"  sft step {step + 1}/{config.steps}  loss {sum(losses[-100:]) / len(losses[-100:]):.3f}"
                f"  {time.time() - start:.0f}s")
        if step + 1 in save_at:
            model.save_pretrained(str(out / f"step{step + 1}"))
            tokenizer.save_pretrained(str(out / f"step{step + 1}"))
    model.save_pretrained(str(out))
    return {"seconds": time.time() - start, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "parameters": sum(p.numel() for p in model.parameters())}


def sample_pass_at_k(model_dir, problems, k: int = 16, max_new_tokens: int = 32, seed: int = 0,
                     batch_prompts: int = 16) -> dict:
    """Sample ``k`` responses per problem (temperature 1) and score them: avg@k and unbiased pass@k."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from erpo_verl.eval.metrics import pass_at_k

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()
    torch.manual_seed(seed)
    correct_counts, start = [], time.time()
    for lo in range(0, len(problems), batch_prompts):
        chunk = problems[lo:lo + batch_prompts]
        texts = [chat_prompt(tokenizer, numbers, target) for numbers, target, _ in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=k,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        outs = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
        for i, (numbers, target, _) in enumerate(chunk):
            gt = countdown.format_ground_truth(numbers, target)
            scores = [countdown.compute_score(countdown.DATA_SOURCE, o, gt)["acc"] for o in outs[i * k:(i + 1) * k]]
            correct_counts.append(sum(scores))
    pass1 = sum(c / k for c in correct_counts) / len(correct_counts)
    passk = sum(pass_at_k(k, c, k) for c in correct_counts) / len(correct_counts)
    return {"k": k, "prompts": len(problems), "pass@1": pass1, f"pass@{k}": passk,
            "correct_per_prompt": correct_counts, "seconds": time.time() - start}


def problems_digest(problems) -> str:
    """Hash of the (numbers, target) pairs in order: the SFT data is a function of exactly these."""
    pairs = [[list(numbers), int(target)] for numbers, target, *_ in problems]
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def policy_key(task: dict, sft: dict, train_digest: str, data_seed: int) -> str:
    # keyed by the training problems themselves, not their count: the train split also depends on the test
    # split drawn before it (a bigger test split removes other problems from the training pool)
    blob = json.dumps({"task": task, "sft": sft, "model": MODEL_CONFIG, "alphabet": "".join(ALPHABET),
                       "train": train_digest, "data_seed": data_seed, "version": POLICY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_policy(cache_root, train_problems, task_config: countdown.CountdownConfig, sft: SFTConfig,
                 data_seed: int, log=print) -> tuple[Path, dict]:
    """The SFT policy for these settings: reused from ``cache_root/sft-<hash>`` when present, else trained."""
    key = policy_key(asdict(task_config), asdict(sft), problems_digest(train_problems), data_seed)
    folder = Path(cache_root) / f"sft-{key}"
    stamp = folder / "sft.json"
    if stamp.exists():
        log(f"reusing the SFT policy in {folder}")
        return folder, json.loads(stamp.read_text())
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    log(f"SFT of the tiny Qwen2 ({sft.steps} steps x {sft.batch_size}) into {folder}")
    info = train_sft(tmp, train_problems, sft, log=log)
    info.update({"key": key, "task": asdict(task_config), "sft": asdict(sft), "model": MODEL_CONFIG})
    (tmp / "sft.json").write_text(json.dumps(info, indent=2))
    tmp.rename(folder)  # atomic: a half-trained policy is never reused
    return folder, info
