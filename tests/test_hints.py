"""Hint cuts: hand-worked cuts per unit, LaTeX back-off, corruptions, and hypothesis properties."""
import math
import string

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
import transformers

from jaxghpo.curriculum import hints
from jaxghpo.data import tokenizer as task_tokenizer
from jaxghpo.data.tasks import chains

CHAIN = ("k+3=n-5+2", "n-5=i+2", "i+2=k")  # the trace of k+3-5+2=


@pytest.fixture(scope="module")
def chains_tok():
  return task_tokenizer.load("chains")


def _bpe_tokenizer():
  """A small byte-level BPE (multi-character tokens) trained on LaTeX-ish text: no download."""
  corpus = ["Let $x = \\frac{1}{2}$ and $y=\\sqrt{x^{2}+1}$. Then \\boxed{\\frac{3}{4}} so 12.",
            "We have {a{b}c} and \\(x_{i}\\) then \\[ \\sum_{k=1}^{n} k \\] done; ab cd."] * 20
  backend = Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  backend.decoder = decoders.ByteLevel()
  backend.train_from_iterator(corpus, trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                              clean_up_tokenization_spaces=False)


BPE = _bpe_tokenizer()


def test_steps_unit_hand_worked():
  cut = lambda r: hints.cut(CHAIN, r, "steps", step_sep=";")
  assert cut(0.0) == ""
  assert cut(0.3) == ""                # floor(0.9) = 0 steps
  assert cut(1 / 3) == "k+3=n-5+2;"          # floor(1.0) = 1, not 0, despite rounding
  assert cut(0.67) == "k+3=n-5+2;n-5=i+2;"   # floor(2.01) = 2
  assert cut(0.99) == "k+3=n-5+2;n-5=i+2;"   # capped before the answer step
  assert cut(1.0) == "k+3=n-5+2;n-5=i+2;i+2=k"


def test_tokens_and_chars_units_hand_worked(chains_tok):
  # "k+3=n-5+2;n-5=i+2;i+2=k" is 23 tokens / 23 characters; the answer step starts at 18
  tokens = lambda r: hints.cut(CHAIN, r, "tokens", tokenizer=chains_tok, step_sep=";")
  assert tokens(0.4) == "k+3=n-5+2"            # floor(9.2) = 9 tokens: the first step
  assert tokens(0.5) == "k+3=n-5+2;n"          # floor(11.5) = 11 tokens: mid-step
  assert tokens(0.75) == "k+3=n-5+2;n-5=i+2"   # floor(17.25) = 17 tokens
  assert tokens(0.8) == "k+3=n-5+2;n-5=i+2;"   # floor(18.4) = 18: everything before the answer step
  assert tokens(0.9) == "k+3=n-5+2;n-5=i+2;"   # floor(20.7) = 20, capped at 18
  assert tokens(0.99) == "k+3=n-5+2;n-5=i+2;"
  assert tokens(1.0) == "k+3=n-5+2;n-5=i+2;i+2=k"
  assert hints.cut(CHAIN, 0.5, "chars", step_sep=";") == "k+3=n-5+2;n"          # 11 characters
  assert hints.cut(CHAIN, 0.99, "chars", step_sep=";") == "k+3=n-5+2;n-5=i+2;"  # min(18, 22)


def test_build_uses_the_examples_separator():
  ex = chains.make_example("k+3-5+2=")
  assert ex.steps == CHAIN
  assert hints.build(ex, 0.67, "steps") == "k+3=n-5+2;n-5=i+2;"


def test_tokens_unit_backs_off_out_of_latex_groups():
  steps = ["Let $x = \\frac{1}{2}$.", "So \\boxed{1}"]
  solution = "\n".join(steps)
  ids = BPE.encode(solution)
  pieces = [BPE.decode([i]) for i in ids]
  assert pieces[:12] == ["Le", "t", " $", "x", " ", "= \\", "frac{", "1}", "{", "2}", "$.", "\n"]
  for k in range(len(ids)):
    hint = hints.cut(steps, (k + 0.5) / len(ids), "tokens", tokenizer=BPE)
    if k < 2:
      assert hint == "".join(pieces[:k])
    elif k < 11:    # token prefixes ending inside $...$ back off to before " $"
      assert hint == "Let"
    elif k == 11:
      assert hint == "Let $x = \\frac{1}{2}$."
    else:           # capped before the answer step
      assert hint == "Let $x = \\frac{1}{2}$.\n"
  # chars: GHPO's cut has no repair and does split the formula
  assert hints.cut(steps, 0.3, "chars") == solution[:math.floor(0.3 * len(solution))]
  assert not hints.balanced_prefixes(hints.cut(steps, 0.3, "chars"))[-1]


def test_balanced_prefixes_hand_worked():
  text = "a{b}$c$\\{d"
  #        a     {      b      }     $      c      $     \{ (one unit)  d
  want = [1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1]
  assert hints.balanced_prefixes(text).astype(int).tolist() == want
  want = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]  # \( and $$ are one unit each: no cut inside them
  assert hints.balanced_prefixes("\\(x\\)$$y$$").astype(int).tolist() == want
  assert hints.balanced_prefixes("}a").astype(int).tolist() == [1, 1, 1]  # stray closer ignored


def test_bad_arguments():
  with pytest.raises(ValueError, match="ratio"):
    hints.cut(CHAIN, 1.5, "steps")
  with pytest.raises(ValueError, match="unit"):
    hints.cut(CHAIN, 0.5, "words")
  with pytest.raises(ValueError, match="tokenizer"):
    hints.cut(CHAIN, 0.5, "tokens")


def test_num_hint_steps():
  assert [hints.num_hint_steps(CHAIN, r) for r in (0, 0.34, 0.7, 0.99, 1)] == [0, 1, 2, 2, 3]


def test_corrupt_other():
  other = ("a+1=b+1+1+1", "b+1=c+1+1", "c+1=d+1", "d+1=e")  # the trace of a+1+1+1+1=
  assert hints.corrupt_other(other, 2, step_sep=";") == "a+1=b+1+1+1;b+1=c+1+1;"
  # never the answer step
  assert hints.corrupt_other(other, 10, step_sep=";") == "a+1=b+1+1+1;b+1=c+1+1;c+1=d+1;"
  assert hints.corrupt_other(other, 0, step_sep=";") == ""


def test_corrupt_shuffle():
  steps = ("s1", "s2", "s3", "s4", "ans")
  for seed in range(20):
    hint = hints.corrupt_shuffle(steps, 4, np.random.default_rng(seed), step_sep=";")
    parts = hint.split(";")
    assert parts[-1] == "" and sorted(parts[:-1]) == ["s1", "s2", "s3", "s4"]
    assert parts[:-1] != ["s1", "s2", "s3", "s4"]
  a = hints.corrupt_shuffle(steps, 3, np.random.default_rng(1), step_sep=";")
  assert a == hints.corrupt_shuffle(steps, 3, np.random.default_rng(1), step_sep=";")
  assert hints.corrupt_shuffle(steps, 1, np.random.default_rng(0), step_sep=";") == "s1;"
  assert hints.corrupt_shuffle(steps, 9, np.random.default_rng(0), step_sep=";").count(";") == 4


def test_corrupt_garble_keeps_the_last_hint_line_true():
  steps = ("k+3=n-5+2", "n-5=i+2", "i+2=q+1", "q+1=k", "k")
  for seed in range(20):
    hint = hints.corrupt_garble(steps, 3, np.random.default_rng(seed), step_sep=";")
    parts = hint.split(";")
    assert parts[-1] == "" and len(parts) == 4
    assert parts[2] == "i+2=q+1"                      # the state to continue from is true
    for garbled, true in zip(parts[:2], steps[:2]):   # the lines before it are the same characters, reordered
      assert sorted(garbled) == sorted(true) and garbled != true
  assert hints.corrupt_garble(steps, 1, np.random.default_rng(0), step_sep=";") == "k+3=n-5+2;"  # nothing before it
  assert hints.corrupt_garble(steps, 0, np.random.default_rng(0), step_sep=";") == ""
  assert hints.corrupt_garble(steps, 9, np.random.default_rng(0), step_sep=";").split(";")[3] == "q+1=k"  # n-1 at most
  assert hints.garble_line("aaa", np.random.default_rng(0)) == "aaa"  # nothing to reorder


def test_pick_other():
  ids = np.array([10, 11, 12, 13, 13, 14])
  levels = np.array([1, 1, 2, 2, 2, 3])
  picked = hints.pick_other(ids, levels, np.random.default_rng(0))
  assert picked[0] == 1 and picked[1] == 0          # the only other level-1 problem
  assert list(picked[2:5]) == [3 if picked[2] == 3 else 4, 2, 2]  # 13's copies only take 12
  assert ids[picked[5]] != 14                        # level 3 is alone: any other problem
  again = hints.pick_other(ids, levels, np.random.default_rng(0))
  assert list(again) == list(picked)
  with pytest.raises(ValueError, match="two different"):
    hints.pick_other([5, 5], [1, 1], np.random.default_rng(0))


# ---------------------------------------------------------------- properties (hypothesis)

def _math(open_, body, close):
  """Inline math around body; math never nests (and "$" + "" + "$" would open display math)."""
  if not body or "$" in body or "\\(" in body:
    return "{" + body + "}"
  return open_ + body + close


def _latex(depth):
  """Strategy: text with nested brace groups, inline math and \\frac{}{}: valid LaTeX grouping."""
  leaf = st.text(alphabet=string.ascii_letters + "0123456789+-= ,.", min_size=0, max_size=6)
  if depth == 0:
    return leaf
  inner = _latex(depth - 1)
  return st.one_of(
      leaf,
      inner.map(lambda s: "{" + s + "}"),
      inner.map(lambda s: _math("$", s, "$")),
      inner.map(lambda s: _math("\\(", s, "\\)")),
      st.tuples(inner, inner).map(lambda ab: "\\frac{" + ab[0] + "}{" + ab[1] + "}"),
      st.lists(inner, min_size=1, max_size=3).map("".join),
  )


STEPS = st.lists(_latex(3).filter(lambda s: "\n" not in s), min_size=1, max_size=6)
RATIOS = st.floats(0.0, 1.0)


def _tokenizer_for(unit):
  return BPE if unit == "tokens" else None


@settings(max_examples=100, deadline=None, database=None)
@given(steps=STEPS, r1=RATIOS, r2=RATIOS, unit=st.sampled_from(hints.UNITS))
def test_prefix_monotone_and_no_answer_leak(steps, r1, r2, unit):
  lo, hi = sorted((r1, r2))
  solution = "\n".join(steps)
  a = hints.cut(steps, lo, unit, tokenizer=_tokenizer_for(unit))
  b = hints.cut(steps, hi, unit, tokenizer=_tokenizer_for(unit))
  assert solution.startswith(a) and solution.startswith(b)
  assert b.startswith(a)  # monotone in the ratio
  before_answer = "\n".join(steps[:-1]) + "\n" if len(steps) > 1 else ""
  for ratio, hint in ((lo, a), (hi, b)):
    if ratio < 1.0:
      assert before_answer.startswith(hint)
    else:
      assert hint == solution


@settings(max_examples=100, deadline=None, database=None)
@given(steps=STEPS, ratio=RATIOS)
def test_units_are_respected(steps, ratio):
  solution = "\n".join(steps)
  n_keep = hints.num_hint_steps(steps, ratio)
  hint = hints.cut(steps, ratio, "steps")
  whole = ["\n".join(steps[:k]) + "\n" for k in range(1, len(steps))] + ["", solution]
  assert hint in whole
  assert (hint.count("\n") if ratio < 1 else len(steps)) <= n_keep
  ids = BPE.encode(solution)
  hint = hints.cut(steps, ratio, "tokens", tokenizer=BPE)
  prefixes = {BPE.decode(ids[:k]): k for k in range(len(ids) + 1)}
  assert hint in prefixes  # a whole number of tokens, decoded
  assert prefixes[hint] <= math.floor(ratio * len(ids) + 1e-9)
  chars = hints.cut(steps, ratio, "chars")
  if ratio < 1:
    cap = len("\n".join(steps[:-1]) + "\n") if len(steps) > 1 else 0
    assert len(chars) == min(cap, math.floor(ratio * len(solution) + 1e-9))


@settings(max_examples=100, deadline=None, database=None)
@given(steps=STEPS, ratio=RATIOS)
def test_latex_groups_are_never_split(steps, ratio):
  assert hints.balanced_prefixes("\n".join(steps))[-1]  # the generator writes valid grouping
  ratio = min(ratio, 0.999)  # at ratio 1 the hint is the whole solution by definition
  for unit in ("steps", "tokens"):
    hint = hints.cut(steps, ratio, unit, tokenizer=_tokenizer_for(unit))
    assert hints.balanced_prefixes(hint)[-1], (unit, hint)
    assert hint.count("{") - hint.count("\\{") == hint.count("}") - hint.count("\\}")
