"""Letter chains: the embedded procedural task (no download; ships with the package).

A problem shifts a start letter by a chain of single-digit offsets, mod 26:

  problem   k+3-5+2=                 start letter a-z, then `level` operations "+d" or "-d", d in 1..MAX_OFFSET
  steps     k+3=n-5+2 ; n-5=i+2 ; i+2=k
                                     step j restates the current letter and the leftmost operation,
                                     writes "=" and the new letter, then copies the remaining operations
                                     verbatim; the new letter of the last step is the answer
  solution  k+3=n-5+2;n-5=i+2;i+2=k  (Example.step_sep = ";"; the model's response is this + EOS)

Why the restatement: the three tokens a step's new letter depends on sit right before it, so the
offset table is learned from local context (a small model did not learn it within 1,000 SFT steps
when the inputs sat at the start of the previous line, at a distance that varies with the line).

Every step depends only on the line above it, so after a hint of the first s steps a level-L problem
leaves exactly the work of a level-(L - s) problem: a long enough hint makes a hard problem look
like an easy one. The level is the number of operations (= number of steps). Chance level for a
guessed answer is 1/26.

Splits, deterministic from a seed:
  train  the caller's levels (default 1..6).
  test   the same levels; disjoint from train by construction: a problem text belongs to test iff
         stable_id("chains/split", text) % TEST_BUCKETS == 0, and each split only keeps its own
         problems, so no test problem appears in train for any seeds or levels.
  ood    out of distribution by length: chains LONGER than any train level (default levels 7 and
         8), with the same operators and digits; a hint reduces an ood problem to a length seen in
         training. (ood does not use the hash rule: its problems differ from train by length, as
         long as its levels lie above the train levels.)
  ood_ops  out of distribution by operator range: the offsets MAX_OFFSET+1..RARE_MAX_OFFSET (6, 7)
         occur in train/test only at levels <= RARE_MAX_LEVEL (one- and two-step chains); an ood_ops
         problem (default levels 3 and 4) uses at least one of them in a longer chain. It tells a
         procedure (apply the table, whatever the offset) from a template learned per length.
Within a split, problems are drawn with replacement (level 1 has only 26 * 2 * RARE_MAX_OFFSET =
364 problems).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import re

import numpy as np

from jaxghpo.data.example import Example, stable_id

NAME = "chains"
STEP_SEP = ";"
ALPHABET = "abcdefghijklmnopqrstuvwxyz" + "0123456789" + "+-=;"  # the task tokenizer's characters (data/tokenizer.py)
TOKENIZER_DIR = "chains_tokenizer"  # its HF files under jaxghpo/assets/
SPLITS = ("train", "test", "ood", "ood_ops")
DEFAULT_LEVELS = {"train": tuple(range(1, 7)), "test": tuple(range(1, 7)), "ood": (7, 8), "ood_ops": (3, 4)}
TEST_BUCKETS = 10  # one problem text in TEST_BUCKETS belongs to the test split
CHANCE = 1.0 / 26.0

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SPLIT_CODES = {"train": 0, "test": 1, "ood": 2, "ood_ops": 3}
MAX_OFFSET = 5  # operations are +d / -d with d in 1..MAX_OFFSET (26 x 2 x MAX_OFFSET facts to learn)
# The rare offsets: digits MAX_OFFSET+1..RARE_MAX_OFFSET appear in train/test only at levels
# <= RARE_MAX_LEVEL (a table seen in short chains); the "ood_ops" split uses them in longer chains.
RARE_MAX_OFFSET = 7
RARE_MAX_LEVEL = 2
_PROBLEM_RE = re.compile(r"([a-z])((?:[+-][1-9])+)=")
_STEP_RE = re.compile(r"([a-z])([+-][1-9])=([a-z])((?:[+-][1-9])*)")
_OP_RE = re.compile(r"([+-])([1-9])")


def problem_len(level: int) -> int:
  """Characters (= task tokens) of a level-`level` problem text, "=" included."""
  return 2 * level + 2


def solution_len(level: int) -> int:
  """Characters (= task tokens) of a level-`level` solution, separators included, EOS excluded."""
  return level * level + 5 * level - 1


def split_of(problem: str) -> str:
  """"test" or "train": the split a problem text belongs to under the hash rule."""
  return "test" if stable_id(NAME + "/split", problem) % TEST_BUCKETS == 0 else "train"


def _shift(letter: str, op: str) -> str:
  sign, digit = op[0], int(op[1])
  delta = digit if sign == "+" else -digit
  return _LETTERS[(_LETTERS.index(letter) + delta) % 26]


def solve(problem: str) -> tuple[str, ...]:
  """The rewrite trace of a problem text: "k+3-5+2=" -> ("k+3=n-5+2", "n-5=i+2", "i+2=k")."""
  match = _PROBLEM_RE.fullmatch(problem)
  if match is None:
    raise ValueError(f"chains problem {problem!r} is malformed; expected e.g. 'k+3-5+2=' "
                     "(a letter a-z, then one or more +d/-d with d in 1..9, then '=').")
  letter, ops_text = match.groups()
  ops = [m.group(0) for m in _OP_RE.finditer(ops_text)]
  steps = []
  for j, op in enumerate(ops):
    new = _shift(letter, op)
    steps.append(f"{letter}{op}={new}" + "".join(ops[j + 1:]))
    letter = new
  return tuple(steps)


def make_example(problem: str) -> Example:
  """The Example of a problem text, with its trace, answer, level and stable id."""
  steps = solve(problem)
  return Example(problem_id=stable_id(NAME, problem), problem=problem, steps=steps,
                 answer=steps[-1].split("=")[-1], level=len(steps), step_sep=STEP_SEP)


def level_counts(weights: Mapping[int, float], num_examples: int) -> dict[int, int]:
  """How many examples of each level a mix with these weights gets (exact, largest remainder).

  weights: level -> non-negative weight, e.g. {1: 1, ..., 6: 1, 7: 3, 8: 3}. Counts sum to
  num_examples; ties in the remainders go to the lower level.
  """
  levels = sorted(weights)
  w = np.asarray([float(weights[lv]) for lv in levels])
  if not levels or np.any(w < 0) or w.sum() <= 0 or any(int(lv) < 1 for lv in levels):
    raise ValueError(f"level weights {dict(weights)!r} must map levels >= 1 to non-negative "
                     "weights with a positive sum.")
  exact = w / w.sum() * num_examples
  counts = np.floor(exact).astype(int)
  order = sorted(range(len(levels)), key=lambda i: (-(exact[i] - counts[i]), levels[i]))
  for i in order[:num_examples - counts.sum()]:
    counts[i] += 1
  return {int(lv): int(c) for lv, c in zip(levels, counts)}


def draw_levels(weights: Mapping[int, float] | Sequence[int], num_examples: int,
                seed: int) -> np.ndarray:
  """int64 [num_examples]: a shuffled level mix, exact counts from `level_counts`, order from seed.

  weights: level -> weight, or a sequence of levels (equal weights).
  """
  if not isinstance(weights, Mapping):
    weights = {int(lv): 1.0 for lv in weights}
  counts = level_counts(weights, num_examples)
  levels = np.repeat(np.asarray(list(counts), np.int64), list(counts.values()))
  np.random.default_rng(np.random.SeedSequence([seed, 7])).shuffle(levels)
  return levels


def _draw_problems(level: int, count: int, split: str, rng: np.random.Generator) -> list[str]:
  """`count` problem texts of one level that belong to `split` (hash rule for train/test)."""
  out: list[str] = []
  for _ in range(10_000):
    n = max(64, 2 * count)
    starts = rng.integers(0, 26, size=n)
    signs = rng.integers(0, 2, size=(n, level))
    top = RARE_MAX_OFFSET if (split == "ood_ops" or level <= RARE_MAX_LEVEL) else MAX_OFFSET
    digits = rng.integers(1, top + 1, size=(n, level))
    for i in range(n):
      if split == "ood_ops" and digits[i].max() <= MAX_OFFSET:
        continue  # an ood_ops problem uses at least one rare offset
      ops = "".join(("+-"[s]) + str(d) for s, d in zip(signs[i], digits[i]))
      problem = _LETTERS[starts[i]] + ops + "="
      if split.startswith("ood") or split_of(problem) == split:
        out.append(problem)
        if len(out) == count:
          return out
  raise RuntimeError(f"could not draw {count} {split} problems of level {level}.")


def generate(split: str, num_examples: int, seed: int,
             levels: Sequence[int] | Mapping[int, float] | None = None) -> list[Example]:
  """`num_examples` examples of a split, deterministic in (split, num_examples, seed, levels).

  levels: a sequence of levels (equal counts, remainder to the lower levels) or a mapping
  level -> weight (see `level_counts`); None takes DEFAULT_LEVELS[split]. The order of levels is
  shuffled by the seed; the same seed gives different problems in different splits.
  """
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is unknown; use one of {SPLITS}.")
  if num_examples < 0 or seed < 0:
    raise ValueError(f"num_examples ({num_examples}) and seed ({seed}) must be >= 0.")
  levels = DEFAULT_LEVELS[split] if levels is None else levels
  level_of = draw_levels(levels, num_examples, seed)
  rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split]]))
  examples: list[Example | None] = [None] * num_examples
  for level in sorted(set(level_of.tolist())):
    where = np.flatnonzero(level_of == level)
    for i, problem in zip(where, _draw_problems(level, len(where), split, rng)):
      examples[i] = make_example(problem)
  return examples  # type: ignore[return-value]


def verify_trace(example: Example) -> bool:
  """True iff every step applies one operation correctly and copies the rest, and the last step
  is the answer. Never raises on malformed input (returns False)."""
  match = _PROBLEM_RE.fullmatch(example.problem)
  if match is None or not example.steps:
    return False
  letter, ops_text = match.groups()
  ops = [m.group(0) for m in _OP_RE.finditer(ops_text)]
  if len(example.steps) != len(ops) or (example.level not in (-1, len(ops))):
    return False
  for j, step in enumerate(example.steps):
    step_match = _STEP_RE.fullmatch(step)
    if step_match is None:
      return False
    old_letter, op, new_letter, tail = step_match.groups()
    if (old_letter != letter or op != ops[j] or new_letter != _shift(letter, ops[j])
        or tail != "".join(ops[j + 1:])):
      return False
    letter = new_letter
  return letter == example.answer


def extract_answer(completion: str) -> str:
  """The answer of a completion: the text after the last "=" of its last ";"-separated segment,
  stripped ("" if there is none). A bare letter (an answer without its step) is taken as is.

  Text after an "<eos>" (when decoded with special tokens) is ignored.
  """
  completion = completion.split("<eos>", 1)[0]
  return completion.split(STEP_SEP)[-1].split("=")[-1].strip()


def count_steps(completion: str) -> int:
  """Number of non-empty ";"-separated steps in a completion (shortcut diagnostics: an answer given
  after fewer steps than the level needs). Add the hint's steps when the hint is not part of it."""
  completion = completion.split("<eos>", 1)[0]
  return sum(1 for part in completion.split(STEP_SEP) if part.strip())


def tail_of(level: int, step_index: int) -> int:
  """Operations a step copies after the one it applies: step j (0-based) of a level-L trace has
  tail L - 1 - j. The base policy's competence is a function of it (tools/make_base_policy.py)."""
  return level - 1 - step_index


def noisy_steps(example: Example, q_by_tail: Mapping[int, float], rng: np.random.Generator,
                start: int = 0) -> tuple[str, ...]:
  """A noisy teacher's trace lines from step `start` on (the steps before it are a hint).

  The line with tail t is right with probability q_by_tail.get(t, 1.0); otherwise the teacher
  writes the line's restatement with a WRONG new letter (uniform over the 25 others) and no tail,
  and stops: it answers early, a shortcut that is right by chance only. A policy trained on this
  teacher writes a full valid level-L trace with probability prod_j q(tail_of(L, j)).
  """
  lines = []
  for j in range(start, len(example.steps)):
    step = example.steps[j]
    if rng.random() < float(q_by_tail.get(tail_of(len(example.steps), j), 1.0)):
      lines.append(step)
      continue
    head, rest = step.split("=", 1)
    right = rest[0]
    wrong = _LETTERS[(_LETTERS.index(right) + int(rng.integers(1, 26))) % 26]
    lines.append(f"{head}={wrong}")
    break
  return tuple(lines)


def check_completion(problem: str, completion: str) -> tuple[bool, bool, int]:
  """(valid, answer_right, steps_written) of a written trace (the hint's steps included).

  valid: every written line correctly applies the leftmost remaining operation of the line above
  (the problem for the first line) and copies the rest, the trace reaches the last operation (its
  last line has no tail) and writes nothing else. Then its answer is right too. answer_right: the
  extracted answer is the problem's answer, however it was reached. Text after "<eos>" is ignored.
  Raises ValueError on a malformed problem (the data's fault), never on a malformed completion.
  """
  steps = solve(problem)
  completion = completion.split("<eos>", 1)[0]
  written = [part.strip() for part in completion.split(STEP_SEP)]
  while written and not written[-1]:
    written.pop()
  answer_right = extract_answer(STEP_SEP.join(written)) == steps[-1].split("=")[-1]  # valid => right
  return tuple(written) == steps, answer_right, sum(1 for w in written if w)
