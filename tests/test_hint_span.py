"""The hint's exact token span inside a rendered prompt, and the prompt-hint mask built from it: it covers
the hint's tokens and nothing else (not the chains marker, not a chat template's assistant header)."""
import numpy as np
import pytest

from jaxghpo.curriculum import hints
from jaxghpo.data import files, templates
from jaxghpo.data import tokenizer as task_tokenizer
from jaxghpo.data.example import Example
from jaxghpo.data.tasks import chains
from jaxghpo.rollout import groups
from tests import hf_fixtures


@pytest.fixture(scope="module")
def qwen_tok():
  return hf_fixtures.make_math_tokenizer()


def math_example(i=0):
  row = hf_fixtures.math_rows(i + 1)[i]
  return Example(i, row["problem"], files.split_steps(row["solution"]), row["answer"])


@pytest.mark.parametrize("style", ["boxed", "think_answer"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_qwen_chat_template_span_is_exactly_the_hint(qwen_tok, style, ratio):
  ex = math_example()
  hint = hints.cut(ex.steps, ratio, "steps", tokenizer=qwen_tok, step_sep=ex.step_sep)
  r = templates.render(ex, hint, "prompt", qwen_tok, style)
  start, end = r.hint_span
  assert qwen_tok.decode(r.prompt_ids[start:end]) == hint
  # What follows is the end of the user turn and the assistant header: none of it is hint.
  assert qwen_tok.decode(r.prompt_ids[end:]) == "<|im_end|>\n<|im_start|>assistant\n"
  assert qwen_tok.decode(r.prompt_ids[:start]).endswith(templates.GHPO_HINT_SENTENCE)
  # The span the old count-from-the-end guess gave lands on the header.
  guessed = len(qwen_tok.encode(hint, add_special_tokens=False))
  assert (len(r.prompt_ids) - guessed, len(r.prompt_ids)) != (start, end)


def test_mask_covers_the_hint_tokens_and_not_the_assistant_header(qwen_tok):
  exs = [math_example(0), math_example(1), math_example(2)]
  ratios = np.array([0.5, 0.0, 0.75], np.float32)
  texts = groups.hint_texts(exs, ratios, unit="steps", corruption="none", tokenizer=qwen_tok,
                            rng=np.random.default_rng(0))
  width = 256
  prompts, hint_start, hint_tokens = groups.render(exs, texts, placement="prompt", style="boxed",
                                                   tokenizer=qwen_tok, max_prompt_len=width)
  valid = np.zeros((len(exs), width), bool)
  for b, ids in enumerate(prompts):
    valid[b, width - len(ids):] = True
  mask = groups.hint_mask(valid, hint_start, hint_tokens)
  header = len(qwen_tok.encode("<|im_end|>\n<|im_start|>assistant\n"))
  for b, ids in enumerate(prompts):
    padded = np.full(width, -1)
    padded[width - len(ids):] = ids
    masked = [int(t) for t in padded[mask[b]]]
    assert qwen_tok.decode(masked) == texts[b]
    assert mask[b].sum() == hint_tokens[b]
    assert not mask[b, width - header:].any()
  assert not mask[1].any()  # ratio 0: no hint


def test_chains_span_excludes_the_marker():
  tok = task_tokenizer.load("chains")
  ex = chains.make_example("k+3-5+2=")
  hint = hints.build(ex, 0.67, "steps")
  r = templates.render(ex, hint, "prompt", tok, "plain")
  start, end = r.hint_span
  assert (start, end) == (9, 9 + len(hint))
  assert tok.decode(r.prompt_ids[start:end]) == hint and r.prompt_ids[end] == tok.convert_tokens_to_ids("|")
  # No hint, or a response-placed one: an empty span at the prompt's end.
  for text, placement in (("", "prompt"), (hint, "response")):
    r = templates.render(ex, text, placement, tok, "plain")
    assert r.hint_span == (len(r.prompt_ids), len(r.prompt_ids))


def test_template_that_trims_the_message_still_spans_the_hint():
  trim = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}<|end|>{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
  tok = task_tokenizer.build_char_tokenizer(templates_ascii(), chat_template=trim)
  ex = Example(3, "What is 1+1?", ("First, 1+1 = 2.", "So the answer is $\\boxed{2}$."), "2")
  hint = hints.cut(ex.steps, 0.5, "steps", tokenizer=tok, step_sep=ex.step_sep)
  assert hint.endswith("\n")
  r = templates.render(ex, hint, "prompt", tok, "boxed")
  start, end = r.hint_span
  assert tok.decode(r.prompt_ids[start:end]) == hint.rstrip()


def templates_ascii():
  import string
  return "".join(c for c in string.printable if c not in "\x0b\x0c")
