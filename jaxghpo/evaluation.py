"""Evaluation: pass@k / avg@k, majority voting, DeepConf trace confidence, and a driver over a split.

Math (pure numpy):
    pass_at_k(n, c, k)            unbiased pass@k per problem (Chen et al. 2021), stable product form
    avg_at_k(correct_PxN)         mean accuracy over all samples (avg@n)
    majority_vote(answers)        the most frequent answer; ties go to the answer seen first (voting.py)
    group_confidence(conf, w)     DeepConf sliding-window means of per-token confidences (deepconf.py,
    lowest_group_confidence / bottom_percent_confidence / tail_confidence: trace-level confidences  as are
    confidence_filtered_vote      keep the most confident traces, then a confidence-weighted vote  these;
    stop_threshold                DeepConf's online stopping threshold from warm-up traces  re-exported
    early_stop_savings            tokens saved had each trace stopped at its first low-confidence window  here)

Driver (the one evaluator: the trainer and tools/evaluate.py both call `evaluate`):
    metrics, rows = evaluate(generate_fn, examples, k=8, score_fn=acc_fn, hint_ratio=0.0)
    metrics, rows = evaluate(group_generate(group_sampler, params, rng, width=w, temperature=1.0), examples,
                             k=8, batch_size=w, multihost=True, deepconf=...)   # the trainer's form
    write_rows(eval_rows_path(workdir, "test", step), rows)     # DIR/eval/test_step000100_hint0.00.jsonl

A token's confidence (DeepConf, Fu et al. 2025) is the negative mean log-probability of the top-k
candidate tokens at that position (what rollout returns when asked); high = the model is sure.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from jaxghpo import paths
from jaxghpo.deepconf import (bottom_percent_confidence, confidence_filtered_vote, early_stop_savings,  # noqa: F401
                              group_confidence, lowest_group_confidence, stop_threshold, tail_confidence,
                              trace_confidences)
from jaxghpo.voting import majority_vote, vote_counts  # noqa: F401  (re-exported: evaluation's maths)
from jaxghpo.voting import voted_correct as _voted_correct


# ------------------------------------------------------------------------------------- pass@k
def pass_at_k(n, c, k: int) -> np.ndarray:
  """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) per problem; float64, shape of broadcast(n, c).

  n: samples drawn per problem; c: how many of them are correct; k <= n.
  Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i), which never forms a large binomial.
  When n - c < k every size-k subset holds a correct sample, so pass@k = 1.
  """
  n, c = np.broadcast_arrays(np.asarray(n, np.int64), np.asarray(c, np.int64))
  k = int(k)
  if k < 1:
    raise ValueError(f"pass@k needs k >= 1, got k={k}")
  if np.any(c < 0) or np.any(c > n):
    raise ValueError(f"pass@k needs 0 <= c <= n; got n={n.tolist()}, c={c.tolist()}")
  if np.any(n < k):
    raise ValueError(f"pass@{k} needs at least k={k} samples per problem; got n={n.tolist()}. "
                     "Draw num_samples >= k.")
  if n.size == 0:
    return np.zeros(n.shape)
  i = np.arange(1, int(n.max()) + 1, dtype=np.float64)        # [I]
  in_range = (i > (n - c)[..., None]) & (i <= n[..., None])   # [..., I]: i in (n - c, n]
  factors = np.where(in_range, 1.0 - k / i, 1.0)              # < 0 only where n - c < k (then a 0 factor appears)
  product = np.prod(factors, axis=-1)
  return np.where(n - c < k, 1.0, 1.0 - product)


def avg_at_k(correct_PxN) -> float:
  """Mean accuracy over every sample of every problem (avg@n); NaN when there are none."""
  correct = np.asarray(correct_PxN, np.float64)
  return float(correct.mean()) if correct.size else float("nan")


# -------------------------------------------------------------------------------------- driver
def _field(example, name: str, default=None):
  if isinstance(example, Mapping):
    return example.get(name, default)
  return getattr(example, name, default)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
  return x


def host_share(examples: Sequence) -> list:
  """This process's contiguous share of `examples` (shares of all processes differ by at most one)."""
  from jaxghpo.parallel import hosts
  n_proc = hosts.process_count()
  if n_proc == 1:
    return list(examples)
  import jax
  bounds = np.linspace(0, len(examples), n_proc + 1).round().astype(int)
  h = jax.process_index()
  return list(examples)[bounds[h]:bounds[h + 1]]


def evaluate(generate_fn: Callable, examples: Sequence, *, k: int, score_fn: Callable | None = None,
             hint_ratio: float = 0.0, num_samples: int | None = None, batch_size: int | None = None,
             answer_fn: Callable[[str], Hashable | None] | None = None, keep_frac: float = 0.1,
             correct_threshold: float = 0.5, check_fn: Callable | None = None, hint_is_context: bool = True,
             multihost: bool = False, deepconf=None, vote_fn: Callable | None = None
             ) -> tuple[dict[str, float], list[dict]]:
  """Samples every example, scores the samples, and aggregates pass@1, pass@k and avg@k.

  This is the one evaluator: the trainer (Trainer.eval_split, through group_generate) and
  tools/evaluate.py both call it, with their own generate_fn.

  generate_fn(examples, hint_ratio, num_samples) -> completions, a list (per example) of
    ``num_samples`` strings; or (completions, confidences) with confidences a list (per example)
    of ``num_samples`` trace confidences (floats, see trace_confidences); or (completions,
    confidences, extras) with extras a list (per example) of dicts merged into its row (e.g. the
    hint text, per-token confidences "token_confidences", the samples' "scores"). It is called
    with an empty list of examples when this host has no more problems but others have (multihost).
  score_fn(completions, answers) -> float [M]: accuracy of each completion against its gold answer
    (a completion counts as correct when its score >= correct_threshold). None: the extras of
    generate_fn carry each example's "scores" (a sampler that scored its groups already).
  examples: Example objects or dicts with problem_id, problem, answer and optionally level; with
    multihost, all hosts' problems (each host samples its share, see host_share).
  num_samples: samples per example (default k; must be >= k). batch_size: examples per
    generate_fn call on this host (default all at once).
  answer_fn(completion) -> the extracted answer or None: adds majority voting, ``maj@{n}``; with
    confidences also ``conf_maj@{n}`` (confidence_filtered_vote keeping ``keep_frac``).
  check_fn(example, hint_text, completion) -> (valid, answer_right): the task's trace checker
    (procedural tasks; see chains_check). Adds ``valid_pass@1`` (answer right AND every written
    step valid: the primary metric, no chance floor) and ``answer_pass@1`` (the answer alone) to
    the metrics, and "valid" to the rows. Without it ``answer_pass@1`` is pass@1 of score_fn.
    hint_is_context: the row's "hint" is context the completion continues (prompt placement: the
    checker reads hint + completion); False: the completion holds the hint already (response placement).
  multihost: split the examples into contiguous host shares (which may differ by one), make the
    largest share's number of generate_fn calls on every host (generate_fn issues collectives), and
    aggregate the metrics over every host's problems (rows gathered with their counts). The rows
    returned are this host's. False: this process holds every problem.
  deepconf: DeepConf online (jaxghpo/deepconf.py: DeepConfOnline, or None: off). Needs generate_fn
    extras with "token_confidences" and a generate_fn that takes stop=(thresholds float32 [b],
    window) and then returns extras with "stopped" (bool per sample); each chunk draws
    num_samples - warmup_traces more samples that stop at their problem's threshold. Adds
    deepconf/* metrics (deepconf.summarize) and a "deepconf" record to each row. vote_fn: what a
    completion votes for there (default answer_fn).

  Returns (metrics, rows). metrics: "pass@1", f"pass@{k}", f"avg@{n}", "num_problems", and the same
  per level as "pass@1/level_3" etc. (levels < 0, i.e. unknown, get no per-level keys).
  rows: one JSON-able dict per example (problem_id, level, problem, answer, hint_ratio,
  completions, scores, correct, and the generate_fn's extras, validity, confidences, answers and
  voted answers when available).
  """
  from jaxghpo.parallel import hosts
  n = int(k if num_samples is None else num_samples)
  if n < k:
    raise ValueError(f"num_samples={n} is below k={k}: pass@{k} needs at least k samples per problem")
  examples = host_share(examples) if multihost else list(examples)
  batch_size = max(len(examples) if batch_size is None else int(batch_size), 1)
  # With several hosts, every host makes the largest share's number of calls (generate_fn is collective).
  calls = -(-(hosts.agreed_max(len(examples)) if multihost else len(examples)) // batch_size)
  vote_fn = vote_fn or answer_fn
  rows: list[dict] = []
  for start in range(0, calls * batch_size, batch_size):
    chunk = examples[start:start + batch_size]
    out = generate_fn(chunk, hint_ratio, n)
    out = out if isinstance(out, tuple) else (out,)
    completions, confidences, extras = (tuple(out) + (None, None))[:3]
    if len(completions) != len(chunk) or any(len(c) != n for c in completions):
      raise ValueError(f"generate_fn returned {[len(c) for c in completions]} completions for {len(chunk)} "
                       f"examples; expected {n} per example")
    answers = [str(_field(ex, "answer")) for ex in chunk]
    scores = _sample_scores(score_fn, completions, answers, extras, n)
    chunk_rows = []
    for i, ex in enumerate(chunk):
      ex_scores = scores[i * n:(i + 1) * n]
      row = {"problem_id": int(_field(ex, "problem_id")), "level": int(_field(ex, "level", -1)),
             "problem": str(_field(ex, "problem")), "answer": answers[i], "hint_ratio": float(hint_ratio),
             "completions": list(completions[i])}
      if extras is not None:
        row.update(extras[i])
      row["scores"] = ex_scores.tolist()
      row["correct"] = [bool(s >= correct_threshold) for s in ex_scores]
      if check_fn is not None:
        hint = row.get("hint", "") if hint_is_context else ""
        checks = [check_fn(ex, hint, c) for c in completions[i]]
        row["valid"] = [bool(v) for v, _ in checks]
        row["answer_right"] = [bool(a) for _, a in checks]
      if confidences is not None:
        row["confidences"] = [float(c) for c in confidences[i]]
      if answer_fn is not None:
        extracted = [answer_fn(c) for c in completions[i]]
        row["extracted"] = extracted
        row["maj_correct"] = _voted_correct(majority_vote(extracted), extracted, row["correct"])
        if confidences is not None:
          voted = confidence_filtered_vote(extracted, row["confidences"], keep_frac)
          row["conf_maj_correct"] = _voted_correct(voted, extracted, row["correct"])
      chunk_rows.append(row)
    if deepconf is not None:
      _deepconf_online(generate_fn, chunk, chunk_rows, hint_ratio, n, deepconf, vote_fn, score_fn,
                       correct_threshold)
    rows.extend(_jsonable(row) for row in chunk_rows)
  # Every host's problems: the per-sample flags travel, the texts stay where they were sampled.
  keys = ["correct"] + [key for key in ("valid", "answer_right") if check_fn is not None]
  arrays = {"level": np.asarray([int(r["level"]) for r in rows], np.int64)}
  arrays.update({key: np.asarray([r[key] for r in rows], bool).reshape(len(rows), n) for key in keys})
  if deepconf is not None:
    from jaxghpo import deepconf as dc_lib
    arrays["deepconf"] = np.asarray([[float(r["deepconf"][name]) for name in dc_lib.RECORD_NUMBERS] for r in rows],
                                    np.float64).reshape(len(rows), len(dc_lib.RECORD_NUMBERS))
  if multihost:
    arrays = hosts.allgather_rows(arrays)
  merged = [{"level": int(lv), **{key: arrays[key][i].tolist() for key in keys}}
            for i, lv in enumerate(arrays["level"])]
  if answer_fn is not None and not multihost:  # votes are per row (not gathered)
    for m, r in zip(merged, rows):
      m.update({key: r[key] for key in ("maj_correct", "conf_maj_correct") if key in r})
  metrics = aggregate(merged, k)
  if deepconf is not None:
    from jaxghpo import deepconf as dc_lib
    records = [dict(zip(dc_lib.RECORD_NUMBERS, values)) for values in arrays["deepconf"]]
    metrics.update({f"deepconf/{key}": v for key, v in dc_lib.summarize(records).items()})
  return metrics, rows


def _sample_scores(score_fn, completions, answers, extras, n: int) -> np.ndarray:
  """float64 [len(completions) * n]: the accuracy of each of the n samples of every example, from
  score_fn(completions, answers), or else from generate_fn extras that carry each example's "scores"."""
  flat = [c for cs in completions for c in cs]
  if score_fn is not None:
    scores = np.asarray(score_fn(flat, [a for a in answers for _ in range(n)]), np.float64)
  elif extras is not None and all("scores" in e for e in extras):
    scores = np.asarray([s for e in extras for s in e["scores"]], np.float64)
  else:
    raise ValueError("evaluate needs score_fn, or generate_fn extras that carry each example's \"scores\"")
  if scores.shape != (len(flat),):
    raise ValueError(f"the scores have shape {scores.shape}; expected ({len(flat)},)")
  return scores


def _deepconf_online(generate_fn, chunk, rows, hint_ratio, n, dc, vote_fn, score_fn, correct_threshold) -> None:
  """DeepConf online for one chunk: thresholds from each problem's first dc.warmup_traces samples, n -
  warmup_traces more samples per problem that stop in the sampler, and row["deepconf"] comparing the
  online vote with the offline confidence-filtered vote over the row's n full samples (a collective
  call of generate_fn also when the chunk is empty)."""
  from jaxghpo import deepconf as dc_lib
  if any("token_confidences" not in r for r in rows):
    raise ValueError("deepconf needs generate_fn extras with per-token confidences (\"token_confidences\")")
  conf = [[np.asarray(c, np.float64) for c in r["token_confidences"]] for r in rows]
  lengths = [np.asarray([len(c) for c in cs]) for cs in conf]
  conf_RxN = np.zeros((len(rows) * n, max((len(c) for cs in conf for c in cs), default=0)))
  for r, c in enumerate(c for cs in conf for c in cs):
    conf_RxN[r, :len(c)] = c
  thresholds = dc_lib.warmup_thresholds(conf_RxN, np.concatenate(lengths or [np.zeros(0, int)]), n, dc)
  m = n - dc.warmup_traces
  out = generate_fn(chunk, hint_ratio, m, stop=(thresholds, dc.window))
  completions, _, extras = (tuple(out) + (None, None))[:3]
  answers = [str(_field(ex, "answer")) for ex in chunk]
  scores = _sample_scores(score_fn, completions, answers, extras, m).reshape(len(chunk), m)
  vote = vote_fn or (lambda text: text)
  for i, row in enumerate(rows):
    on_lengths = np.asarray([len(c) for c in extras[i]["token_confidences"]])
    row["deepconf"] = dc_lib.problem_record(
        dc, offline_answers=[vote(t) for t in row["completions"]], offline_correct=row["correct"],
        offline_conf_N=conf[i], offline_lengths=lengths[i], online_answers=[vote(t) for t in completions[i]],
        online_correct=(scores[i] >= correct_threshold).tolist(), online_stopped=list(extras[i]["stopped"]),
        online_lengths=on_lengths, threshold=float(thresholds[i]))


def group_generate(group_sampler, params, rng, *, width: int, temperature: float) -> Callable:
  """generate_fn for `evaluate` from a rollout.groups.GroupSampler (the trainer's evaluation sampler).

  Each call samples one group per problem in `width` rows per host (the rows past the chunk
  inactive), at hint ratio `hint_ratio` and `temperature`, with a new key split from `rng`; it keeps
  the first num_samples of the group's samples and returns (completions, None, extras) with extras
  hint, scores (the sampler's accuracy) and, when the sampler returns confidences, token_confidences
  (per sample, up to its length; 4 decimals) and stopped (DeepConf online, with stop=(thresholds, window)).
  """
  key = [rng]

  def generate(chunk, hint_ratio, n, stop=None):
    key[0], sub = _split_key(key[0])
    thresholds, window = (None, 1) if stop is None else stop
    g = group_sampler(params, chunk, np.full(len(chunk), hint_ratio, np.float32), sub, width=width,
                      temperature=temperature, stop_threshold=thresholds, stop_window=window)
    completions, extras = [], []
    for i in range(len(chunk)):
      completions.append([str(t) for t in g.completions[i, :n]])
      extra = {"hint": str(g.hint_text[i]), "scores": [float(a) for a in g.accuracy[i, :n]]}
      if g.confidence is not None:  # DeepConf: per-token confidence of each completion, up to its length
        extra["token_confidences"] = [np.round(g.confidence[i, j, :int(g.lengths[i, j])], 4).tolist()
                                      for j in range(n)]
      if stop is not None:
        extra["stopped"] = [bool(x) for x in g.stopped[i, :n]]
      extras.append(extra)
    return completions, None, extras

  return generate


def _split_key(rng):
  """(rng, key): jax.random.split of a key (jax imported here: the metrics above are numpy only)."""
  import jax
  rng, key = jax.random.split(rng)
  return rng, key


def chains_check(example, hint_text: str, completion: str) -> tuple[bool, bool]:
  """check_fn of the letter-chains task: chains.check_completion of the hint's steps (prompt
  placement: the hint is context the model continues) followed by the completion."""
  from jaxghpo.data.tasks import chains
  valid, right, _ = chains.check_completion(str(_field(example, "problem")), str(hint_text) + str(completion))
  return valid, right


def aggregate(rows: Sequence[Mapping], k: int) -> dict[str, float]:
  """pass@1, pass@k, avg@n, answer_pass@1 (and valid_pass@1 when rows carry "valid", maj@n /
  conf_maj@n when they carry votes), overall and per level."""
  groups: dict[str, list] = defaultdict(list)
  for row in rows:
    groups[""].append(row)
    if int(row.get("level", -1)) >= 0:
      groups[f"/level_{int(row['level'])}"].append(row)
  metrics: dict[str, float] = {}
  for suffix, members in sorted(groups.items()):
    correct = [np.asarray(r["correct"], bool) for r in members]
    n = np.array([c.size for c in correct])
    c = np.array([c.sum() for c in correct])
    n_label = int(n.min()) if n.size else k
    metrics[f"pass@1{suffix}"] = float(pass_at_k(n, c, 1).mean())
    if all("valid" in r for r in members):  # answer right AND every written step valid
      metrics[f"valid_pass@1{suffix}"] = float(np.mean([np.mean(np.asarray(r["valid"], bool)) for r in members]))
    answer_key = "answer_right" if all("answer_right" in r for r in members) else "correct"
    metrics[f"answer_pass@1{suffix}"] = float(np.mean([np.mean(np.asarray(r[answer_key], bool)) for r in members]))
    if k != 1:
      metrics[f"pass@{k}{suffix}"] = float(pass_at_k(n, c, k).mean())
    metrics[f"avg@{n_label}{suffix}"] = float(np.mean([x.mean() for x in correct]))
    if all("maj_correct" in r for r in members):
      metrics[f"maj@{n_label}{suffix}"] = float(np.mean([r["maj_correct"] for r in members]))
    if all("conf_maj_correct" in r for r in members):
      metrics[f"conf_maj@{n_label}{suffix}"] = float(np.mean([r["conf_maj_correct"] for r in members]))
    metrics[f"num_problems{suffix}"] = float(len(members))
  return metrics


def prefix_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """{"pass@1": x} -> {"eval/test/pass@1": x} for a prefix "eval/test/"."""
  return {prefix + key: value for key, value in metrics.items()}


def eval_rows_path(workdir: str | os.PathLike, split: str, step: int, hint_ratio: float = 0.0,
                   tag: str = "") -> str:
  """DIR/eval/{split}_step{step:06d}_hint{hint_ratio:.2f}{_tag}.jsonl."""
  name = f"{split}_step{int(step):06d}_hint{float(hint_ratio):.2f}" + (f"_{tag}" if tag else "") + ".jsonl"
  return paths.join(workdir, "eval", name)


def write_rows(path: str | os.PathLike, rows: Sequence[Mapping]) -> str:
  """Writes rows as JSON lines (parent folders created; replaced atomically; `path` may be a URI, see
  paths.py). Call on process 0 only."""
  path = os.fspath(path)
  paths.write_text(path, "".join(json.dumps(_jsonable(dict(row)), allow_nan=False) + "\n" for row in rows))
  return path


# ------------------------------------------------------------------ exact pass probability
def true_trace_logprob(model, tokenizer, examples: Sequence, *, hints: Sequence[str] | None = None,
                       placement: str = "prompt", style: str = "plain", batch_size: int = 128) -> np.ndarray:
  """float64 [N]: log-probability that sampling at T = 1 writes each example's true trace + EOS.

  For a task whose valid trace is unique (chains: a valid trace IS the solution), exp of this is the
  exact expected valid pass@1 of a problem at T = 1, with no sampling noise: the per-problem success
  probability that the competence histogram is made of. hints: per example a hint prefix of its
  solution ("" = none); the hint is context, only the rest of the trace is scored.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxghpo import models
  from jaxghpo.data import templates

  @nnx.jit
  def logp_fn(m, toks, valid, mask):
    logits = models.logits_padded(m, toks, valid)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    tok_logp = jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return (tok_logp * mask[:, 1:]).sum(-1)

  examples = list(examples)
  hints = [""] * len(examples) if hints is None else list(hints)
  seqs = []
  for ex, hint in zip(examples, hints):
    r = templates.render(ex, hint, placement, tokenizer, style)
    tgt = tokenizer.encode(templates.target_text(ex, hint, placement, style, prompt_text=r.prompt_text),
                           add_special_tokens=False)
    context = list(r.prompt_ids) + list(r.hint_ids)
    seqs.append((context, tgt + [tokenizer.eos_token_id]))
  max_len = max((len(c) + len(t) for c, t in seqs), default=1)
  max_len = -(-max_len // 8) * 8  # one shape per 8 tokens of length: few compiles
  out = np.zeros(len(seqs), np.float64)
  for start in range(0, len(seqs), batch_size):
    chunk = seqs[start:start + batch_size]
    toks = np.full((batch_size, max_len), tokenizer.pad_token_id, np.int32)
    valid = np.zeros((batch_size, max_len), bool)
    mask = np.zeros((batch_size, max_len), np.float32)
    for i, (context, tgt) in enumerate(chunk):
      ids = context + tgt
      toks[i, :len(ids)] = ids
      valid[i, :len(ids)] = True
      mask[i, len(context):len(ids)] = 1.0
    out[start:start + len(chunk)] = np.asarray(logp_fn(model, toks, valid, mask))[:len(chunk)]
  return out


# ---------------------------------------------------------------------- the fixed evaluation set
# (the task's: jaxghpo/data/tasks/fixed_set.py; re-exported for the callers that read it here)
from jaxghpo.data.tasks.fixed_set import (FIXED_EVAL_SEED, FIXED_SET_PROBLEMS, fixed_eval_sets,  # noqa: E402,F401
                                          fixed_level_set)
