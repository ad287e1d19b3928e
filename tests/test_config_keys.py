"""Every leaf key of configs/base.py does something: it is read while a run starts and takes a step.

A key that nothing reads is a defect (a researcher sets it and gets the default behaviour without a
word). The test records ConfigDict reads (tests/config_reads.py) during:
  1. an RL run of one step (chains task, GHPO, evaluation before and after, checkpoint, export),
  2. an SFT run of two steps (config.mode="sft": the sft.* keys),
  3. what depends on a key's value rather than on the mode: the scheduler in every curriculum mode,
     the loss with a KL term and Dr. GRPO's length norm, each learning-rate schedule, problems from
     files (config.data.source="files"), and the math-verify and format reward kinds.
Reads inside validators and copies do not count (config_reads.VALIDATORS). A canary key added to the
config before the runs must come back unread: that is the test's own check that it can fail.
"""
import json
import os

import numpy as np
import pytest

from configs import base
from jaxghpo import curriculum, derived, evaluation, experiment, rewards, rl, train
from jaxghpo.rl.config import LR_SCHEDULES
from tests import config_reads
from tests.train_fixtures import make_tiny_policy, tiny_config

CANARY = "rollout.never_read_canary"
TIP_LETTERS = ("a", "b", "c", "d", "e", "f")

# Keys read only by code that another change wires (an entry is removed once that code is merged).
PENDING = {}
# Keys exempt for good, with the reason.
EXEMPT = {}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


def _rl_config(policy):
  c = tiny_config(policy, num_steps=1, checkpoint_every_steps=1)
  c.evals.hinted = evaluation.evaluator_config(splits=("hard",), hint_ratio=0.5)  # a hinted evaluator too
  c.rollout[CANARY.split(".")[1]] = 1
  # TIP in evaluation, strong enough that the switch tokens can never be chosen there (checked below).
  c.rollout.tip_penalty, c.rollout.tip_window, c.rollout.tip_phrases = 1e4, 10**6, TIP_LETTERS
  c.rollout.tip_apply = "both"  # training rollouts too
  c.eval.deepconf.enabled, c.eval.deepconf.warmup_traces = True, 1  # beside the sampled evaluation (checked below)
  return c


def _sft_config():
  c = base.get_base_config()
  c.mode = "sft"
  c.model.path = "random"
  c.num_steps = 2  # step 2 is a hinted batch (sft.hinted_levels)
  c.log_every_steps = 1
  c.sft.batch_size = 4
  c.sft.levels = (1, 2)
  c.sft.hinted_levels = (3,)
  c.sft.random_model = dict(c.sft.random_model, hidden_size=32, intermediate_size=64, num_layers=1,
                            num_heads=2, num_kv_heads=2, head_dim=16)
  return c


def _exercise_value_dependent_keys(rec, tmp_path):
  """The parts of a run that read a key only for some values of another key (cheap, host-side)."""

  def config():
    c = base.get_base_config()
    rec.register(c, "")  # its reads count like the run's
    return c

  ids, levels = np.arange(8), np.arange(8) % 4
  rng = np.random.default_rng(0)
  for mode in curriculum.MODES:
    c = config()
    c.curriculum.mode, c.curriculum.anneal_random, c.curriculum.adaptive_retry = mode, True, True
    sched = curriculum.HintScheduler(derived.derive(c).curriculum)
    for step in range(3):
      ratios = sched.plan(ids, levels, step=step)
      acc = (rng.random((8, 4)) < 0.3).astype(np.float32)
      sched.retry(ids, ratios, acc)
      sched.keep_mask(acc)
      sched.update(ids, ratios, acc, levels, step=step)

  c = config()
  c.rl.kl_coef, c.rl.entropy_coef, c.rl.loss_agg = 0.1, 0.01, "seq-mean-token-sum-norm"
  cfg = derived.rl_config(c)
  logp = np.log(np.full((2, 3), 0.5, np.float32))
  rl.policy_loss(logp, logp, np.ones(2, np.float32), np.ones((2, 3), bool), cfg, logp, entropy=np.zeros((2, 3)))
  for schedule in LR_SCHEDULES:
    c.rl.lr_schedule = schedule
    rl.make_optimizer(derived.rl_config(c), 10)

  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps({"problem": "What is 1+1?", "solution": "1+1=2.\n\nSo $\\boxed{2}$.",
                              "answer": "2"}) + "\n")
  c = config()
  c.data.source, c.data.files = "files", (str(path),)
  experiment.load_problems(c)
  from jaxghpo.data import tasks
  tasks.task_for(c).hard_levels()  # the training metrics' */hard groups of a files run (rl_step.host_metrics)

  c = config()
  c.rewards.weights = {"math": 1.0, "format": 0.5, "exact": 1.0}
  c.rewards.accuracy = "math"
  rec.register(c, "")  # the new weights section
  rewards.combine(c.rewards, ["so \\boxed{2}", "3"], ["2", "2"])


def test_every_base_key_is_read(policy, tmp_path):
  rl_config, sft_config = _rl_config(policy), _sft_config()
  recorders = [config_reads.ReadRecorder(rl_config), config_reads.ReadRecorder(sft_config)]
  with recorders[0]:
    trainer = train.Trainer(rl_config, str(tmp_path / "rl"))
    rollout, trained = trainer.setup.rollout, []

    def recording_rollout(*args, **kwargs):
      groups = rollout(*args, **kwargs)
      trained.extend(str(t) for t in groups.completions.reshape(-1))
      return groups

    trainer.setup.rollout = recording_rollout
    summary = trainer.run()
    _exercise_value_dependent_keys(recorders[0], tmp_path)
  with recorders[1]:
    train.run(sft_config, str(tmp_path / "sft"))
  read = recorders[0].read | recorders[1].read
  # eval.deepconf acts: the sampled evaluation reports the online vote and its tokens beside the offline one.
  after = summary["eval_after"]
  for key in ("offline_vote_acc", "online_vote_acc", "online_tokens", "tokens_saved_frac", "traces_stopped_frac"):
    assert f"eval/easy/hint0/sampled/deepconf/{key}" in after, key
  assert not any("deepconf" in k for k in after if "/greedy/" in k)
  # The TIP keys act: evaluation and training never wrote a penalised token (a random policy writes each
  # letter often).
  eval_dir = tmp_path / "rl" / "eval"
  completions = [c for f in os.listdir(eval_dir) for line in open(eval_dir / f)
                 for c in json.loads(line)["completions"]]
  for kind, texts in (("evaluation", completions), ("training rollouts", trained)):
    text = "".join(texts)
    for special in ("<unk>", "<bos>", "<eos>", "<pad>"):  # the letters of special tokens' names are no letters
      text = text.replace(special, "")
    assert len(text) > 100 and not set(text) & set(TIP_LETTERS), f"TIP did not reach {kind}"
  exempt = set(PENDING) | set(EXEMPT)
  # Keys of the host loop, the memory savers and the embedded study, named so that losing one is loud.
  assert {"model.attention", "model.remat", "rl.logprob_chunk_tokens", "rl.hint_nll_coef", "arms",
          "data.task_configs.chains.mid_levels", "data.task_configs.chains.ood_ops_levels", "max_skipped_updates_in_a_row", "curriculum.ladder_kind",
          "curriculum.filter_refill"} <= read

  # The canary is caught: a key that nothing reads fails this test.
  assert config_reads.unread_keys(rl_config, read, exempt) == [CANARY], (
      "keys of configs/base.py that no code reads (wire, derive or delete them): "
      f"{[k for k in config_reads.unread_keys(rl_config, read, exempt) if k != CANARY]}")
  # Exemptions name keys that exist and are really unread (a stale exemption is removed).
  leaves = config_reads.leaf_paths(base.get_base_config())
  assert set(EXEMPT) <= leaves and set(PENDING) <= leaves
  stale = sorted(exempt & read)
  assert not stale, f"exempt or pending keys that are read now (remove them from EXEMPT / PENDING): {stale}"


def test_recorder_sees_reads_through_every_accessor():
  c = base.get_base_config()
  c.extra_a, c.extra_b = 1, 2
  with config_reads.ReadRecorder(c) as rec:
    _ = c.seed, c["num_steps"], c.get("mode"), dict(c.data.fields), c.rl.to_dict()
    for _ in c.rewards.weights.items():
      pass
    cfg = rl.resolve_config(c.rl)  # a copy: nothing read yet ...
    assert not any(p.startswith("rl.") for p in rec.read)
    _ = cfg.clip_low  # ... until the copy is read
  assert {"seed", "num_steps", "mode", "rl.clip_low", "rewards.weights.exact", "data.fields.problem"} <= rec.read
  unread = config_reads.unread_keys(c, rec.read)
  assert "extra_a" in unread and "extra_b" in unread and "rl.clip_high" in unread
  assert "extra_a" not in config_reads.unread_keys(c, rec.read, exempt=("extra_a",))
