"""config.mode = "sft": teacher-forced training on traces, with the hinted-only levels of the base-policy recipe."""
import json
import os

import jax
import numpy as np
import pytest

from jaxghpo import models, sft
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.tasks import chains
from tests.train_fixtures import tiny_config


def test_encode_with_max_remaining_always_hints_long_problems():
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  examples = chains.generate("train", 32, 0, levels=[6])
  b = sft.encode_examples(examples, tok, max_len=96, rng=np.random.default_rng(0), max_remaining=2)
  marker = tok.convert_tokens_to_ids(tok_lib.HINT_MARKER)
  for ex, row, mask in zip(examples, b.tokens_BxT, b.loss_mask_BxT):
    assert marker in row.tolist()  # every level-6 problem got a hint
    written = tok.decode(row[mask > 0].tolist()[:-1])  # targets without the EOS
    assert 1 <= written.count(";") + 1 <= 2, written  # at most 2 steps left to write


def test_sft_run_alternates_hinted_batches_and_exports(tmp_path):
  config = _sft_config()
  config.log_every_steps = 1
  config.sft.hinted_levels = (4,)
  config.sft.max_remaining = 2
  out = sft.run(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
  # Every other batch holds level-4 problems, hinted, in the longer shape that the task's lengths give.
  assert [r["hinted_batch"] for r in rows] == [False, True, False, True]
  assert [r["seq_len"] for r in rows] == [24, 48, 24, 48]  # level 4: 10 + 35 tokens + BOS, marker, EOS
  model, cfg = models.from_pretrained(out["export"])
  assert cfg.num_layers == 1 and os.path.isfile(os.path.join(out["export"], "tokenizer.json"))


def _sft_config():
  config = tiny_config("random")
  config.mode = "sft"
  config.num_steps = 4
  config.checkpoint_every_steps = 2
  config.sft.batch_size = 8
  config.sft.levels = (1, 2)
  config.sft.hinted_levels = ()
  config.sft.hint_prob = 0.5  # the hint RNG is part of the resumed state
  config.sft.max_len = 24
  config.sft.random_model = dict(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64,
                                 num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16,
                                 tie_word_embeddings=True, attention_bias=True)
  return config


def test_sft_on_the_loop_resumes_exactly_after_a_crash(tmp_path, monkeypatch):
  """SFT runs on the RL loop: a run that dies after its step-2 checkpoint resumes (params, optimizer, hint RNG)
  and ends with the same losses and weights as a run that never stopped."""
  straight = sft.run(_sft_config(), str(tmp_path / "straight"))
  step = sft.SFTTrainer.step

  def dies_at_step_3(self, i):
    if i == 2:
      raise RuntimeError("killed")
    return step(self, i)

  monkeypatch.setattr(sft.SFTTrainer, "step", dies_at_step_3)
  with pytest.raises(RuntimeError, match="killed"):
    sft.run(_sft_config(), str(tmp_path / "crashed"))
  monkeypatch.setattr(sft.SFTTrainer, "step", step)
  resumed = sft.run(_sft_config(), str(tmp_path / "crashed"))
  loss = lambda d: [json.loads(l)["loss"] for l in open(tmp_path / d / "metrics.jsonl")]
  assert loss("crashed") == loss("straight") and len(loss("straight")) == 4
  assert resumed["loss"] == straight["loss"]
  a, _ = models.from_pretrained(straight["export"])
  b, _ = models.from_pretrained(resumed["export"])
  from flax import nnx
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
