"""The range of every numeric config key, in one table, and the one pass that checks a config against it.

    check_ranges(config)                   every numeric leaf of an experiment config that the table names
    check_ranges(config.rl, prefix="rl.")  one section alone (rl.resolve_config, curriculum.resolve_config)
    check_workdir("runs/x")                the workdir is a directory this process can write (one-line error)

A key's entry is a `Range` (bounds, open or closed, whole numbers or not, the config modes it applies
to, what the value means). Keys with "*" take any name at that level (data.task_configs.NAME.train_levels.4). Checks that
relate keys (eval.num_samples <= rollout.group_size, target_low < target_high) and choices from a list
stay with their modules; tests/test_validation.py checks that every numeric key of configs/base.py and of
the module configs has an entry here.

Every error is a StartupError (a ValueError): `python -m jaxghpo.main` prints its message as one line,
without a traceback, and exits 2.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import os


class StartupError(ValueError):
  """A run cannot start as configured; the message names the key or path at fault and the mend."""


@dataclasses.dataclass(frozen=True)
class Range:
  """lo <= value <= hi (lo_open / hi_open: strict); `whole`: an integer; `modes`: the config.mode values the
  entry applies to (empty: all); `note`: what the value means, said after the range in an error."""
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  whole: bool = False
  modes: tuple = ()
  note: str = ""

  def contains(self, value) -> bool:
    if not math.isfinite(value) or (self.whole and value != int(value)):
      return False
    if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
      return False
    if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
      return False
    return True

  def text(self) -> str:
    """"in [0, 1)", ">= 1", "> 0", "a finite number"."""
    fmt = lambda x: f"{x:g}" if not isinstance(x, int) or abs(x) < 10**6 else f"2**{int(math.log2(x))}"  # noqa: E731
    if self.lo is not None and self.hi is not None:
      return f"in {'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}{')' if self.hi_open else ']'}"
    if self.lo is not None:
      return f"{'>' if self.lo_open else '>='} {fmt(self.lo)}"
    if self.hi is not None:
      return f"{'<' if self.hi_open else '<='} {fmt(self.hi)}"
    return "a finite number"


def _n(lo, note="", **kw) -> Range:  # a whole number >= lo
  return Range(lo=lo, whole=True, note=note, **kw)


def _unit(note="", lo_open=False, hi_open=False) -> Range:  # in [0, 1]
  return Range(0.0, 1.0, lo_open=lo_open, hi_open=hi_open, note=note)


def _pos(note="") -> Range:  # > 0
  return Range(lo=0.0, lo_open=True, note=note)


def _nonneg(note="") -> Range:  # >= 0
  return Range(lo=0.0, note=note)


# Dotted key of an experiment config -> its range. One entry per numeric key (booleans are not numbers here).
RANGES: dict[str, Range] = {
    # the run
    "seed": Range(0, 2**32, hi_open=True, whole=True, note="the data shuffle's seed"),
    "num_steps": _n(1),
    "max_gen_tokens": _n(0, "0: no token budget; > 0: stop once this many tokens were generated"),
    "checkpoint_every_steps": _n(1),
    "keep_checkpoints": _n(1),
    "max_skipped_updates_in_a_row": _n(0, "0: never stop"),
    "log_every_steps": _n(1),
    "eval_every_steps": _n(0, "0: at the start and end only"),
    # data
    "data.task_configs.*.num_train": _n(1),
    "data.prompts_per_step": _n(1),
    "data.task_configs.*.train_levels.*": _nonneg("a level's sampling weight"),
    # a task's named sets of levels (easy_levels, hard_levels, exact_levels, ...; tuples, one entry per level)
    "data.task_configs.*.*_levels.*": _n(0, "a level"),
    "sft.levels.*": _n(1, "a level"),
    "sft.hinted_levels.*": _n(1, "a level"),
    # rollout
    "rollout.group_size": _n(2, "group-relative advantages need at least 2 samples", modes=("rl",)),
    "rollout.max_prompt_len": _n(1),
    "rollout.max_new_tokens": _n(1),
    "rollout.temperature": _nonneg(),
    "rollout.top_p": Range(0.0, 1.0, lo_open=True, note="1: no nucleus filter"),
    "rollout.top_k": _n(0, "0: no top-k filter"),
    "rollout.tip_penalty": _nonneg("logit units; 0: off"),
    "rollout.tip_window": _n(1, "tokens"),
    # rewards
    "rewards.weights.*": Range(note="a reward kind's weight"),
    "rewards.deadline_s": _pos("seconds a reward item may take"),
    "rewards.num_workers": _n(0, "0: the default count"),
    # rl (rl/config.py)
    "rl.adv_eps": _nonneg(),
    "rl.clip_low": _unit(hi_open=True),
    "rl.clip_high": _nonneg(),
    "rl.clip_c": Range(lo=1.0, lo_open=True, note="dual clip bound for negative advantages"),
    "rl.kl_coef": _nonneg("0: no KL term"),
    "rl.entropy_coef": Range(note="< 0 penalises entropy"),
    "rl.loss_norm_len": _n(0, "0: the batch's response length"),
    "rl.hint_nll_coef": _nonneg(),
    "rl.temperature": _pos("greedy sampling has no logprob ratio; train at the sampling temperature"),
    "rl.micro_batches": _n(1, "1: the whole batch at once"),
    "rl.ppo_epochs": _n(1),
    "rl.logprob_chunk_tokens": _n(0, "0: the whole micro-batch at once"),
    "rl.learning_rate": _nonneg(),
    "rl.warmup_steps": _n(0),
    "rl.end_lr_ratio": _unit(),
    "rl.weight_decay": _nonneg(),
    "rl.b1": _unit("Adam's first-moment decay", hi_open=True),
    "rl.b2": _unit("Adam's second-moment decay", hi_open=True),
    "rl.adam_eps": _pos("Adam's denominator guard; 0 divides 0 by 0 where a gradient is 0"),
    "rl.max_grad_norm": _nonneg("0: no clipping"),
    # curriculum (curriculum/config.py)
    "curriculum.seed": _n(0),
    "curriculum.total_steps": _n(0),
    "curriculum.difficulty_threshold": Range(note="an accuracy reward above it is a success"),
    "curriculum.cold_start_steps": _n(0),
    "curriculum.filter_refill": _n(0, "the most refill rounds per step"),
    "curriculum.initial_ratio": _unit(),
    "curriculum.target_low": _unit(),
    "curriculum.target_high": _unit(),
    "curriculum.ratio_step_up": _unit(),
    "curriculum.ratio_step_down": _unit(),
    "curriculum.ratio_grid": _unit("1 / ratio_grid must be an integer", lo_open=True),
    "curriculum.max_ratio": _unit(),
    "curriculum.anneal_start_ratio": _unit(),
    "curriculum.anneal_steps": _n(0, "0: curriculum.total_steps"),
    "curriculum.anneal_draw_n": _n(1),
    "curriculum.ema_decay": _unit(hi_open=True),
    "curriculum.prior_alpha": _pos(),
    "curriculum.prior_beta": _pos(),
    "curriculum.posterior_decay": _unit(),
    "curriculum.max_problems": _n(1),
    "curriculum.max_levels": _n(1),
    "curriculum.ladder.*": _unit(lo_open=True),
    # evaluation
    "eval.num_problems": _n(1),
    "eval.num_samples": _n(1),
    "eval.max_prompt_len": _n(0, "0: the rollout's value"),
    "eval.max_new_tokens": _n(0, "0: the rollout's value"),
    "eval.deepconf.warmup_traces": _n(1),
    "eval.deepconf.window": _n(1, "tokens"),
    "eval.deepconf.percentile": Range(0.0, 100.0),
    "evals.*.hint_ratio": _unit(),
    "evals.*.temperature": _nonneg(note="0: greedy"),
    "evals.*.samples": _n(0, "0: eval.num_samples"),
    "evals.*.every": _n(0, "0: eval_every_steps"),
    # sft
    "sft.batch_size": _n(1),
    "sft.max_remaining": _n(0),
    "sft.hint_prob": _unit(),
    "sft.max_len": _n(1),
    "sft.learning_rate": _nonneg(),
    "sft.random_model.vocab_size": _n(1),
    "sft.random_model.hidden_size": _n(1),
    "sft.random_model.intermediate_size": _n(1),
    "sft.random_model.num_layers": _n(1),
    "sft.random_model.num_heads": _n(1),
    "sft.random_model.num_kv_heads": _n(1),
    "sft.random_model.head_dim": _n(1),
    "sft.random_model.rope_theta": _pos(),
    "sft.random_model.max_position_embeddings": _n(1),
}


def range_of(key: str) -> Range | None:
  """The table's entry for a dotted key (exact first, then a "*" pattern), or None."""
  if key in RANGES:
    return RANGES[key]
  for pattern, rng in RANGES.items():
    if "*" in pattern and fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
      return rng
  return None


def numeric_leaves(c, prefix: str = ""):
  """(dotted key, value) of every int or float leaf (not bool) of a ConfigDict or dict; tuple items as KEY.i."""
  for key, value in c.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from numeric_leaves(value, name + ".")
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          yield f"{name}.{i}", v
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield name, value


def message(key: str, value, rng: Range) -> str:
  """"config.rl.b2=1.5: must be in [0, 1) (Adam's second-moment decay)"."""
  shown = f"{value!r}" if not isinstance(value, float) or math.isfinite(value) else f"{value}"
  kind = "a whole number " if rng.whole and math.isfinite(value) and value != int(value) else ""
  return f"config.{key}={shown}: must be {kind}{rng.text()}" + (f" ({rng.note})" if rng.note else "")


def check_ranges(config, prefix: str = "", mode: str | None = None) -> None:
  """Raises StartupError naming the first numeric key out of its range (keys without an entry pass).

  `prefix`: the section's dotted place when `config` is one section ("rl."); `mode`: config.mode
  (default: the config's own, "rl" for a section)."""
  if mode is None:
    mode = config.get("mode", "rl") if not prefix else "rl"
  for key, value in numeric_leaves(config, prefix):
    rng = range_of(key)
    if rng is None or (rng.modes and mode not in rng.modes):
      continue
    if not rng.contains(float(value)):
      raise StartupError(message(key, value, rng))


# ------------------------------------------------------------------------------------------ workdir
def check_workdir(workdir: str) -> None:
  """The workdir exists or can be made, is a directory, and takes a file (local paths; a remote URI is
  only made). Raises StartupError with one line naming --workdir and the cause."""
  from jaxghpo import paths
  if not str(workdir).strip():
    raise StartupError("--workdir is empty; give a directory for metrics.jsonl, checkpoints/ and eval/")
  if paths.is_remote(workdir):
    with startup_errors(f"--workdir={workdir}"):
      paths.makedirs(workdir)
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise StartupError(f"--workdir={workdir} is a file, not a directory; give a directory (it is made if missing)")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise StartupError(f"--workdir={workdir} cannot be written: {e.strerror or e} ({type(e).__name__}); give a "
                       "directory this user can write") from e


@contextlib.contextmanager
def startup_errors(what: str = ""):
  """Turns a ValueError / OSError raised inside into a StartupError with the same message (`what: ` first)."""
  try:
    yield
  except StartupError:
    raise
  except (ValueError, OSError) as e:
    text = str(e) if not isinstance(e, OSError) or not e.strerror else f"{e.strerror}: {e.filename}"
    raise StartupError(f"{what}: {text}" if what else text) from e


def one_line(error: BaseException) -> str:
  """The message a person reads: the error's text on one line."""
  return " ".join(str(error).split())
