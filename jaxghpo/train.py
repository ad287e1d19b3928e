"""The RL loop: one step of GHPO as DESIGN.md draws it, top to bottom.

  draw problems -> scheduler plans hint ratios -> sample G responses -> rewards
  -> scheduler retries all-wrong groups with longer hints (only those groups are re-sampled)
  -> scheduler update -> advantages -> sharded train step -> metrics (a step late) -> checkpoint -> eval

The device side is pure jitted functions; the host keeps every decision that depends on history.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time

import jax
import numpy as np
from flax import nnx

from jaxghpo import curriculum, derived, evaluation, experiment, groups, models, parallel, rl
from jaxghpo.checkpoint import Checkpointer, abstract_target
from jaxghpo.data import pipeline as pipeline_lib
from jaxghpo.logging_utils import DeferredMetrics, MetricWriter
from jaxghpo.parallel import hosts
from jaxghpo.rollout import Sampler, deepconf, penalties


@dataclasses.dataclass
class StepRollout:
  """The final sampled group of each of this host's problems, ready for the train step."""
  prompts: groups.Prompts
  ratios: np.ndarray          # float32 [P]: the ratio each final group was sampled with
  tokens: np.ndarray          # int32 [P*G, N]
  logprobs: np.ndarray        # float32 [P*G, N]
  lengths: np.ndarray         # int32 [P*G]
  rewards: np.ndarray         # float32 [P, G] total reward
  accuracy: np.ndarray        # float32 [P, G]
  completions: list           # P*G strings
  gen_tokens: int = 0         # tokens generated this step, retries included
  retried: int = 0            # groups re-sampled at least once


class Trainer:
  """Holds the run's pieces; `run()` is the loop."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    experiment.validate(config, jax.device_count(), jax.process_count())
    self.mesh = experiment.make_mesh(config)
    self.model, self.model_cfg, self.tokenizer = experiment.load_policy(config, self.mesh)
    self.problems = experiment.load_problems(config)
    experiment.check_prompt_room(config, self.problems, self.tokenizer)
    self.score = experiment.reward_fn(config, self.problems)
    self.eos_id = self.tokenizer.eos_token_id
    self.pad_id = self.tokenizer.pad_token_id or 0
    # TIP (config.rollout.tip_*): the thought-switch penalty of training rollouts and of evaluation (or None).
    self.tip = {where: penalties.from_config(config.rollout, self.tokenizer, where) for where in ("train", "eval")}

    n_proc = jax.process_count()
    self.P = int(config.data.prompts_per_step)
    self.P_local = self.P // n_proc
    self.G = int(config.rollout.group_size)
    self.pipeline = pipeline_lib.make_pipeline(self.problems.train, batch_size_per_process=self.P_local,
                                               seed=derived.seed(config, "data_order"), shuffle=True)
    derived_cfg = derived.derive(config)  # the module configs with their derived keys (seed, temperature)
    self.scheduler = curriculum.HintScheduler(derived_cfg.curriculum)

    # Device side: the sharded train step and the samplers (one per retry bucket, all warmed up).
    rl_cfg = self.rl_cfg = derived_cfg.rl
    self.graphdef, params = nnx.split(self.model)
    self.param_shardings = parallel.param_shardings(params, self.mesh)
    self.optimizer = rl.make_optimizer(rl_cfg, int(config.num_steps) * int(rl_cfg.ppo_epochs))
    self.params = params
    self.opt_state = rl.init_opt_state(self.optimizer, params, self.param_shardings, self.mesh)
    self.train_step = rl.make_train_step(self.graphdef, rl_cfg, self.mesh, self.optimizer, self.param_shardings)
    self.ref_params = None
    if float(rl_cfg.kl_coef) != 0.0:
      self.ref_params = jax.tree.map(lambda x: x.copy(), params)
      self.logprob_fn = rl.make_logprob_fn(self.graphdef, rl_cfg, self.mesh, self.param_shardings)
    self.last_confidence = None
    self.samplers = self._make_samplers(int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens))
    # Evaluation reaches longer (out-of-distribution) chains than training: its own sizes.
    eval_prompt = int(config.eval.get("max_prompt_len", 0) or config.rollout.max_prompt_len)
    eval_new = int(config.eval.get("max_new_tokens", 0) or config.rollout.max_new_tokens)
    # Evaluation also returns DeepConf token confidences (for confidence-filtered voting in the report).
    self.eval_samplers = self._make_samplers(eval_prompt, eval_new, divisors=(1,), return_confidence=True)
    self.eval_prompt_len = eval_prompt
    # DeepConf online stopping in evaluation (config.eval.deepconf; None when not enabled).
    self.deepconf = deepconf.from_config(config.eval, int(config.eval.num_samples))
    self.rng = jax.random.key(derived.seed(config, "train_rng"))

    self.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                                     max_to_keep=int(config.keep_checkpoints))
    self.deferred = DeferredMetrics()
    self.writer = None  # opened in restore(), once the resume step is known
    self.start_step = 0
    self.gen_tokens_total = 0
    self._stop_requested = False

  # ------------------------------------------------------------------------------------ set-up
  def _make_samplers(self, max_prompt_len: int, max_new_tokens: int, divisors=(1, 2, 4),
                     return_confidence: bool = False) -> dict[int, Sampler]:
    """Samplers for P, P/2, P/4 prompts: a retry re-samples only its groups, in the smallest bucket that fits."""
    shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    n_proc = jax.process_count()
    sizes = []
    for div in divisors:
      p = self.P // div
      if p >= n_proc and (p * self.G) % shards == 0 and p % n_proc == 0 and p not in sizes:
        sizes.append(p)
    return {p: Sampler(self.model, batch_size=p, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens,
                       num_samples=self.G, mesh=self.mesh, return_confidence=return_confidence)
            for p in sizes}

  def _install_sigterm(self) -> None:
    def handler(signum, frame):
      self._stop_requested = True  # TPU preemption: save at the next step boundary and exit 0
    signal.signal(signal.SIGTERM, handler)

  def restore(self) -> None:
    step = self.checkpointer.latest_step()
    if step is not None:
      params_target = abstract_target(self.params, self.param_shardings)
      opt_target = abstract_target(self.opt_state, rl.optimizer_shardings(self.optimizer, self.params,
                                                                           self.param_shardings, self.mesh))
      self.params, self.opt_state, host = self.checkpointer.restore(step, params_target, opt_target)
      self.scheduler.load_state_dict(host["scheduler"])
      self.pipeline.set_state(host["pipeline"])
      self.rng = host["rng"]
      self.gen_tokens_total = int(host["gen_tokens_total"])
      self.start_step = int(host["step"])
    # Steps count from 1 in metrics.jsonl (step 0 holds the evaluation before training): rows after
    # the restored step are dropped so a resumed run continues the file without duplicates.
    self.writer = MetricWriter(self.workdir, is_main_process=jax.process_index() == 0,
                               total_steps=int(self.config.num_steps), print_every=int(self.config.log_every_steps),
                               resume_step=self.start_step if step is not None else -1)

  def save(self, step: int) -> None:
    host = {"scheduler": self.scheduler.state_dict(), "pipeline": self.pipeline.get_state(),
            "rng": self.rng, "gen_tokens_total": int(self.gen_tokens_total),
            "step": int(step)}
    self.checkpointer.save(step, params=self.params, opt_state=self.opt_state, host_state=host)

  # ------------------------------------------------------------------------------------ sampling
  def sample(self, examples, ratios, rng, *, temperature=None, samplers=None, max_prompt_len=None, penalty=None,
             stop_threshold=None, stop_window=1):
    """Renders prompts with hints and samples G responses each; returns (prompts, tokens, logprobs, lengths).

    Problems are sampled in the smallest sampler bucket that holds them (chunks of the largest otherwise);
    the arrays come back as this host's rows.
    """
    c = self.config
    hint_rng = np.random.default_rng([derived.seed(c, "hint_corruption"),
                                      int(jax.random.randint(rng, (), 0, 2**31 - 1))])
    texts = groups.hint_texts(examples, ratios, unit=c.hints.unit, corruption=c.hints.corruption,
                              tokenizer=self.tokenizer, rng=hint_rng)
    prompts = groups.render_prompts(examples, texts, placement=c.hints.placement, style=c.data.style,
                                    tokenizer=self.tokenizer,
                                    max_prompt_len=max_prompt_len or int(c.rollout.max_prompt_len))
    samplers = samplers or self.samplers
    n = len(examples)
    n_proc = jax.process_count()
    tokens, logprobs, lengths, confidence, stopped = [], [], [], [], []
    start = 0
    while start < n:
      # Buckets are global sizes; this host brings its share of each call.
      bucket = min((p for p in samplers if p // n_proc >= n - start), default=max(samplers))
      chunk = prompts.sampler_ids[start:start + bucket // n_proc]
      rng, key = jax.random.split(rng)
      out = samplers[bucket](self.params, chunk, rng=key,
                                  temperature=c.rollout.temperature if temperature is None else temperature,
                                  top_p=c.rollout.top_p, top_k=c.rollout.top_k, eos_id=self.eos_id,
                                  pad_id=self.pad_id, penalty=penalty, stop_window=stop_window,
                                  stop_threshold=None if stop_threshold is None else
                                  stop_threshold[start:start + len(chunk)])
      rows = len(chunk) * self.G
      tokens.append(hosts.local_rows(out.tokens)[:rows])
      logprobs.append(hosts.local_rows(out.logprobs)[:rows])
      lengths.append(hosts.local_rows(out.lengths)[:rows])
      if out.confidence is not None:
        confidence.append(hosts.local_rows(out.confidence)[:rows])
        stopped.append(hosts.local_rows(out.stopped)[:rows])
      start += len(chunk)
    self.last_confidence = np.concatenate(confidence) if confidence else None
    self.last_stopped = np.concatenate(stopped) if stopped else None  # DeepConf online stops (eval samplers)
    return prompts, np.concatenate(tokens), np.concatenate(logprobs), np.concatenate(lengths)

  def rollout(self, examples, ratios, rng) -> StepRollout:
    """Sample and score groups for `examples` at `ratios` (all of this host's problems)."""
    prompts, tokens, logprobs, lengths = self.sample(examples, ratios, rng, penalty=self.tip["train"])
    completions = groups.decode(self.tokenizer, tokens, lengths, self.eos_id)
    if self.config.hints.placement == "response":
      completions = [prompts.hint_text[i // self.G] + text for i, text in enumerate(completions)]
    answers = [ex.answer for ex in examples for _ in range(self.G)]
    t0 = time.perf_counter()
    total, accuracy = self.score(completions, answers)
    self._reward_s += time.perf_counter() - t0
    shape = (len(examples), self.G)
    return StepRollout(prompts, np.asarray(ratios, np.float32), tokens, logprobs, lengths,
                       total.reshape(shape), accuracy.reshape(shape), completions,
                       gen_tokens=int(lengths.sum()))

  def replace_groups(self, ro: StepRollout, idx: np.ndarray, new: StepRollout) -> None:
    """Group i of `ro` <- group j of `new` for i = idx[j] (the trained group is the last one sampled)."""
    G = self.G
    rows = (idx[:, None] * G + np.arange(G)).reshape(-1)
    for name in ("tokens", "logprobs", "lengths"):
      getattr(ro, name)[rows] = getattr(new, name)
    ro.rewards[idx], ro.accuracy[idx], ro.ratios[idx] = new.rewards, new.accuracy, new.ratios
    for j, i in enumerate(idx):
      ro.completions[i * G:(i + 1) * G] = new.completions[j * G:(j + 1) * G]
      ro.prompts.sampler_ids[i] = new.prompts.sampler_ids[j]
      for name in ("prompt_len", "hint_in_prompt", "hint_start", "hint_in_response", "hint_steps"):
        getattr(ro.prompts, name)[i] = getattr(new.prompts, name)[j]
      ro.prompts.hint_text[i] = new.prompts.hint_text[j]
    ro.gen_tokens += new.gen_tokens

  # ------------------------------------------------------------------------------------ the step
  def rl_step(self, step: int, rng) -> dict:
    timer = {}
    examples = next(self.pipeline)
    ids = np.asarray([ex.problem_id for ex in examples], np.int64)
    levels = np.asarray([ex.level for ex in examples], np.int64)

    # 1. The scheduler plans each problem's first-attempt hint ratio.
    ratios = self.scheduler.plan(ids, levels, step=step)

    # The previous update runs on the device while the host did the above; sampling needs its params.
    t_wait = time.perf_counter()
    jax.block_until_ready(self.params)
    timer["time/train_wait_s"] = time.perf_counter() - t_wait
    self._reward_s = 0.0

    # 2. Sample G responses per problem and score them.
    t0 = time.perf_counter()
    rng, key = jax.random.split(rng)
    ro = self.rollout(examples, ratios, key)

    # 3. GHPO: all-wrong groups are re-sampled within the step with a longer hint (only those groups).
    retried = np.zeros(len(examples), bool)
    nxt = self.scheduler.retry(ids, ro.ratios, ro.accuracy)
    while self._any_host(np.isfinite(nxt).any()):
      idx = np.flatnonzero(np.isfinite(nxt))
      rng, key = jax.random.split(rng)
      new = self.rollout([examples[i] for i in idx], nxt[idx], key) if idx.size else None
      if new is not None:
        self.replace_groups(ro, idx, new)
        retried[idx] = True
      sub = self.scheduler.retry(ids[idx], nxt[idx], new.accuracy if new is not None else np.zeros((0, self.G)))
      nxt = np.full(len(examples), np.nan, np.float32)
      nxt[idx] = sub
    ro.retried = int(retried.sum())

    # 3b. DAPO-style filter: groups whose rewards are all equal carry no signal.
    keep = np.ones(len(examples), bool)
    if self.config.curriculum.mode == "filter":
      keep = self.scheduler.keep_mask(ro.rewards)
    timer["time/reward_s"] = self._reward_s
    timer["time/rollout_s"] = time.perf_counter() - t0 - self._reward_s

    # 4. Record the final outcome of each group.
    sched_metrics = self.scheduler.update(ids, ro.ratios, ro.accuracy, levels, step=step)

    # 5. Group-relative advantages; dropped groups (filter) are masked out of the loss.
    adv_PxG = np.asarray(rl.group_advantages(ro.rewards, self.rl_cfg.advantage_estimator, eps=self.rl_cfg.adv_eps))
    batch = self.make_batch(ro, adv_PxG.reshape(-1), keep)

    # 6. The sharded train step (params and optimizer state donated).
    t1 = time.perf_counter()
    rng, key = jax.random.split(rng)
    self.params, self.opt_state, train_metrics = self.train_step(self.params, self.opt_state, batch, key)
    timer["time/train_s"] = time.perf_counter() - t1 + timer["time/train_wait_s"]

    self.gen_tokens_total += int(hosts.allgather(np.asarray([ro.gen_tokens])).sum())
    host_metrics = self.host_metrics(ro, levels, keep, sched_metrics)
    host_metrics.update(timer)
    return host_metrics, train_metrics

  def _any_host(self, flag: bool) -> bool:
    return bool(hosts.allgather(np.asarray([flag], np.int32)).max())

  def make_batch(self, ro: StepRollout, adv_R: np.ndarray, keep_P: np.ndarray):
    c = self.config
    G, Pw = self.G, int(c.rollout.max_prompt_len)
    R = len(ro.completions)
    prompt_ids = np.full((R, Pw), self.pad_id, np.int32)
    prompt_valid = np.zeros((R, Pw), bool)
    for r in range(R):
      ids = ro.prompts.sampler_ids[r // G]
      prompt_ids[r, Pw - len(ids):] = ids
      prompt_valid[r, Pw - len(ids):] = True
    rows = np.arange(R) // G
    hint_mask = groups.hint_token_mask(ro.prompts, rows, Pw) & prompt_valid
    N = ro.tokens.shape[1]
    response_valid = np.arange(N)[None, :] < ro.lengths[:, None]
    keep_R = np.repeat(keep_P, G)
    response_valid &= keep_R[:, None]  # dropped groups: no loss tokens
    batch = rl.make_batch(prompt_ids, prompt_valid, ro.tokens, response_valid, np.where(keep_R, adv_R, 0.0),
                          ro.logprobs, prompt_hint=hint_mask)
    sharding = parallel.batch_sharding(self.mesh, 1)
    put = lambda x: None if x is None else hosts.global_from_local(x, sharding)
    batch = rl.RLBatch(tokens=put(batch.tokens), segment_ids=put(batch.segment_ids),
                       advantages=put(batch.advantages), old_logp=put(batch.old_logp),
                       ref_logp=None, prompt_len=batch.prompt_len)
    if self.ref_params is not None:
      batch = batch.replace(ref_logp=self.logprob_fn(self.ref_params, batch))
    return batch

  def host_metrics(self, ro: StepRollout, levels, keep, sched_metrics) -> dict:
    """Step metrics from this step's final groups, reduced over hosts (small arrays only)."""
    acc = hosts.allgather(ro.accuracy)
    rew = hosts.allgather(ro.rewards)
    lengths = hosts.allgather(ro.lengths)
    lv = hosts.allgather(levels)
    nonzero = (rew.max(1) > rew.min(1))
    out = {
        "reward_mean": float(rew.mean()),
        "accuracy_mean": float(acc.mean()),
        "pass_rate": float((acc > 0).mean()),
        "response_len_mean": float(lengths.mean()),
        "gen_tokens": float(hosts.allgather(np.asarray([ro.gen_tokens])).sum()),
        "gen_tokens_total": float(self.gen_tokens_total),
        "retried_groups": float(hosts.allgather(np.asarray([ro.retried])).sum()),
        "frac_groups_kept": float(hosts.allgather(keep).mean()),
    }
    out.update(sched_metrics)
    out["frac_groups_nonzero_adv"] = float(nonzero.mean())  # of the trained groups
    hard = lv >= min(experiment.parse_levels(self.config.eval.hard_levels) or [10**9])
    if hard.any():
      out["frac_groups_nonzero_adv/hard"] = float(nonzero[hard].mean())
      out["pass_rate/hard"] = float((acc[hard] > 0).mean())
      out["hint_ratio_mean/hard"] = float(hosts.allgather(ro.ratios)[hard].mean())
    return out

  # ------------------------------------------------------------------------------------ evaluation
  def evaluate(self, step: int) -> dict:
    """Every eval split without a hint, and the splits in config.eval.hint_splits with each hint ratio;
    sampled (avg@k, pass@k at config.eval.temperature) and, with config.eval.greedy, greedy pass@1."""
    c = self.config.eval
    ratios = [float(r) for r in str(c.hint_ratios).split(",") if r.strip()]
    hint_splits = {s.strip() for s in str(c.get("hint_splits", "")).split(",") if s.strip()}
    out = {}
    for name, examples in self.problems.eval_sets.items():
      for ratio in ratios:
        if ratio > 0 and name not in hint_splits:
          continue
        modes = [("sampled", float(c.temperature), int(c.num_samples))]
        if c.get("greedy", False) and ratio == 0:
          modes.append(("greedy", 0.0, 1))
        for mode, temperature, k in modes:
          metrics, rows = self.eval_split(examples, ratio, temperature, k, step)
          out.update({f"eval/{name}/hint{ratio:g}/{mode}/{key}": v for key, v in metrics.items()})
          if jax.process_index() == 0:
            evaluation.write_rows(evaluation.eval_rows_path(self.workdir, name, step, ratio, tag=mode), rows)
    return out

  def eval_split(self, examples, ratio, temperature, k, step):
    """pass@1, pass@k and avg@k of `examples` (split over hosts) with hint `ratio`; and the rows."""
    n_proc, h = jax.process_count(), jax.process_index()
    per = len(examples) // n_proc
    mine = examples[h * per:(h + 1) * per]
    G = self.G
    rows = []
    rng = jax.random.fold_in(jax.random.key(derived.seed(self.config, "eval_sampling")), step)
    for start in range(0, len(mine), self.P_local):
      chunk = mine[start:start + self.P_local]
      rng, key = jax.random.split(rng)
      prompts, tokens, _, lengths = self.sample(chunk, np.full(len(chunk), ratio, np.float32), key,
                                                temperature=temperature, samplers=self.eval_samplers,
                                                max_prompt_len=self.eval_prompt_len, penalty=self.tip["eval"])
      conf = self.last_confidence
      texts = groups.decode(self.tokenizer, tokens, lengths, self.eos_id)
      picked = [i * G + j for i in range(len(chunk)) for j in range(k)]
      texts = [texts[r] for r in picked]
      _, acc = self.score(texts, [ex.answer for ex in chunk for _ in range(k)])
      acc = acc.reshape(len(chunk), k)
      for i, ex in enumerate(chunk):
        row = {"problem_id": int(ex.problem_id), "level": int(ex.level), "problem": ex.problem,
               "answer": ex.answer, "hint": prompts.hint_text[i], "completions": texts[i * k:(i + 1) * k],
               "correct": (acc[i] > 0).tolist()}
        if conf is not None:  # DeepConf: per-token confidence of each completion, up to its length
          row["token_confidences"] = [np.round(conf[r, :int(lengths[r])], 4).tolist()
                                      for r in picked[i * k:(i + 1) * k]]
        rows.append(row)
      if self.deepconf is not None and temperature > 0:
        rng, key = jax.random.split(rng)
        self._deepconf_online(chunk, ratio, temperature, key, rows[-len(chunk):], conf, lengths, picked, k)
    correct = hosts.allgather(np.asarray([r["correct"] for r in rows], bool).reshape(len(rows), k))
    levels = hosts.allgather(np.asarray([r["level"] for r in rows], np.int64))
    metrics = evaluation.aggregate([{"level": int(l), "correct": c} for l, c in zip(levels, correct)], k)
    if self.deepconf is not None and temperature > 0:
      names = deepconf.RECORD_NUMBERS
      numbers = hosts.allgather(np.asarray([[float(r["deepconf"][n]) for n in names] for r in rows], np.float64))
      records = [dict(zip(names, values)) for values in numbers]
      metrics.update({f"deepconf/{key}": v for key, v in deepconf.summarize(records).items()})
    return metrics, rows

  def _deepconf_online(self, chunk, ratio, temperature, key, rows, conf, lengths, picked, k) -> None:
    """DeepConf online (config.eval.deepconf) for one chunk: thresholds from each problem's first warm-up
    traces, k - warm-up online traces per problem stopped in the sampler, and row["deepconf"] comparing the
    online vote with the offline confidence-filtered vote over the row's k full traces."""
    G, dc = self.G, self.deepconf
    n = k - dc.warmup_traces
    conf_k, lengths_k = conf[picked], lengths[picked]  # the row's k offline traces, problem-major
    thresholds = deepconf.warmup_thresholds(conf_k, lengths_k, k, dc)
    _, tokens, _, on_lengths = self.sample(chunk, np.full(len(chunk), ratio, np.float32), key,
                                           temperature=temperature, samplers=self.eval_samplers,
                                           max_prompt_len=self.eval_prompt_len, penalty=self.tip["eval"],
                                           stop_threshold=thresholds, stop_window=dc.window)
    online = [i * G + j for i in range(len(chunk)) for j in range(n)]
    stopped, on_lengths = self.last_stopped[online], on_lengths[online]
    texts = groups.decode(self.tokenizer, tokens[online], on_lengths, self.eos_id)
    _, acc = self.score(texts, [ex.answer for ex in chunk for _ in range(n)])
    vote = deepconf.answer_fn(self.config.data.style, self.problems.extract_answer)
    for i, row in enumerate(rows):
      s, o = slice(i * k, (i + 1) * k), slice(i * n, (i + 1) * n)
      row["deepconf"] = deepconf.problem_record(
          dc, offline_answers=[vote(t) for t in row["completions"]], offline_correct=row["correct"],
          offline_conf_N=conf_k[s], offline_lengths=lengths_k[s], online_answers=[vote(t) for t in texts[o]],
          online_correct=(acc[o] > 0).tolist(), online_stopped=stopped[o].tolist(),
          online_lengths=on_lengths[o], threshold=thresholds[i])

  # ------------------------------------------------------------------------------------ the loop
  def export(self, out_dir: str) -> None:
    """The policy in HF format (process 0 writes; with several processes every one joins the gather)."""
    params = self.params
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
      models.save_pretrained(nnx.merge(self.graphdef, params), self.model_cfg, out_dir)
      self.tokenizer.save_pretrained(out_dir)

  def write(self, ready, extra=None) -> None:
    if ready is not None:
      step, row = ready
      if "clip_frac_low" in row:
        row["clip_frac"] = float(row["clip_frac_low"]) + float(row["clip_frac_high"])
      self.writer.write(step, {**row, **(extra or {})})

  def run(self) -> dict:
    c = self.config
    num_steps = int(c.num_steps)
    self._install_sigterm()
    self.restore()
    if self.start_step == 0 and jax.process_index() == 0:
      with open(os.path.join(self.workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2))
    summary = {}
    spent = bool(c.max_gen_tokens) and self.gen_tokens_total >= int(c.max_gen_tokens)
    if self.start_step >= num_steps or (self.start_step > 0 and spent):
      self.writer.close()  # a finished run: nothing to train, its files are complete
      self.checkpointer.close()
      return {"already_finished": True}
    if self.start_step == 0:
      summary["eval_before"] = self.evaluate(0)
      self.writer.write(0, summary["eval_before"])
    eval_every = int(c.eval_every_steps)
    t_prev = time.perf_counter()
    for step in range(self.start_step, num_steps):
      host_metrics, train_metrics = self.rl_step(step, jax.random.fold_in(self.rng, step))
      now = time.perf_counter()
      host_metrics["time/step_s"], t_prev = now - t_prev, now
      # The host never blocks on this step's device metrics: the previous step's are written now.
      self.write(self.deferred.push(step + 1, train_metrics, host_metrics))
      done = step + 1
      # An equal budget of generated tokens (retries included) compares arms fairly: stop when it is spent.
      budget_spent = bool(c.max_gen_tokens) and self.gen_tokens_total >= int(c.max_gen_tokens)
      if budget_spent:
        num_steps = done
      evaluate_now = done == num_steps or (eval_every and done % eval_every == 0)
      if done % int(c.checkpoint_every_steps) == 0 or evaluate_now or self._stop_requested:
        extra = self.evaluate(done) if evaluate_now else {}
        if done == num_steps:
          summary["eval_after"] = extra
        self.write(self.deferred.flush(), extra)
      if done % int(c.checkpoint_every_steps) == 0 or done == num_steps or self._stop_requested:
        self.save(done)
      if self._stop_requested or done == num_steps:
        break
    self.checkpointer.wait()
    if c.export_at_end and not self._stop_requested:
      self.export(os.path.join(self.workdir, "export"))
    self.writer.close()
    self.checkpointer.close()
    return summary


def run(config, workdir: str) -> dict:
  if config.mode == "sft":
    from jaxghpo import sft
    return sft.run(config, workdir)
  if config.mode != "rl":
    raise ValueError(f"config.mode={config.mode!r} is not one of 'rl', 'sft'")
  from jaxghpo import report  # imported here: matplotlib is only needed at the end of a run
  t0 = time.perf_counter()
  summary = Trainer(config, workdir).run()
  summary["wall_s"] = time.perf_counter() - t0  # the files hold step times, not the whole invocation
  # The summary (console, summary.md/json, curves.png) is read back from the run's files by process 0.
  summary["report"] = report.finish(workdir, config, summary)
  return summary
