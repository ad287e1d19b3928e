"""Group-relative advantage estimators: rewards [P, G] (P prompts, G samples each) -> advantages [P, G].

Each estimator is a pure function `fn(rewards_PxG, *, eps, xp) -> advantages_PxG` written against the
array namespace `xp` (numpy on host, jax.numpy on device), kept in the registry `ESTIMATORS` under the
name that config.rl.advantage_estimator gives. A new estimator is one decorated function:

    @rl.ESTIMATORS.register("my_estimator")
    def my_estimator(rewards_PxG, *, eps, xp): ...

Groups whose rewards are all equal carry no signal: every estimator returns exactly 0 for them
(`group_advantages` enforces it, so float round-off in the mean never leaks a tiny advantage).
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxghpo.registry import Registry

Estimator = Callable[..., object]
ESTIMATORS: Registry[Estimator] = Registry("rl.advantage_estimator")


@ESTIMATORS.register("grpo")
def grpo(rewards_PxG, *, eps, xp):
  """GRPO: (r - mean) / (std + eps) inside each group; std with N - 1 (ddof=1)."""
  mean_P1 = xp.mean(rewards_PxG, axis=1, keepdims=True)
  std_P1 = xp.std(rewards_PxG, axis=1, keepdims=True, ddof=1)
  return (rewards_PxG - mean_P1) / (std_P1 + eps)


@ESTIMATORS.register("drgrpo")
def drgrpo(rewards_PxG, *, eps, xp):
  """Dr. GRPO: r - mean (no division by the standard deviation)."""
  del eps
  return rewards_PxG - xp.mean(rewards_PxG, axis=1, keepdims=True)


@ESTIMATORS.register("rloo")
def rloo(rewards_PxG, *, eps, xp):
  """RLOO: r_i minus the mean of the other G - 1 rewards of its group."""
  del eps
  G = rewards_PxG.shape[1]
  others_sum = xp.sum(rewards_PxG, axis=1, keepdims=True) - rewards_PxG
  return rewards_PxG - others_sum / (G - 1)


def register_estimator(name: str, fn: Estimator) -> None:
  """Adds `fn(rewards_PxG, *, eps, xp) -> advantages_PxG` under `name` (config.rl.advantage_estimator);
  the call form of `@ESTIMATORS.register(name)`, which registering the same function again leaves as is."""
  if name in ESTIMATORS:
    if ESTIMATORS.get(name) is not fn:
      raise ValueError(f"advantage estimator {name!r} is already registered; pick another name")
    return
  ESTIMATORS.register(name)(fn)


def group_advantages(rewards, estimator: str = "grpo", *, eps: float = 1e-6):
  """Per-sample advantages from group rewards.

  Args:
    rewards: float [P, G], P prompts with G samples each; numpy (computed on host, numpy result) or a
      jax array (computed with jax.numpy, traceable under jit).
    estimator: a name registered in ESTIMATORS ("grpo", "drgrpo", "rloo", ...).
    eps: grpo's denominator offset.

  Returns:
    float32 [P, G]; exactly 0 for every group whose rewards are all equal (and for G = 1).
    Flatten with `.reshape(-1)` for the per-sequence advantages of a batch laid out group by group.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"unknown advantage estimator {estimator!r} ({ESTIMATORS.key}); known: {sorted(ESTIMATORS)} "
                     "(add one with @rl.ESTIMATORS.register(name))")
  fn = ESTIMATORS.get(estimator)
  on_host = not isinstance(rewards, jnp.ndarray)
  xp = np if on_host else jnp
  rewards_PxG = xp.asarray(rewards, dtype=xp.float32)
  if rewards_PxG.ndim != 2:
    raise ValueError(f"rewards must be [P, G] (prompts x samples per prompt); got shape {rewards_PxG.shape}")
  if rewards_PxG.shape[1] < 2:  # a group of one has no baseline
    return xp.zeros_like(rewards_PxG)
  constant_P1 = xp.max(rewards_PxG, axis=1, keepdims=True) == xp.min(rewards_PxG, axis=1, keepdims=True)
  if on_host:
    with np.errstate(divide="ignore", invalid="ignore"):
      adv_PxG = fn(rewards_PxG, eps=eps, xp=np)
  else:
    adv_PxG = fn(rewards_PxG, eps=eps, xp=jnp)
  return xp.where(constant_P1, xp.zeros_like(adv_PxG), adv_PxG).astype(xp.float32)
