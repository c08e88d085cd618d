"""The offline toy task used by the CPU end-to-end runs, the demo and the learning benchmark.

* a character-level tokenizer with a ChatML chat template (:func:`assets.build_tokenizer`),
* a randomly initialised tiny Qwen2 model (:func:`assets.build_model`),
* the "digits" task written as verl parquet (:func:`assets.build_dataset`), scored by the rule reward
  :func:`reward.compute_score` (``reward.custom_reward_function.path=pkg://erpo_verl.toy.reward``).

Everything is built in seconds with no network; :func:`assets.build_all` makes the lot in one folder.
"""
