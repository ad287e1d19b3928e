"""TrainState: what a run carries from step to step, as a pair of device state and host state.

  device: params, opt_state (sharded jax arrays; the train step's inputs and outputs)
  host:   the hint scheduler, the data pipeline's position, the run key (common random numbers derive
          every draw from it: rollout/crn.py), and the token counts the budget is spent in

(SFT's host state is its batch RNG: sft.SFTHost.) `host_dict()` is what a checkpoint saves beside params and optimizer state (and `load_host` restores), so
a resumed run continues the same data order, the same curriculum statistics and the same random draws.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class HostState:
  scheduler: Any  # curriculum.HintScheduler
  pipeline: Any  # data.pipeline.Pipeline (its position is part of the state)
  rng: Any  # the run key: jax.random.key(derived.seed(config, "train_rng"))
  gen_tokens_total: int = 0  # sampled tokens over all hosts, retries included
  budget_tokens_total: int = 0  # config.max_gen_tokens is spent in these (jaxghpo/budget.py)

  def state_dict(self) -> dict:
    """As a checkpoint saves it (numpy / Python scalars and the key)."""
    return {"scheduler": self.scheduler.state_dict(), "pipeline": self.pipeline.get_state(), "rng": self.rng,
            "gen_tokens_total": int(self.gen_tokens_total), "budget_tokens_total": int(self.budget_tokens_total)}

  def load_state_dict(self, host: dict) -> None:
    """Restores state_dict()'s fields (a checkpoint from before budget_tokens_total counts generated tokens)."""
    self.scheduler.load_state_dict(host["scheduler"])
    self.pipeline.set_state(host["pipeline"])
    self.rng = host["rng"]
    self.gen_tokens_total = int(host["gen_tokens_total"])
    self.budget_tokens_total = int(host.get("budget_tokens_total", host["gen_tokens_total"]))


@dataclasses.dataclass
class TrainState:
  params: Any
  opt_state: Any
  host: Any  # HostState for RL, sft.SFTHost for SFT: anything with state_dict / load_state_dict
  step: int = 0  # updates done (the next step to run)

  def host_dict(self) -> dict:
    """The host state as a checkpoint saves it."""
    return self.host.state_dict()

  def load_host(self, host: dict) -> None:
    self.host.load_state_dict(host)
    self.step = int(host["step"])
