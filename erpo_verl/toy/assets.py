"""Offline builders for the tiny tokenizer, the tiny model and the toy dataset (seconds, no network)."""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# every character the prompts, the chat template and the responses can contain
ALPHABET = list(string.ascii_lowercase + string.digits + " \n.,:?!-")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DATA_SOURCE = "erpo_toy/digits"
MODEL_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    # head_dim = 64 / 2 = 32: vLLM's CPU attention accepts head sizes 32, 64, 80, ... only
    # (vllm/v1/attention/backends/cpu_attn.py); 2 query heads and 1 kv head keep the parameter count of 4/2.
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)


def _byte_level_symbol(ch: str) -> str:
    """GPT-2 byte-level alphabet: printable bytes stand for themselves, the others are shifted by 256."""
    (byte,) = ch.encode("utf-8")
    printable = (33 <= byte <= 126) or (161 <= byte <= 172) or (174 <= byte <= 255)
    if printable:
        return chr(byte)
    shifted = [b for b in range(256) if not ((33 <= b <= 126) or (161 <= b <= 172) or (174 <= b <= 255))]
    return chr(256 + shifted.index(byte))


def build_tokenizer(out_dir: str | Path):
    """A character-level tokenizer (~48 tokens) with a ChatML template; saved to ``out_dir``.

    It is a byte-level BPE with one token per character of :data:`ALPHABET` and no merges: transformers 5
    loads any ``model_type: qwen2`` folder with its own byte-level BPE pipeline (Qwen2Tokenizer), and this
    vocabulary tokenizes identically under that pipeline and under the saved ``tokenizer.json``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [_byte_level_symbol(c) for c in ALPHABET])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def build_model(out_dir: str | Path, tokenizer, seed: int = 0):
    """A randomly initialised 2-layer Qwen2 (~80k parameters) saved with its tokenizer to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_CONFIG,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return model


PROMPT_TEMPLATES = [
    "write {n} digits.",
    "give me a number with {n} digits.",
    "answer with digits only, {n} of them.",
    "reply using {n} digits, no words.",
]


def toy_rows(num: int, split: str, seed: int) -> list[dict]:
    """Rows of the "digits" task in verl's parquet schema."""
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for index in range(num):
        n = rng.randint(3, 9)
        question = rng.choice(PROMPT_TEMPLATES).format(n=n)
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": question}],
                "ability": "toy",
                "reward_model": {"style": "rule", "ground_truth": str(n)},
                "extra_info": {"split": split, "index": index, "question": question},
            }
        )
    return rows


def build_dataset(out_dir: str | Path, num_train: int = 256, num_val: int = 32, seed: int = 0) -> dict[str, Path]:
    """Write ``train.parquet`` and ``val.parquet`` of the toy task to ``out_dir``.

    Written with the data-prep writer (schema validation, atomic write, read-back check); the prompts are
    the toy's own (lowercase, no answer-format instruction), since the tiny tokenizer only knows a-z, 0-9.
    """
    from data_prep.io import write_verl_parquet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        split: write_verl_parquet(toy_rows(num, split, seed), out / f"{split}.parquet", overwrite=True)
        for split, num in (("train", num_train), ("val", num_val))
    }


def build_all(root: str | Path, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Build model (with tokenizer) and data under ``root``; reuse them when already built."""
    root = Path(root)
    model_dir, data_dir = root / "tiny_qwen2", root / "data"
    stamp = root / "assets.json"
    wanted = {"seed": seed, "model": MODEL_CONFIG, "alphabet": "".join(ALPHABET), "version": 3}
    if not force and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return {"model": model_dir, "train": data_dir / "train.parquet", "val": data_dir / "val.parquet"}
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(model_dir)
    build_model(model_dir, tokenizer, seed=seed)
    paths = build_dataset(data_dir, seed=seed)
    stamp.write_text(json.dumps(wanted))
    return {"model": model_dir, **paths}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="erpo-verl assets", description="Build the offline tiny model, tokenizer and toy dataset."
    )
    parser.add_argument("--out", default="outputs/assets", help="folder to write into (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args(argv)
    paths = build_all(args.out, seed=args.seed, force=args.force)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
