"""Supervised fine-tuning on full solution traces (teacher forcing): the warm start of an RL run.

The embedded experiment's base policy is made this way (tools/make_base_policy.py), and a real user
warm-starts a model on traces before RL with ``config.mode = "sft"``. Sequences are
``prompt + target + EOS``, right-padded to a fixed length; only target and EOS tokens are in the loss.
With ``hint_prob > 0`` some prompts carry a random prefix of the trace as an in-prompt hint, so the
model knows the hinted format before GHPO ever shows it one.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxghpo import loop, models, paths
from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates
from jaxghpo.data.example import Example


@dataclasses.dataclass
class SFTBatch:
  tokens_BxT: np.ndarray     # int32, right-padded with pad_id
  loss_mask_BxT: np.ndarray  # float32, 1 where tokens[:, t] is a target token (predicted from t-1)
  valid_BxT: np.ndarray      # bool, 1 on real tokens


def encode_examples(examples: Sequence[Example], tokenizer, *, max_len: int, rng: np.random.Generator,
                    hint_prob: float = 0.0, placement: str = "prompt", style: str = "plain",
                    hint_unit: str = "steps", max_remaining: int | None = None) -> SFTBatch:
  """Teacher-forcing rows: prompt (optionally with a random hint of whole steps) + target + EOS.

  hint_prob: chance that a row gets a hint of 1..n_steps-1 whole steps (uniform).
  max_remaining: when set, a problem with more steps than this always gets a hint that leaves the
    model at most this many steps to write (the "finish a long chain" skill without "start one").
  """
  pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
  B = len(examples)
  tokens = np.full((B, max_len), pad_id, np.int32)
  loss = np.zeros((B, max_len), np.float32)
  valid = np.zeros((B, max_len), bool)
  for i, ex in enumerate(examples):
    hint = ""
    min_hint = 0 if max_remaining is None else max(0, len(ex.steps) - int(max_remaining))
    if min_hint > 0 or (hint_prob > 0 and len(ex.steps) > 1 and rng.random() < hint_prob):
      n = int(rng.integers(max(1, min_hint), len(ex.steps)))  # never the answer step
      hint = hints_lib.cut(ex.steps, n / len(ex.steps) + 1e-9, hint_unit, tokenizer=tokenizer,
                           step_sep=ex.step_sep)
    rendered = templates.render(ex, hint, placement, tokenizer, style)
    target = templates.target_text(ex, hint, placement, style, prompt_text=rendered.prompt_text)
    target_ids = list(rendered.hint_ids) + tokenizer.encode(target, add_special_tokens=False) + [eos_id]
    prompt_ids = list(rendered.prompt_ids)
    n = len(prompt_ids) + len(target_ids)
    if n > max_len:
      raise ValueError(f"problem {ex.problem_id} needs {n} tokens (prompt {len(prompt_ids)} + target "
                       f"{len(target_ids)}) but max_len={max_len}; raise config.sft.max_len")
    tokens[i, :n] = prompt_ids + target_ids
    valid[i, :n] = True
    # Hint tokens of the response placement are forced context, not targets.
    loss[i, len(prompt_ids) + len(rendered.hint_ids):n] = 1.0
  return SFTBatch(tokens, loss, valid)


def sft_loss(model: models.Transformer, tokens_BxT, loss_mask_BxT, valid_BxT):
  """(mean cross-entropy over target tokens, number of target tokens)."""
  logits = models.logits_padded(model, tokens_BxT, valid_BxT)[:, :-1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
  mask = loss_mask_BxT[:, 1:]
  count = jnp.maximum(mask.sum(), 1.0)
  return (nll * mask).sum() / count, count


def make_sft_step(graphdef, optimizer: optax.GradientTransformation):
  """A jitted (params, opt_state, tokens, loss_mask, valid) -> (params, opt_state, loss)."""

  def step(params, opt_state, tokens, loss_mask, valid):
    def loss_fn(p):
      return sft_loss(nnx.merge(graphdef, p), tokens, loss_mask, valid)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass
class SFTHost:
  """SFT's host state: the RNG of hint draws (batches themselves are a function of the step)."""
  rng: np.random.Generator
  budget_tokens_total: int = 0  # no token budget in SFT (hooks.Stopping reads it)

  def state_dict(self) -> dict:
    return {"rng": json.dumps(self.rng.bit_generator.state)}

  def load_state_dict(self, host: dict) -> None:
    self.rng.bit_generator.state = json.loads(str(host["rng"]))


@dataclasses.dataclass
class SFTSetup:
  """What the loop and the SFT step read (the loop's export: graphdef, model_cfg, tokenizer)."""
  graphdef: object
  model_cfg: object
  tokenizer: object
  step_fn: object  # make_sft_step
  draw: object  # (step, levels) -> examples
  levels: list
  hinted: list
  hinted_len: int
  problems: object = None  # no data report: SFT draws from the task (or the files' training rows)


def build(config):
  """(SFTSetup, params, opt_state) of ``config.mode = "sft"``.

  The model comes from config.model.path (HF dir or builtin:NAME), or is built at random from
  config.sft.random_model (a dict of ModelConfig fields) when config.model.path is "random"."""
  from jaxghpo import derived, experiment
  from jaxghpo.data import tokenizer as tok_lib
  from jaxghpo.data.tasks import get_task

  c = config.sft
  if config.model.path == "random":
    tokenizer = tok_lib.load(config.model.tokenizer or tok_lib.task_tokenizer_path(config.data.task))
    fields = dict(c.random_model)
    cfg = models.ModelConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **fields)
    model = models.init_model(cfg, seed=derived.seed(config, "policy_init"))
  else:
    mesh = experiment.make_mesh(config)
    model, cfg, tokenizer = experiment.load_policy(config, mesh)
  levels = [int(x) for x in c.levels]
  # Levels seen only with a hint that leaves at most c.max_remaining steps: every other batch, in a
  # second fixed shape long enough for the longest of them (the task knows its lengths).
  hinted = [int(x) for x in c.get("hinted_levels", ())] if config.data.source == "task" else []
  hinted_len = 0
  if config.data.source == "task":
    task = get_task(config.data.task)
    draw = lambda step, lv: task.generate("train", int(c.batch_size), derived.seed(config, "sft") * 1_000_003 + step,
                                          levels=lv)
    if hinted:
      hinted_len = max(task.problem_len(l) + task.solution_len(l) + 3 for l in hinted)
      hinted_len = -(-hinted_len // 8) * 8
  else:
    problems = experiment.load_problems(config).train
    order = np.random.default_rng(derived.seed(config, "data_order")).permutation(len(problems))
    draw = lambda step, lv: [problems[order[(step * int(c.batch_size) + i) % len(problems)]]
                             for i in range(int(c.batch_size))]
  steps = int(config.num_steps)
  lr = float(c.learning_rate)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, min(200, steps // 10)), steps, lr * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b2=0.98, weight_decay=0.01))
  graphdef, params = nnx.split(model)
  opt_state = optimizer.init(params)
  setup = SFTSetup(graphdef, cfg, tokenizer, make_sft_step(graphdef, optimizer), draw, levels, hinted, hinted_len)
  return setup, params, opt_state


class SFTTrainer(loop.Loop):
  """Supervised training on the RL loop (jaxghpo/loop.py): checkpoints and resume (params, optimizer state, the
  hint RNG), metrics a step late, SIGTERM / SIGINT at step boundaries, export from process 0. No evaluation."""

  evaluates = False

  def __init__(self, config, workdir: str, allow_config_change: bool = False):
    from jaxghpo import derived, hooks, validation
    from jaxghpo.checkpoint import abstract_target
    from jaxghpo.train_state import TrainState

    self.config, self.workdir, self.allow_config_change = config, workdir, allow_config_change
    validation.check_workdir(workdir)
    self.setup, params, opt_state = build(config)
    self.state = TrainState(params, opt_state, SFTHost(np.random.default_rng(derived.seed(config, "sft"))))
    self.checkpoints = hooks.Checkpoints(config, workdir, self.setup, abstract=lambda state: (
        abstract_target(state.params), abstract_target(state.opt_state)))
    self.stopping = hooks.Stopping(config)
    self._t0 = time.time()

  def step(self, step: int) -> tuple[dict, dict]:
    """One supervised batch: hinted levels every other step (config.sft.hinted_levels), else config.sft.levels."""
    c, s, state = self.config.sft, self.setup, self.state
    fmt = dict(placement=self.config.hints.placement, style=self.config.data.style, hint_unit=self.config.hints.unit)
    number = step + 1  # batches count from 1 (a batch's problems are a function of it)
    hinted_batch = bool(s.hinted) and number % 2 == 0
    if hinted_batch:
      b = encode_examples(s.draw(number, s.hinted), s.tokenizer, max_len=s.hinted_len, rng=state.host.rng,
                          max_remaining=int(c.max_remaining), **fmt)
    else:
      b = encode_examples(s.draw(number, s.levels), s.tokenizer, max_len=int(c.max_len), rng=state.host.rng,
                          hint_prob=float(c.hint_prob), **fmt)
    state.params, state.opt_state, loss = s.step_fn(state.params, state.opt_state, b.tokens_BxT, b.loss_mask_BxT,
                                                    b.valid_BxT)
    return ({"hinted_batch": hinted_batch, "seq_len": int(b.tokens_BxT.shape[1]),
             "time/elapsed_s": time.time() - self._t0}, {"loss": loss})


def run(config, workdir: str, allow_config_change: bool = False) -> dict:
  """``config.mode = "sft"``: teacher-forced training on full traces of the configured problems, on the RL loop
  (jaxghpo/loop.py): DIR/metrics.jsonl (step, loss, ...), DIR/checkpoints (a rerun resumes), DIR/export."""
  trainer = SFTTrainer(config, workdir, allow_config_change)
  summary = trainer.run()
  loss = None
  rows = [json.loads(line) for line in paths.read_text(paths.join(workdir, "metrics.jsonl")).splitlines() if line]
  if rows:
    loss = rows[-1].get("loss")
  out = paths.join(workdir, "export")
  return {**summary, "export": out, "loss": loss, "time_s": time.time() - trainer._t0,  # noqa: SLF001
          "stop_reason": trainer.stop_reason}
