"""The evaluator driver: samples every example, scores the samples, and aggregates pass@1, pass@k and avg@k.

    metrics, rows = evaluate(generate_fn, examples, k=8, score_fn=acc_fn, hint_ratio=0.0)
    metrics, rows = evaluate(group_generate(eval_rollout, params, rng, width=w, temperature=1.0), examples,
                             k=8, batch_size=w, multihost=True, deepconf=...)   # the runner's form

This is the one evaluator: the trainer and tools/evaluate.py both reach it through runner.Evaluator.
A token's confidence (DeepConf, Fu et al. 2025) is the negative mean log-probability of the top-k
candidate tokens at that position (what rollout returns when asked); high = the model is sure.
"""
from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from jaxghpo import deepconf as dc_lib
from jaxghpo.evaluation.passk import aggregate
from jaxghpo.evaluation.rows import jsonable
from jaxghpo.voting import majority_vote
from jaxghpo.voting import voted_correct as _voted_correct


def field(example, name: str, default=None):
  """A field of an Example or of a dict."""
  if isinstance(example, Mapping):
    return example.get(name, default)
  return getattr(example, name, default)


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

  This is the one evaluator: runner.Evaluator calls it (through generate.group_generate) for the
  trainer and for tools/evaluate.py.

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
    (experiment.Problems.check_completion; runner.Evaluator builds it). Adds ``valid_pass@1`` (answer right AND every written
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
    answers = [str(field(ex, "answer")) for ex in chunk]
    scores = _sample_scores(score_fn, completions, answers, extras, n)
    chunk_rows = []
    for i, ex in enumerate(chunk):
      ex_scores = scores[i * n:(i + 1) * n]
      row = {"problem_id": int(field(ex, "problem_id")), "level": int(field(ex, "level", -1)),
             "problem": str(field(ex, "problem")), "answer": answers[i], "hint_ratio": float(hint_ratio),
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
          voted = dc_lib.confidence_filtered_vote(extracted, row["confidences"], keep_frac)
          row["conf_maj_correct"] = _voted_correct(voted, extracted, row["correct"])
      chunk_rows.append(row)
    if deepconf is not None:
      _deepconf_online(generate_fn, chunk, chunk_rows, hint_ratio, n, deepconf, vote_fn, score_fn,
                       correct_threshold)
    rows.extend(jsonable(row) for row in chunk_rows)
  # Every host's problems: the per-sample flags travel, the texts stay where they were sampled.
  keys = ["correct"] + [key for key in ("valid", "answer_right") if check_fn is not None]
  arrays = {"level": np.asarray([int(r["level"]) for r in rows], np.int64)}
  arrays.update({key: np.asarray([r[key] for r in rows], bool).reshape(len(rows), n) for key in keys})
  if deepconf is not None:
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
  answers = [str(field(ex, "answer")) for ex in chunk]
  scores = _sample_scores(score_fn, completions, answers, extras, m).reshape(len(chunk), m)
  vote = vote_fn or (lambda text: text)
  for i, row in enumerate(rows):
    on_lengths = np.asarray([len(c) for c in extras[i]["token_confidences"]])
    row["deepconf"] = dc_lib.problem_record(
        dc, offline_answers=[vote(t) for t in row["completions"]], offline_correct=row["correct"],
        offline_conf_N=conf[i], offline_lengths=lengths[i], online_answers=[vote(t) for t in completions[i]],
        online_correct=(scores[i] >= correct_threshold).tolist(), online_stopped=list(extras[i]["stopped"]),
        online_lengths=on_lengths, threshold=float(thresholds[i]))
