"""Exact match, format reward, extractors, and the weighted combination (no worker processes)."""

import time

import ml_collections
import numpy as np
import pytest

from jaxghpo import rewards
from jaxghpo.rewards import simple


# ---------------------------------------------------------------------------------------------
# Extractors.

@pytest.mark.parametrize("text, content", [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}} and later \\boxed{x^{2}}", "x^{2}"),
    ("\\boxed{\\boxed{7}}", "7"),
    ("\\boxed{3} then \\boxed{4", "3"),           # the last box is unclosed: the last complete one
    ("\\boxed{1 \\boxed{2}", "2"),
    ("\\boxed{5", None),
    ("no box", None),
    ("\\boxed{}", ""),
])
def test_last_boxed(text, content):
  assert simple.last_boxed(text) == content


def test_extractors_are_linear_on_hostile_text():
  hostile = ["\\boxed{" * 200_000, "{" * 1_000_000, "x" * 1_000_000 + "\\boxed{1}",
             "<answer>" * 100_000 + "</answer>" * 100_000, "<think>" * 100_000]
  t0 = time.monotonic()
  for text in hostile:
    simple.last_boxed(text)
    simple.answer_tag(text)
    simple.last_number(text)
    simple.think_answer(text)
  assert time.monotonic() - t0 < 5.0   # quadratic scans would take hours


def test_answer_tag_and_last_number():
  assert simple.answer_tag("<answer> 1 </answer><answer> 12 </answer>") == "12"
  assert simple.answer_tag("<answer>12") is None
  assert simple.last_number("step 3: 4 + 5 = 9.5, so -12") == "-12"
  assert simple.last_number("none") is None


# ---------------------------------------------------------------------------------------------
# exact_match.

def test_exact_match_default_strips_whitespace():
  scores = rewards.exact_match(["  42\n", "42 ", "4 2", "43"], ["42", " 42", "42", "42"])
  assert scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [1.0, 1.0, 0.0, 0.0])


def test_exact_match_with_task_extractor_and_named_extractors():
  def after_equals(completion):   # what a procedural task might supply
    return completion.rsplit("=", 1)[1] if "=" in completion else None

  completions = ["3 + 4 = 7", "3 + 4 = 8", "I give up"]
  np.testing.assert_array_equal(rewards.exact_match(completions, ["7"] * 3, extract=after_equals), [1, 0, 0])
  np.testing.assert_array_equal(
      rewards.exact_match(["x \\boxed{ 7 }", "<answer>7</answer>", "7"], [7, 7, 7], extract="boxed"), [1, 0, 0])
  np.testing.assert_array_equal(
      rewards.exact_match(["x \\boxed{7}", "<answer> 7 </answer>"], ["7", "7"], extract="answer_tag"), [0, 1])


def test_exact_match_errors_name_the_input():
  with pytest.raises(ValueError, match="unknown answer extractor 'nope'"):
    rewards.exact_match(["1"], ["1"], extract="nope")
  with pytest.raises(ValueError, match="2 completions but 1 answers"):
    rewards.exact_match(["1", "2"], ["1"])

  def broken(completion):
    return completion.split("=")[1]

  with pytest.raises(IndexError, match=r"completions\[1\]"):
    rewards.exact_match(["a=1", "no equals"], ["1", "1"], extract=broken)


# ---------------------------------------------------------------------------------------------
# format_reward.

def test_format_boxed():
  np.testing.assert_array_equal(
      rewards.format_reward(["\\boxed{1}", "\\boxed{1", "boxed 1", "a \\boxed{} b"], "boxed"), [1, 0, 0, 1])


def test_format_think_answer():
  completions = [
      "<think>\nwork\n</think>\n<answer>\n5\n</answer>",
      "<think>w</think><answer>5</answer>",
      "<think>w</think> junk <answer>5</answer>",      # text between the blocks
      "<answer>5</answer><think>w</think>",              # wrong order
      "<think>w</think><answer>5</answer> trailing",     # text after
      "<think>a</think><think>b</think><answer>5</answer>",
      "<think>w</think><answer>5",
  ]
  np.testing.assert_array_equal(rewards.format_reward(completions, "think_answer"), [1, 1, 0, 0, 0, 0, 0])


def test_format_custom_regex_and_predicate():
  np.testing.assert_array_equal(rewards.format_reward(["Answer: 3", "3"], r"^Answer: \d+$"), [1, 0])
  np.testing.assert_array_equal(rewards.format_reward(["ab", "abc"], lambda s: len(s) == 3), [0, 1])
  with pytest.raises(ValueError, match="neither one of"):
    rewards.format_reward(["x"], "(unclosed")


# ---------------------------------------------------------------------------------------------
# combine.

def _exact_config(**weights):
  config = rewards.default_config()
  config.weights = ml_collections.ConfigDict(weights)
  config.accuracy = "exact"
  config.exact_extract = "answer_tag"
  config.format_pattern = "think_answer"
  return config


COMPLETIONS = ["<think>a</think><answer>5</answer>",   # right, well formed
               "<think>a</think><answer>4</answer>",   # wrong, well formed
               "<answer>5</answer>"]                    # right, no think block
ANSWERS = ["5", "5", "5"]


def test_combine_weights_hand_worked():
  total, accuracy, parts = rewards.combine(_exact_config(exact=1.0, format=0.5), COMPLETIONS, ANSWERS)
  np.testing.assert_array_equal(parts["exact"], [1, 0, 1])
  np.testing.assert_array_equal(parts["format"], [1, 1, 0])
  np.testing.assert_allclose(total, [1.5, 0.5, 1.0])
  np.testing.assert_array_equal(accuracy, [1, 0, 1])      # accuracy alone, format excluded
  assert total.dtype == accuracy.dtype == np.float32


def test_combine_accuracy_without_weight_and_whole_config():
  # Accuracy is computed (for difficulty detection) even when only format is in the total.
  total, accuracy, parts = rewards.combine(_exact_config(format=2.0), COMPLETIONS, ANSWERS)
  np.testing.assert_allclose(total, [2.0, 2.0, 0.0])
  np.testing.assert_array_equal(accuracy, [1, 0, 1])
  assert set(parts) == {"format", "exact"}
  experiment = ml_collections.ConfigDict({"rewards": _exact_config(exact=1.0)})
  total2, _, _ = rewards.combine(experiment, COMPLETIONS, ANSWERS)
  np.testing.assert_array_equal(total2, [1, 0, 1])


def test_combine_passes_the_task_extractor():
  config = _exact_config(exact=1.0)
  total, _, _ = rewards.combine(config, ["x=5", "x=4"], ["5", "5"], extract=lambda s: s.split("=")[-1])
  np.testing.assert_array_equal(total, [1, 0])


def test_combine_errors_name_the_key():
  with pytest.raises(ValueError, match="rewards.weights.bogus: unknown reward kind"):
    rewards.combine(_exact_config(bogus=1.0), COMPLETIONS, ANSWERS)
  config = _exact_config(exact=1.0)
  config.accuracy = "nope"
  with pytest.raises(ValueError, match="rewards.accuracy='nope'"):
    rewards.combine(config, COMPLETIONS, ANSWERS)


def test_registry_by_name_and_new_kinds():
  assert {"math", "exact", "format"} <= set(rewards.REGISTRY)

  @rewards.register("length_penalty_test")
  def _length(completions, answers, config, **kwargs):
    return np.array([-len(c) / 100 for c in completions], np.float32)

  try:
    total, _, parts = rewards.combine(_exact_config(exact=1.0, length_penalty_test=1.0),
                                      ["<answer>ab</answer>", "ab"], ["ab", "ab"])
    np.testing.assert_allclose(total, [1.0 - 0.19, -0.02], rtol=1e-6)   # 19 and 2 characters
    with pytest.raises(ValueError, match="registered twice"):
      rewards.register("length_penalty_test")(_length)
  finally:
    rewards.REGISTRY.unregister("length_penalty_test")
  with pytest.raises(ValueError, match="unknown reward kind"):
    rewards.get("length_penalty_test")


def test_default_config_is_ghpo():
  config = rewards.default_config()
  assert dict(config.weights) == {"math": 1.0, "format": 0.5}
  assert config.accuracy == "math"
