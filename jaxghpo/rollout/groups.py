"""Group rollout and batch packing: problems + hint ratios -> scored groups -> the one RLBatch.

A "group" is the G responses sampled for one prompt. This module holds everything between the
scheduler's ratios and the train step (docs/DESIGN.md, the data path):

  hint_texts      the hint of each problem at its ratio (true trace prefix, or corrupted for ablations)
  render          prompts with hints -> sampler prompt ids and where the hint tokens are
  GroupSampler    samplers for P, P/2, P/4 problems; a call samples, decodes and scores -> Groups
  Groups          B groups as arrays with B rows each (prompt ids as the sampler padded them, tokens,
                  logprobs, lengths, rewards, completions); the host loop copies rows generically
  to_batch        final Groups + advantages -> the RLBatch (built once, numpy; placed once with
                  RLBatch.to_global)
  decode          response tokens -> completion texts

Shapes: B problems (groups) in a call, G samples per problem, Lp prompt columns (left-padded), N new
tokens, R = B * G rows (prompt-major: row b * G + g is sample g of problem b).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np

from jaxghpo import derived, rl
from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates
from jaxghpo.data.example import Example
from jaxghpo.parallel import hosts
from jaxghpo.rollout import penalties
from jaxghpo.rollout.sampler import Sampler


@dataclasses.dataclass
class Groups:
  """B groups; every field has B rows (one per problem), so rows move between Groups field by field."""
  prompt_ids: np.ndarray    # int32 [B, Lp]: the sampler's left-padded prompt (+ forced hint, "response" placement)
  prompt_valid: np.ndarray  # bool [B, Lp]
  hint_mask: np.ndarray     # bool [B, Lp]: hint tokens among the prompt columns (either placement)
  tokens: np.ndarray        # int32 [B, G, N]: sampled tokens, pad after the end
  logprobs: np.ndarray      # float32 [B, G, N]: the sampler's logprob of each token
  lengths: np.ndarray       # int32 [B, G]
  rewards: np.ndarray       # float32 [B, G]: total reward (what advantages are made of)
  accuracy: np.ndarray      # float32 [B, G]: answer correctness (what the scheduler reads)
  completions: np.ndarray   # object [B, G]: decoded texts (forced hint prefix included, "response" placement)
  hint_text: np.ndarray     # object [B]: the hint as cut ("" for none)
  confidence: np.ndarray | None = None  # float32 [B, G, N]: DeepConf token confidence (evaluation)
  stopped: np.ndarray | None = None     # bool [B, G]: ended by DeepConf online stopping (with confidence)
  # The Guide layout (rl.guide): the unhinted prompt followed by the hint as response tokens
  # (templates' "response" rendering), left-padded in Lp columns; the hint's columns. None otherwise.
  guide_prompt_ids: np.ndarray | None = None    # int32 [B, Lp]
  guide_prompt_valid: np.ndarray | None = None  # bool [B, Lp]
  guide_hint_mask: np.ndarray | None = None     # bool [B, Lp]


def hint_texts(examples: Sequence[Example], ratios: np.ndarray, *, unit: str, corruption: str, tokenizer,
               rng: np.random.Generator) -> list[str]:
  """The hint of each problem at its ratio: a true trace prefix, or a corrupted one for the ablations."""
  out = []
  others = None
  if corruption == "other" and len({ex.problem_id for ex in examples}) > 1:
    others = hints_lib.pick_other([ex.problem_id for ex in examples], [ex.level for ex in examples], rng)
  for i, (ex, ratio) in enumerate(zip(examples, ratios)):
    ratio = float(ratio)
    if not ratio > 0:
      out.append("")
      continue
    if corruption == "none":
      out.append(hints_lib.cut(ex.steps, ratio, unit, tokenizer=tokenizer, step_sep=ex.step_sep))
      continue
    n_steps = hints_lib.num_hint_steps(ex.steps, ratio)
    if corruption == "shuffle":
      out.append(hints_lib.corrupt_shuffle(ex.steps, n_steps, rng, step_sep=ex.step_sep))
    elif corruption == "garble":
      out.append(hints_lib.corrupt_garble(ex.steps, n_steps, rng, step_sep=ex.step_sep))
    elif corruption == "other":
      other = examples[int(others[i])] if others is not None else ex
      out.append(hints_lib.corrupt_other(other.steps, n_steps, step_sep=ex.step_sep))
    else:
      raise ValueError(f"config.hints.corruption={corruption!r} is not one of none, other, shuffle, garble")
  return out


def render(examples: Sequence[Example], hint_text: Sequence[str], *, placement: str, style: str, tokenizer,
           max_prompt_len: int) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
  """(sampler prompts, hint_start int [B], hint_tokens int [B]) for `examples` with their hints.

  A sampler prompt is the prompt, plus the forced hint prefix for the "response" placement; its hint
  tokens are [hint_start, hint_start + hint_tokens). "prompt" placement: the renderer's exact span of
  the hint inside the prompt (templates.Rendered.hint_span: never the marker after it or a chat
  template's assistant header); "response" placement: the forced prefix at the very end.
  """
  prompts, hint_start, hint_tokens = [], [], []
  for ex, hint in zip(examples, hint_text):
    r = templates.render(ex, hint, placement, tokenizer, style)
    ids = list(r.prompt_ids) + list(r.hint_ids)
    if len(ids) > max_prompt_len:
      raise ValueError(f"problem {ex.problem_id} with a hint of {len(hint)} characters needs {len(ids)} prompt "
                       f"tokens > config.rollout.max_prompt_len={max_prompt_len}; raise max_prompt_len "
                       "(it must hold the longest prompt plus the longest hint)")
    prompts.append(ids)
    if placement == "prompt":
      start, end = r.hint_span  # (n, n) without a hint
      hint_start.append(start)
      hint_tokens.append(end - start)
    else:
      hint_start.append(len(r.prompt_ids))
      hint_tokens.append(len(r.hint_ids))
  return prompts, np.asarray(hint_start, np.int64), np.asarray(hint_tokens, np.int64)


def hint_mask(prompt_valid_BxLp: np.ndarray, hint_start_B: np.ndarray, hint_tokens_B: np.ndarray) -> np.ndarray:
  """bool [B, Lp]: the columns of tokens [hint_start, hint_start + hint_tokens) of each left-padded prompt."""
  Lp = prompt_valid_BxLp.shape[1]
  start_B = Lp - prompt_valid_BxLp.sum(1) + hint_start_B
  cols = np.arange(Lp)[None, :]
  return (cols >= start_B[:, None]) & (cols < (start_B + hint_tokens_B)[:, None]) & prompt_valid_BxLp


def decode(tokenizer, tokens_RxN: np.ndarray, lengths_R: np.ndarray, eos_id: int | None) -> list[str]:
  """Completion texts: tokens up to the length, without the EOS token."""
  out = []
  for row, n in zip(tokens_RxN, lengths_R):
    ids = [int(t) for t in row[: int(n)]]
    if ids and eos_id is not None and ids[-1] == eos_id:
      ids = ids[:-1]
    out.append(tokenizer.decode(ids, skip_special_tokens=False))
  return out


class GroupSampler:
  """Samples, decodes and scores groups for problems at hint ratios.

  Holds one compiled Sampler per bucket of P, P/2, P/4 problems (global counts; those the mesh and the
  process count divide), all with Lp prompt columns and N new tokens. A call with `width` problems per
  host uses the smallest bucket that holds them (chunks of the largest otherwise); `width` is the
  agreed maximum over hosts, so every host makes the same sampler calls whatever its own count.

  score(completions, answers, problems=, contexts=) -> (total float32 [R], accuracy float32 [R]); contexts
  are the prompt-side hints the completions continue (response-placed hints are in the completions).
  penalty: the TIP thought-switch penalty every call decodes with (penalties.from_config; None: off).
  """

  def __init__(self, model, mesh, tokenizer, score: Callable, config, *, P: int, max_prompt_len: int,
               max_new_tokens: int, divisors=(1, 2, 4), return_confidence: bool = False,
               penalty: penalties.ThoughtSwitchPenalty | None = None, guide: bool = False):
    self.config, self.tokenizer, self.score = config, tokenizer, score
    self.guide = bool(guide)  # also lay out each group for the Guide loss (Groups.guide_*)
    self.G = int(config.rollout.group_size)
    self.eos_id = tokenizer.eos_token_id
    self.pad_id = tokenizer.pad_token_id or 0
    self.max_prompt_len = int(max_prompt_len)
    self.penalty = penalty
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    n_proc = jax.process_count()
    sizes = []
    for div in divisors:
      p = P // div
      if p >= n_proc and (p * self.G) % shards == 0 and p % n_proc == 0 and p not in sizes:
        sizes.append(p)
    self.samplers = {p: Sampler(model, batch_size=p, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens,
                                num_samples=self.G, mesh=mesh, return_confidence=return_confidence)
                     for p in sizes}

  def __call__(self, params, examples: Sequence[Example], ratios, rng, *, width: int | None = None,
               temperature: float | None = None, timer: dict | None = None, stop_threshold=None,
               stop_window: int = 1, keys=None) -> Groups:
    """Groups for `examples` (this host's) at hint `ratios` float32 [B]; width >= B (default B) problems
    per host are sampled, the rows past B inactive. timer["reward_s"] accumulates the scoring time.
    stop_threshold float32 [B], stop_window: DeepConf online stopping (Sampler; needs return_confidence).
    keys: None, or raw key data [B, ...] of one key per problem (rollout/crn.py): each problem's samples
    draw from its own key (common random numbers); `rng` then only seeds the hint corruption."""
    c = self.config
    G, n_proc = self.G, jax.process_count()
    width = len(examples) if width is None else int(width)
    hint_rng = np.random.default_rng([derived.seed(c, "hint_corruption"),
                                      int(jax.random.randint(rng, (), 0, 2**31 - 1))])
    texts = hint_texts(examples, ratios, unit=c.hints.unit, corruption=c.hints.corruption,
                       tokenizer=self.tokenizer, rng=hint_rng)
    prompts, hint_start, hint_tokens = render(examples, texts, placement=c.hints.placement, style=c.data.style,
                                              tokenizer=self.tokenizer, max_prompt_len=self.max_prompt_len)
    parts = {"prompt_ids": [], "prompt_valid": [], "tokens": [], "logprobs": [], "lengths": [], "confidence": [],
             "stopped": []}
    start = 0
    while start < width:
      # Buckets are global sizes; this host brings its share of each call (maybe fewer rows, maybe none).
      bucket = min((p for p in self.samplers if p // n_proc >= width - start), default=max(self.samplers))
      chunk = prompts[start:start + bucket // n_proc]
      rng, key = jax.random.split(rng)
      stops = None if stop_threshold is None else np.asarray(stop_threshold, np.float32)[start:start + len(chunk)]
      chunk_keys = None if keys is None else np.asarray(keys)[start:start + len(chunk)]
      out = self.samplers[bucket](params, chunk, rng=key, row_keys=chunk_keys,
                                  temperature=c.rollout.temperature if temperature is None else temperature,
                                  top_p=c.rollout.top_p, top_k=c.rollout.top_k, eos_id=self.eos_id,
                                  pad_id=self.pad_id, penalty=self.penalty, stop_threshold=stops,
                                  stop_window=stop_window)
      b = len(chunk)
      parts["prompt_ids"].append(out.prompt_ids[:b])
      parts["prompt_valid"].append(out.prompt_valid[:b])
      for name in ("tokens", "logprobs", "lengths", "confidence", "stopped"):
        value = getattr(out, name)
        if value is not None:
          parts[name].append(hosts.local_rows(value)[:b * G])
      start += bucket // n_proc
    B = len(examples)
    arrays = {name: np.concatenate(v) for name, v in parts.items() if v}
    N = arrays["tokens"].shape[1]
    completions = decode(self.tokenizer, arrays["tokens"], arrays["lengths"], self.eos_id)
    if c.hints.placement == "response":
      completions = [texts[i // G] + text for i, text in enumerate(completions)]
    t0 = time.perf_counter()
    if B:
      contexts = [texts[i // G] if c.hints.placement == "prompt" else "" for i in range(B * G)]
      total, accuracy = self.score(completions, [ex.answer for ex in examples for _ in range(G)],
                                   problems=[ex.problem for ex in examples for _ in range(G)], contexts=contexts)
    else:
      total = accuracy = np.zeros(0, np.float32)
    if timer is not None:
      timer["reward_s"] = timer.get("reward_s", 0.0) + time.perf_counter() - t0
    confidence, stopped = arrays.get("confidence"), arrays.get("stopped")
    guide = {}
    if self.guide:
      guide = guide_layout(examples, texts, style=c.data.style, tokenizer=self.tokenizer,
                           max_prompt_len=self.max_prompt_len, Lp=arrays["prompt_ids"].shape[1],
                           pad_id=self.pad_id)
    return Groups(
        prompt_ids=arrays["prompt_ids"], prompt_valid=arrays["prompt_valid"],
        hint_mask=hint_mask(arrays["prompt_valid"], hint_start, hint_tokens),
        tokens=arrays["tokens"].reshape(B, G, N), logprobs=arrays["logprobs"].reshape(B, G, N),
        lengths=arrays["lengths"].reshape(B, G),
        rewards=np.asarray(total, np.float32).reshape(B, G), accuracy=np.asarray(accuracy, np.float32).reshape(B, G),
        completions=np.asarray(completions, object).reshape(B, G), hint_text=np.asarray(texts, object).reshape(B),
        confidence=None if confidence is None else confidence.reshape(B, G, N),
        stopped=None if stopped is None else stopped.reshape(B, G), **guide)


def guide_layout(examples: Sequence[Example], hint_text: Sequence[str], *, style: str, tokenizer,
                 max_prompt_len: int, Lp: int, pad_id: int) -> dict[str, np.ndarray]:
  """The Guide layout of B problems: {guide_prompt_ids int32 [B, Lp], guide_prompt_valid bool [B, Lp],
  guide_hint_mask bool [B, Lp]}: the prompt WITHOUT the hint followed by the hint as the first response
  tokens (templates' "response" rendering, whatever placement the samples were drawn with), left-padded.

  A trace-prefix hint is the start of the unhinted context's own answer, so "the hinted sample trained for
  the context without the hint" is the whole trace, hint + continuation, after the unhinted prompt
  (docs/DESIGN.md, "The Guide loss")."""
  prompts, hint_start, hint_tokens = render(examples, hint_text, placement="response", style=style,
                                            tokenizer=tokenizer, max_prompt_len=max_prompt_len)
  B = len(prompts)
  ids = np.full((B, Lp), pad_id, np.int32)
  valid = np.zeros((B, Lp), bool)
  for i, p in enumerate(prompts):
    ids[i, Lp - len(p):] = p
    valid[i, Lp - len(p):] = True
  return {"guide_prompt_ids": ids, "guide_prompt_valid": valid,
          "guide_hint_mask": hint_mask(valid, hint_start, hint_tokens)}


def to_batch(groups: Groups, adv_BxG: np.ndarray, keep_B: np.ndarray, *, train_hint: bool,
             guide: bool = False) -> rl.RLBatch:
  """The train step's RLBatch (numpy, this host's R = B * G rows) from the final groups.

  adv_BxG: advantages; keep_B: groups to train on (the others keep their rows, without loss tokens).
  train_hint: the hint tokens are response-placed and rl.hint_nll_coef > 0 (UFT): the batch's static
  prompt_len becomes 1, so that the step computes logprobs over the forced hint (the last tokens of the
  prompt columns) and its hint-NLL term sees them as response hint tokens; the policy-gradient loss
  tokens are unchanged. Otherwise the hint tokens are context (segment HINT, prompt columns).
  guide: the Guide loss (rl.guide; docs/DESIGN.md): every row is [unhinted prompt | hint + sampled
  response]: the hint tokens become policy-gradient tokens (segment RESPONSE) whose old logprob is 0 (the
  hinted sampling distribution gave them probability 1: they were given, not drawn), the sampled tokens
  keep the sampler's logprobs (drawn with the hint in context), and prompt_len is 1 so the step computes
  logprobs over the hint columns. Rows without a hint are the plain layout.
  """
  if guide:
    return _guide_batch(groups, adv_BxG, keep_B)
  B, G, N = groups.tokens.shape
  R = B * G
  keep_R = np.repeat(np.asarray(keep_B, bool), G)
  response_valid = (np.arange(N)[None, :] < groups.lengths.reshape(R, 1)) & keep_R[:, None]
  prompt_valid = np.repeat(groups.prompt_valid, G, axis=0)
  prompt_hint = np.repeat(groups.hint_mask, G, axis=0) & prompt_valid
  if train_hint:
    prompt_hint &= keep_R[:, None]  # a dropped group (filter) trains on nothing, its hint included
  batch = rl.make_batch(np.repeat(groups.prompt_ids, G, axis=0), prompt_valid, groups.tokens.reshape(R, N),
                        response_valid, np.where(keep_R, np.asarray(adv_BxG).reshape(R), 0.0),
                        groups.logprobs.reshape(R, N), prompt_hint=prompt_hint)
  return batch.replace(prompt_len=1) if train_hint else batch


def _guide_batch(groups: Groups, adv_BxG: np.ndarray, keep_B: np.ndarray) -> rl.RLBatch:
  """to_batch's Guide layout (see there)."""
  if groups.guide_prompt_ids is None:
    raise ValueError("to_batch(guide=True) needs Groups sampled with GroupSampler(guide=True) (rl.guide)")
  B, G, N = groups.tokens.shape
  R = B * G
  keep_R = np.repeat(np.asarray(keep_B, bool), G)
  response_valid = (np.arange(N)[None, :] < groups.lengths.reshape(R, 1)) & keep_R[:, None]
  prompt_valid = np.repeat(groups.guide_prompt_valid, G, axis=0)
  hint_RxLp = np.repeat(groups.guide_hint_mask, G, axis=0) & prompt_valid & keep_R[:, None]
  batch = rl.make_batch(np.repeat(groups.guide_prompt_ids, G, axis=0), prompt_valid, groups.tokens.reshape(R, N),
                        response_valid, np.where(keep_R, np.asarray(adv_BxG).reshape(R), 0.0),
                        groups.logprobs.reshape(R, N))
  return rl.guide_batch(batch, hint_RxLp)
