"""The letter-chains task: hand-worked traces, verification, splits, level mixes, registry."""
import collections
import dataclasses
import re

import pytest

from jaxghpo.data import tasks
from jaxghpo.data.example import stable_id
from jaxghpo.data.tasks import chains

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def test_hand_worked_trace():
  ex = chains.make_example("k+3-5+2=")
  # k(10)+3 = n(13); n-5 = i(8); i+2 = k(10): each step restates its letter and operation
  assert ex.steps == ("k+3=n-5+2", "n-5=i+2", "i+2=k")
  assert ex.solution == "k+3=n-5+2;n-5=i+2;i+2=k"
  assert ex.answer == "k" and ex.level == 3 and ex.step_sep == ";"
  assert ex.problem_id == stable_id("chains", "k+3-5+2=")
  assert chains.verify_trace(ex)


def test_wraps_around_mod_26():
  assert chains.solve("z+1=") == ("z+1=a",)
  assert chains.solve("a-1=") == ("a-1=z",)
  # y(24)+5 = 29 = d(3); d(3)-5 = -2 = y(24)
  assert chains.solve("y+5-5=") == ("y+5=d-5", "d-5=y")
  assert chains.make_example("y+5-5=").answer == "y"
  with pytest.raises(ValueError, match="malformed"):
    chains.solve("k+10=")
  with pytest.raises(ValueError, match="malformed"):
    chains.solve("k+3")


def test_lengths_hand_worked():
  # step j of a level-L solution is 5 + 2 * (L - j) characters, plus L - 1 separators
  assert [chains.problem_len(lv) for lv in (1, 2, 3)] == [4, 6, 8]
  assert [chains.solution_len(lv) for lv in (1, 2, 3, 8)] == [5, 13, 23, 103]
  assert len("a+1=b") == 5 and len("a+1=b+1;b+1=c") == 13 and len("k+3=n-5+2;n-5=i+2;i+2=k") == 23


def _answer_by_sum(problem):
  """The answer computed without the trace: start letter + the sum of all offsets, mod 26."""
  total = sum(int(op) for op in re.findall(r"[+-][0-9]", problem))
  return LETTERS[(LETTERS.index(problem[0]) + total) % 26]


@pytest.mark.parametrize("split", chains.SPLITS)
def test_generated_traces_verify(split):
  examples = chains.generate(split, 400, seed=1)
  assert len(examples) == 400
  for ex in examples:
    assert chains.verify_trace(ex), ex
    assert ex.answer == _answer_by_sum(ex.problem), ex
    assert re.fullmatch(r"[a-z][+-][1-9]=[a-z]", ex.steps[-1]) and ex.steps[-1][-1] == ex.answer
    assert ex.steps[0].startswith(ex.problem[:3] + "=")  # the first step restates "letter op"
    assert len(ex.steps) == ex.level
    assert len(ex.problem) == chains.problem_len(ex.level)
    assert len(ex.solution) == chains.solution_len(ex.level)
    assert ex.problem_id == stable_id("chains", ex.problem)


def test_offsets_lie_in_1_to_max_offset_and_rare_offsets_only_in_short_chains():
  assert chains.MAX_OFFSET == 5 and chains.RARE_MAX_OFFSET == 7 and chains.RARE_MAX_LEVEL == 2
  for split in ("train", "test", "ood"):
    examples = chains.generate(split, 300, seed=3, levels=None if split == "ood" else range(1, 7))
    for ex in examples:
      top = chains.RARE_MAX_OFFSET if ex.level <= chains.RARE_MAX_LEVEL else chains.MAX_OFFSET
      assert max(int(d) for d in re.findall(r"[0-9]", ex.problem)) <= top, ex.problem
  short = [e.problem for e in chains.generate("train", 300, seed=3, levels=[1, 2])]
  assert set(d for p in short for d in re.findall(r"[0-9]", p)) == set("1234567")  # every offset occurs
  for ex in chains.generate("ood_ops", 200, seed=3):  # longer chains that use a rare offset
    assert ex.level > chains.RARE_MAX_LEVEL and max(int(d) for d in re.findall(r"[0-9]", ex.problem)) > 5
  problems = [e.problem for split in chains.SPLITS for e in chains.generate(split, 200, seed=3)]
  signs = collections.Counter(c for p in problems for c in p if c in "+-")
  assert signs["+"] > 0 and signs["-"] > 0


def test_check_completion_hand_worked():
  p = "k+3-5+2="
  assert chains.check_completion(p, "k+3=n-5+2;n-5=i+2;i+2=k") == (True, True, 3)
  assert chains.check_completion(p, "k+3=n-5+2;n-5=i+2;i+2=k;<eos>junk") == (True, True, 3)
  assert chains.check_completion(p, "k+3=n-5+2;n-5=i+2;i+2=k;k") == (False, True, 4)  # answer restated
  assert chains.check_completion(p, "k+3=n-5+2;n-5=k") == (False, True, 2)  # early, lucky answer: a shortcut
  assert chains.check_completion(p, "k+3=n-5+2;n-5=i+2") == (False, False, 2)  # valid lines, not finished
  assert chains.check_completion(p, "k+3=n-5+2;n-5=i+3;i+3=l") == (False, False, 3)  # a tail miscopied
  assert chains.check_completion(p, "k+3=n-5+2;n-5+2=k") == (False, True, 2)  # two operations in one line
  assert chains.check_completion(p, "") == (False, False, 0)


def test_noisy_teacher_is_right_with_q_of_the_tail_and_otherwise_answers_early():
  import numpy as np
  ex = chains.make_example("k+3-5+2+1-4=")  # level 5: tails 4, 3, 2, 1, 0
  q = {4: 0.3, 3: 0.5}
  rng = np.random.default_rng(0)
  n, full, first_ok = 4000, 0, 0
  for _ in range(n):
    lines = chains.noisy_steps(ex, q, rng)
    first_ok += lines[0] == ex.steps[0]
    if lines == ex.steps:
      full += 1
      continue
    bad = lines[-1]  # the stopping line: restatement and a wrong letter, no tail
    assert lines[:-1] == ex.steps[:len(lines) - 1] and len(lines) <= 2
    assert re.fullmatch(r"[a-z][+-][1-9]=[a-z]", bad) and bad != ex.steps[len(lines) - 1][:len(bad)]
  assert abs(first_ok / n - 0.3) < 0.03 and abs(full / n - 0.15) < 0.02
  assert chains.noisy_steps(ex, q, rng, start=2) == ex.steps[2:]  # tails <= 2 are always right


def test_verify_rejects_every_kind_of_error():
  good = chains.make_example("k+3-5+2=")
  assert good.steps == ("k+3=n-5+2", "n-5=i+2", "i+2=k")
  bad = {  # steps, answer; each breaks exactly one rule of the trace
      "wrong new letter": (("k+3=o-5+2", "o-5=j+2", "j+2=l"), "l"),
      "wrong restated letter": (("k+3=n-5+2", "m-5=i+2", "i+2=k"), "k"),
      "wrong restated op": (("k+3=n-5+2", "n+5=i+2", "i+2=k"), "k"),
      "wrong tail": (("k+3=n-5+3", "n-5=i+3", "i+3=l"), "l"),
      "dropped op": (("k+3=n+2", "n-5=i+2", "i+2=k"), "k"),
      "two ops in one step": (("k+3=n-5+2", "n-5+2=k", "i+2=k"), "k"),
      "missing step": (("k+3=n-5+2", "n-5=i+2"), "i"),
      "extra tail on the answer step": (("k+3=n-5+2", "n-5=i+2", "i+2=k+2"), "k"),
      "old format without restatement": (("n-5+2", "i+2", "k"), "k"),
  }
  for why, (steps, answer) in bad.items():
    assert not chains.verify_trace(dataclasses.replace(good, steps=steps, answer=answer)), why
  assert not chains.verify_trace(dataclasses.replace(good, answer="j"))
  assert not chains.verify_trace(dataclasses.replace(good, answer="i+2=k"))
  assert not chains.verify_trace(dataclasses.replace(good, level=4))
  assert not chains.verify_trace(dataclasses.replace(good, problem="k+3-5+2"))
  assert not chains.verify_trace(dataclasses.replace(good, steps=()))
  assert chains.verify_trace(dataclasses.replace(good, level=-1))  # level unknown is allowed


def test_deterministic_from_seed():
  a = chains.generate("train", 50, seed=7)
  assert a == chains.generate("train", 50, seed=7)
  assert a != chains.generate("train", 50, seed=8)
  assert [e.problem for e in chains.generate("test", 50, seed=7)] != [e.problem for e in a]


def test_test_split_is_disjoint_from_train():
  # levels 1-2 have only 26*10 + 26*100 = 2860 problems: overlap would show if the hash rule failed
  train = {e.problem for e in chains.generate("train", 3000, seed=0, levels=[1, 2])}
  test = {e.problem for e in chains.generate("test", 600, seed=0, levels=[1, 2])}
  assert not train & test
  assert all(chains.split_of(p) == "test" for p in test)
  assert all(chains.split_of(p) == "train" for p in train)
  # about one problem in TEST_BUCKETS is a test problem
  level1 = [f"{c}{s}{d}=" for c in LETTERS for s in "+-" for d in range(1, chains.MAX_OFFSET + 1)]
  assert len(level1) == 260
  frac = sum(chains.split_of(p) == "test" for p in level1) / len(level1)
  assert 0.05 < frac < 0.15


def test_ood_is_longer_than_every_train_level():
  ood = chains.generate("ood", 100, seed=0)
  assert {e.level for e in ood} == {7, 8}
  assert min(e.level for e in ood) > max(chains.DEFAULT_LEVELS["train"])


def test_level_mixes_are_exact():
  counts = collections.Counter(e.level for e in chains.generate("train", 60, seed=2))
  assert counts == {lv: 10 for lv in range(1, 7)}
  weights = {1: 1, 2: 1, 7: 3, 8: 3}
  assert chains.level_counts(weights, 80) == {1: 10, 2: 10, 7: 30, 8: 30}
  # 10 / 3 = 3.33 each: the one left over goes to the lowest level
  assert chains.level_counts({1: 1, 2: 1, 3: 1}, 10) == {1: 4, 2: 3, 3: 3}
  mixed = chains.generate("train", 80, seed=2, levels=weights)
  assert collections.Counter(e.level for e in mixed) == {1: 10, 2: 10, 7: 30, 8: 30}
  drawn = chains.draw_levels(weights, 80, seed=5)
  assert list(drawn) == list(chains.draw_levels(weights, 80, seed=5))
  assert list(drawn) != sorted(drawn)
  with pytest.raises(ValueError, match="weights"):
    chains.level_counts({1: -1, 2: 1}, 4)


def test_extract_answer_and_count_steps():
  assert chains.extract_answer("k+3=n-5+2;n-5=i+2;i+2=k") == "k"
  assert chains.extract_answer("i+2= k ") == "k"
  assert chains.extract_answer(" k ") == "k"           # a bare letter is taken as is
  assert chains.extract_answer("") == ""
  assert chains.extract_answer("k+3=n-5+2;") == ""     # stopped at a step boundary: no answer
  assert chains.extract_answer("k+3=n-5+2;i+2=") == ""  # last step cut before its letter
  assert chains.extract_answer("n-5=i+2;i+2=k<eos>;z=q") == "k"
  assert chains.count_steps("k+3=n-5+2;n-5=i+2;i+2=k") == 3
  assert chains.count_steps("k") == 1
  assert chains.count_steps("") == 0
  assert chains.count_steps("n-5=i;;i+2=k;") == 2
  assert chains.count_steps("n-5=i+2;i+2=k<eos>;z") == 2


def test_bad_arguments_name_the_input():
  with pytest.raises(ValueError, match="split"):
    chains.generate("dev", 3, seed=0)
  with pytest.raises(ValueError, match="seed"):
    chains.generate("train", 3, seed=-1)


def test_registry():
  assert tasks.GENERATORS == {"chains": chains}
  assert tasks.get_task("chains") is chains
  with pytest.raises(KeyError, match="chains"):
    tasks.get_task("sudoku")
  assert set(tasks.TASKS.names()) == {"chains", "files"}
  with pytest.raises(KeyError, match=r"data\.task='sudoku' is not registered; known: \['chains', 'files'\]"):
    tasks.TASKS.get("sudoku")


def test_a_new_task_is_one_registered_class(tmp_path):
  """The trainer's pieces know a task only through the interface: a new one registers and loads."""
  from configs.base import get_base_config
  from jaxghpo.data.example import Example
  from jaxghpo.data.tasks import base

  class Echo(base.Task):
    name = "echo"
    checks_traces = True

    def load(self, train_seed=0):
      train = [Example(problem_id=i, problem=f"say {i}", steps=(str(i),), answer=str(i)) for i in range(4)]
      return base.Problems(train, {"all": train}, str.strip, [base.task_report("echo", train)],
                           check_completion=self.check_completion)

    def check_completion(self, problem, text):
      return text.strip() == problem.split()[-1], text.strip() == problem.split()[-1]

  tasks.TASKS.register("echo")(Echo)
  try:
    c = get_base_config()
    c.data.task = "echo"
    task = tasks.task_for(c)
    problems = task.load()
    assert [ex.problem for ex in problems.eval_sets["all"]] == ["say 0", "say 1", "say 2", "say 3"]
    assert task.valid_success_groups(["say 1", "say 2"], ["", ""], ["1", "0", "3", "4"], 2).tolist() == [True, False]
    with pytest.raises(KeyError, match=r"config\.data\.task_configs\.echo has unknown key\(s\) \['hard_levels'\]"):
      c.data.task_configs.echo = {"hard_levels": (5,)}
      tasks.task_for(c)
  finally:
    tasks.TASKS._entries.pop("echo")  # noqa: SLF001
