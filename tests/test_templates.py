"""Prompt templates: chains' compact form, GHPO's in-prompt hint, response prefix, chat templates."""
import string

import pytest

from jaxghpo.curriculum import hints
from jaxghpo.data import templates
from jaxghpo.data import tokenizer as task_tokenizer
from jaxghpo.data.example import Example
from jaxghpo.data.tasks import chains

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM_CHAT = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                  "{{ raise_exception('System role not supported') }}{% endif %}"
                  "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}[assistant]{% endif %}")
THINK_CHAT = CHAT.replace("<|assistant|>", "<|assistant|><think>\n")
ASCII = "".join(c for c in string.printable if c not in "\x0b\x0c")
MATH = Example(problem_id=7, problem="What is $\\frac{1}{2}+\\frac{1}{2}$?",
               steps=("We add: $\\frac{1}{2}+\\frac{1}{2} = 1$.", "So the answer is $\\boxed{1}$."),
               answer="1", level=-1, step_sep="\n")


@pytest.fixture(scope="module")
def tok():
  return task_tokenizer.load("chains")


def _chat_tok(template):
  """A tiny local HF tokenizer with a chat template (the chains builder over printable ASCII)."""
  return task_tokenizer.build_char_tokenizer(ASCII, chat_template=template)


def test_chains_without_hint(tok):
  ex = chains.make_example("k+3-5+2=")
  for placement in templates.PLACEMENTS:
    r = templates.render(ex, "", placement, tok, "plain")
    assert r.prompt_text == "<bos>k+3-5+2="
    assert r.prompt_ids == (2, 15, 41, 34, 42, 36, 41, 33, 43)
    assert r.hint_ids == () and r.hint_text == ""
  assert templates.target_text(ex, "", "prompt", "plain") == "k+3=n-5+2;n-5=i+2;i+2=k"


def test_chains_hint_in_prompt(tok):
  ex = chains.make_example("k+3-5+2=")
  hint = hints.build(ex, 0.67, "steps")
  r = templates.render(ex, hint, "prompt", tok, "plain")
  assert hint == "k+3=n-5+2;n-5=i+2;"  # floor(0.67 * 3) = 2 steps
  assert r.prompt_text == "<bos>k+3-5+2=k+3=n-5+2;n-5=i+2;|"
  assert r.prompt_ids == tuple(tok.encode(r.prompt_text))
  assert r.prompt_ids[-1] == 4 and len(r.prompt_ids) == 1 + 8 + 18 + 1
  assert r.hint_ids == ()
  assert templates.target_text(ex, hint, "prompt", "plain") == "i+2=k"  # the last step


def test_chains_hint_in_response(tok):
  ex = chains.make_example("k+3-5+2=")
  hint = hints.build(ex, 0.4, "steps")
  r = templates.render(ex, hint, "response", tok, "plain")
  assert r.prompt_text == "<bos>k+3-5+2=" and r.hint_text == "k+3=n-5+2;"  # floor(1.2) = 1 step
  #                       k   +   3   =   n   -   5   +   2   ;
  assert r.hint_ids == (15, 41, 34, 43, 18, 42, 36, 41, 33, 44)
  assert templates.target_text(ex, hint, "response", "plain") == "n-5=i+2;i+2=k"
  # prompt + hint + target is exactly the unhinted prompt + full solution
  full = r.prompt_text + r.hint_text + templates.target_text(ex, hint, "response", "plain")
  assert full == "<bos>k+3-5+2=k+3=n-5+2;n-5=i+2;i+2=k"


@pytest.mark.parametrize("placement", templates.PLACEMENTS)
def test_hinted_hard_problem_continues_like_an_easy_one(placement, tok):
  # after s hint steps of a level-L problem, what is left to write is the response to the
  # level-(L - s) problem whose text is what follows "=" in the last hint step, + "="
  # (e.g. hint "k+3=n-5+2;" of k+3-5+2= leaves the response "n-5=i+2;i+2=k" of n-5+2=)
  for ex in chains.generate("train", 60, seed=4, levels=[6, 7, 8]):
    for ratio in (0.25, 0.5, 0.75):
      hint = hints.build(ex, ratio, "steps")
      s = hint.count(";")
      easy = chains.make_example(ex.steps[s - 1].split("=")[1] + "=")
      assert easy.level == ex.level - s
      assert templates.target_text(ex, hint, placement, "plain") == easy.solution
      r = templates.render(ex, hint, placement, tok, "plain")
      assert s >= 1 and hint.endswith(";")
      seen = tok.decode(list(r.prompt_ids) + list(r.hint_ids))  # what the model continues
      assert seen == "<bos>" + ex.problem + hint + ("|" if placement == "prompt" else "")


def test_ghpo_sentence_with_a_chat_template():
  tok = _chat_tok(CHAT)
  hint = hints.build(MATH, 0.5, "steps")
  r = templates.render(MATH, hint, "prompt", tok, "boxed")
  want = ("<|system|>Please reason step by step, and put your final answer within \\boxed{}.\n"
          "<|user|>What is $\\frac{1}{2}+\\frac{1}{2}$?\nThe following text is the beginning part "
          "of the answer, which you can refer to for solving the problem:\n"
          "We add: $\\frac{1}{2}+\\frac{1}{2} = 1$.\n\n<|assistant|>")
  assert r.prompt_text == want
  assert r.prompt_ids == tuple(tok.encode(want, add_special_tokens=False))
  assert tok.decode(list(r.prompt_ids)) == want
  assert r.hint_ids == ()
  assert templates.target_text(MATH, hint, "prompt", "boxed") == MATH.solution  # GHPO: full answer


def test_response_placement_with_a_chat_template():
  tok = _chat_tok(CHAT)
  hint = hints.build(MATH, 0.5, "steps")
  r = templates.render(MATH, hint, "response", tok, "boxed")
  assert "The following text" not in r.prompt_text and hint not in r.prompt_text
  assert r.prompt_text.endswith("<|assistant|>")
  assert r.hint_text == hint and tok.decode(list(r.hint_ids)) == hint
  assert templates.target_text(MATH, hint, "response", "boxed") == MATH.steps[1]


def test_think_answer_format():
  tok = _chat_tok(CHAT)
  hint = hints.build(MATH, 0.5, "steps")
  r = templates.render(MATH, hint, "response", tok, "think_answer")
  assert "<think> </think>" in r.prompt_text and "<answer> </answer>" in r.prompt_text
  assert r.hint_text == "<think>\n" + hint
  rest = templates.target_text(MATH, hint, "response", "think_answer", prompt_text=r.prompt_text)
  assert r.hint_text + rest == "<think>\n" + MATH.solution + "\n</think>\n<answer>1</answer>"
  # a chat template that already opens the think block: no second opener
  opened = _chat_tok(THINK_CHAT)
  r = templates.render(MATH, hint, "response", opened, "think_answer")
  assert r.prompt_text.endswith("<think>\n") and r.hint_text == hint
  rest = templates.target_text(MATH, hint, "response", "think_answer", prompt_text=r.prompt_text)
  assert rest == MATH.steps[1] + "\n</think>\n<answer>1</answer>"


def test_template_without_system_role_gets_the_instruction_in_the_user_text():
  r = templates.render(MATH, "", "prompt", _chat_tok(NO_SYSTEM_CHAT), "boxed")
  assert r.prompt_text == ("[user] " + templates.INSTRUCTIONS["boxed"] + "\n\n" + MATH.problem
                           + "\n[assistant]")


def test_plain_template_when_there_is_no_chat_template():
  tok = task_tokenizer.build_char_tokenizer(ASCII)
  r = templates.render(MATH, "", "prompt", tok, "boxed")
  assert r.prompt_text == (templates.INSTRUCTIONS["boxed"] + "\n\nProblem: " + MATH.problem
                           + "\n\nSolution:\n")
  assert tok.decode(list(r.prompt_ids)) == r.prompt_text


def test_errors():
  tok = task_tokenizer.load("chains")
  ex = chains.make_example("a+1=")
  with pytest.raises(ValueError, match="placement"):
    templates.render(ex, "", "middle", tok, "plain")
  with pytest.raises(ValueError, match="style"):
    templates.render(ex, "", "prompt", tok, "latex")
  with pytest.raises(ValueError, match="not a prefix"):
    # the solution is "a+1=b+1;b+1=c"; "a+1=c+1;" is a well-formed but wrong first step
    templates.target_text(chains.make_example("a+1+1="), "a+1=c+1;", "response", "plain")
