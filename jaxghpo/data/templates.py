"""Prompt templates: a problem, a hint and a placement -> prompt token ids (+ hint ids).

Placements (where a hint, a prefix of the solution from curriculum/hints.py, goes):
  "prompt"    GHPO: the hint is part of the prompt; its tokens are context, never trained on.
  "response"  LUFFY / QuestA: the prompt has no hint; the hint's tokens are the first tokens of the
              response, which the model continues. `Rendered.hint_ids` holds them so the trainer
              can mark them as hint (no policy gradient, KL or entropy on them).

Styles (answer formats):
  "plain"         the procedural tasks (data/tasks/): no instructions, no chat template. Its vocabulary
                  has no English, so the in-prompt hint is marked by a single token:
                                 prompt (+ hint ids)                 model writes
                      no hint    <bos>k+3-5+2=                       k+3=n-5+2;n-5=i+2;i+2=k<eos>
                      prompt     <bos>k+3-5+2=k+3=n-5+2;n-5=i+2;|    i+2=k<eos>
                      response   <bos>k+3-5+2= + k+3=n-5+2;n-5=i+2;  i+2=k<eos>
                  A "steps" hint ends with the step separator, so in both placements the model
                  continues the trace at the step after the hint: the work left in a hinted level-L
                  problem is the response of a level-(L - s) problem.
  "boxed"         real math: the final answer in \\boxed{} (Qwen2.5-Math's instruction).
  "think_answer"  real math: <think>reasoning</think><answer>answer</answer>; with the response
                  placement the forced response prefix is "<think>\\n" + hint (unless the chat
                  template already opens the think block in the prompt).
  For "boxed" and "think_answer" the instruction is a system message and the user message is the
  problem, followed with the prompt placement by GHPO's sentence and the hint:
      problem + "\\nThe following text is the beginning part of the answer, which you can refer
      to for solving the problem:\\n" + hint
  The tokenizer's chat template renders them when it has one (add_generation_prompt=True; if it
  rejects a system message, the instruction is put in front of the user text); otherwise a plain
  text template (PLAIN_MATH_TEMPLATE) is used.
"""
from __future__ import annotations

import dataclasses

import jinja2

from jaxghpo.data.example import Example
from jaxghpo.data.tokenizer import HINT_MARKER

PLACEMENTS = ("prompt", "response")
STYLES = ("plain", "boxed", "think_answer")
GHPO_HINT_SENTENCE = ("\nThe following text is the beginning part of the answer, which you can "
                      "refer to for solving the problem:\n")
INSTRUCTIONS = {
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
    "think_answer": ("Reason about the problem step by step inside <think> </think>, then write "
                     "only the final answer inside <answer> </answer>, i.e. "
                     "<think> reasoning here </think><answer> answer here </answer>."),
}
PLAIN_MATH_TEMPLATE = "{instruction}\n\nProblem: {user}\n\nSolution:\n"
THINK_OPEN = "<think>\n"


@dataclasses.dataclass(frozen=True)
class Rendered:
  """A rendered prompt. Segment lengths are len(prompt_ids) and len(hint_ids).

  prompt_ids: token ids of the prompt (what the sampler is given), special tokens included.
  hint_ids: token ids forced as the start of the response ("response" placement; () otherwise).
  prompt_text: the prompt as text (prompt_ids encode it).
  hint_text: the forced response prefix as text (hint_ids encode it; "" for "prompt" placement).
  hint_span: (start, end), the tokens prompt_ids[start:end] that encode the hint inside the prompt
    ("prompt" placement; an empty span (n, n) at the prompt's end otherwise). Exact: found from the
    tokenizer's character offsets of the rendered text, so a chat template's tokens around the user
    message (the assistant header, a marker after the hint) are never in it.
  """
  prompt_ids: tuple[int, ...]
  hint_ids: tuple[int, ...]
  prompt_text: str
  hint_text: str = ""
  hint_span: tuple[int, int] = (0, 0)


def _check(placement: str, style: str) -> None:
  if placement not in PLACEMENTS:
    raise ValueError(f"hint placement {placement!r} is unknown; use one of {PLACEMENTS}.")
  if style not in STYLES:
    raise ValueError(f"answer style {style!r} is unknown; use one of {STYLES}.")


def _think_opened(prompt_text: str) -> bool:
  return prompt_text.rstrip().endswith("<think>")


def _math_prompt(user_text: str, style: str, tokenizer) -> tuple[str, bool]:
  """(prompt text, whether the tokenizer should add its own special tokens when encoding it)."""
  instruction = INSTRUCTIONS[style]
  if getattr(tokenizer, "chat_template", None):
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": user_text}]
    try:
      text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except jinja2.TemplateError:  # templates without a system role (e.g. Gemma's) raise here
      merged = [{"role": "user", "content": instruction + "\n\n" + user_text}]
      text = tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
    return text, False  # a chat template writes its own BOS
  return PLAIN_MATH_TEMPLATE.format(instruction=instruction, user=user_text), True


def _hint_chars(text: str, user_text: str, hint_text: str) -> tuple[int, int]:
  """Character span [start, end) of the hint in the rendered prompt `text`; the hint ends `user_text`,
  the user message, which the chat template wrote somewhere in `text` (possibly with trailing
  whitespace trimmed, as some templates do)."""
  for user, hint in ((user_text, hint_text), (user_text.strip(), hint_text.rstrip())):
    at = text.rfind(user) if hint else -1
    if at >= 0:
      end = at + len(user)
      return end - len(hint), end
  raise ValueError("the tokenizer's chat template changed the user message, so the hint cannot be found "
                   "in the rendered prompt; use a template that writes message content unchanged")


def _token_span(tokenizer, text: str, add_special: bool, chars: tuple[int, int], prompt_ids) -> tuple[int, int]:
  """The tokens of prompt_ids (= encode(text)) that cover characters [chars[0], chars[1]) of text: every
  token that overlaps them (a token straddling an edge of the hint is counted as hint)."""
  start_c, end_c = chars
  try:
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
  except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
    offsets = None
  if offsets is not None and list(enc["input_ids"]) == list(prompt_ids):
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end_c and b > start_c]
    if inside:
      return inside[0], inside[-1] + 1
  # No offsets: the hint's edges must be token edges, which encoding the text up to each edge shows.
  before = tokenizer.encode(text[:start_c], add_special_tokens=add_special)
  upto = tokenizer.encode(text[:end_c], add_special_tokens=add_special)
  if list(prompt_ids[:len(before)]) != list(before) or list(prompt_ids[:len(upto)]) != list(upto):
    raise ValueError(f"cannot place the hint's tokens in the prompt: tokenizer {type(tokenizer).__name__} "
                     "gives no character offsets and merges tokens across the hint's edges; use a fast tokenizer")
  return len(before), len(upto)


def _layout(example: Example, hint_text: str, placement: str, tokenizer, style: str
            ) -> tuple[str, bool, str, tuple[int, int]]:
  """(prompt text, whether encoding it adds the tokenizer's special tokens, forced response prefix,
  character span [start, end) of an in-prompt hint in the text ((0, 0) without one)).

  What `render` encodes and where its hint is.
  """
  _check(placement, style)
  in_prompt = placement == "prompt" and bool(hint_text)
  if style == "plain":
    text = (tokenizer.bos_token or "") + example.problem
    chars = (len(text), len(text) + len(hint_text)) if in_prompt else (0, 0)
    if in_prompt:
      text += hint_text + HINT_MARKER
    add_special = False  # the BOS (if any) is written into the text above
  else:
    user_text = example.problem + (GHPO_HINT_SENTENCE + hint_text if in_prompt else "")
    text, add_special = _math_prompt(user_text, style, tokenizer)
    chars = _hint_chars(text, user_text, hint_text) if in_prompt else (0, 0)
  prefix = ""
  if placement == "response" and hint_text:
    prefix = hint_text
    if style == "think_answer" and not _think_opened(text):
      prefix = THINK_OPEN + hint_text
  return text, add_special, prefix, chars


def render_text(example: Example, hint_text: str, placement: str, tokenizer, style: str
                ) -> tuple[str, bool, str]:
  """(prompt text, whether encoding it adds the tokenizer's special tokens, forced response prefix).

  What `render` encodes; apart so that many prompts can be encoded in one batched tokenizer call.
  """
  return _layout(example, hint_text, placement, tokenizer, style)[:3]


def render(example: Example, hint_text: str, placement: str, tokenizer, style: str) -> Rendered:
  """Renders `example`'s prompt with `hint_text` ("" = no hint) at `placement` in `style`.

  tokenizer: an HF tokenizer (a procedural task's, or a real model's).
  """
  text, add_special, prefix, chars = _layout(example, hint_text, placement, tokenizer, style)
  prompt_ids = tokenizer.encode(text, add_special_tokens=add_special)
  hint_ids = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
  span = (len(prompt_ids), len(prompt_ids))
  if placement == "prompt" and hint_text:
    span = _token_span(tokenizer, text, add_special, chars, prompt_ids)
  return Rendered(prompt_ids=tuple(int(i) for i in prompt_ids),
                  hint_ids=tuple(int(i) for i in hint_ids), prompt_text=text, hint_text=prefix,
                  hint_span=tuple(int(i) for i in span))


def target_text(example: Example, hint_text: str, placement: str, style: str, *,
                prompt_text: str = "") -> str:
  """What the model should write after the prompt (and after the hint ids), EOS excluded.

  For teacher forcing (SFT) and for reading a response back. "plain": the solution after the hint
  (both placements). "boxed"/"think_answer": with the prompt placement the full answer (GHPO: the
  model writes a whole solution with the hint as context); with the response placement the part
  after the forced prefix. Raises if a continuation is asked for a hint that is not a prefix of the
  solution (a corrupted hint has no true continuation).
  """
  _check(placement, style)
  solution = example.solution
  if style == "think_answer":
    opener = "" if _think_opened(prompt_text) else THINK_OPEN
    solution = f"{opener}{solution}\n</think>\n<answer>{example.answer}</answer>"
    if placement == "response" and hint_text:
      hint_text = opener + hint_text
  continues = style == "plain" or placement == "response"
  if not continues or not hint_text:
    return solution
  if not solution.startswith(hint_text):
    raise ValueError(f"hint {hint_text[:40]!r}... is not a prefix of problem "
                     f"{example.problem_id}'s solution, so it has no continuation; use target_text only with true hints.")
  return solution[len(hint_text):]
