"""Why a run stops: the signals that ask it to, and the one line every run prints at its end.

SIGTERM (a TPU preemption notice, a job scheduler) and SIGINT (Ctrl-C) are handled alike: the run
finishes the step it is in, saves a checkpoint at that step boundary (the stop is agreed over hosts),
lets the save commit and stops. A SIGTERM run then exits 0 (the scheduler restarts it), a SIGINT run
exits 130, as a shell expects of Ctrl-C. A second Ctrl-C stops the process at once, without saving.

    signals = StopSignals().install()     # in Trainer.run
    ... signals.code ...                  # 0: none; agreed over hosts with agreed_max, SIGINT over SIGTERM
    signals.uninstall()
    print(stop_line(reason, ...))         # "stopped: ..." (REASONS)
"""
from __future__ import annotations

import signal
import threading

# Codes agreed over hosts by their maximum: a Ctrl-C on any host wins over a SIGTERM on another.
SIGNAL_NAMES = {1: "SIGTERM", 2: "SIGINT"}
EXIT_CODES = {"SIGINT": 130}  # a stop reason's process exit code (0 when absent)
REASONS = ("finished steps", "token budget", "SIGTERM", "SIGINT", "already finished", "error")


class StopSignals:
  """SIGTERM and SIGINT handlers that only record the request (`code`); the loop acts at a step boundary."""

  def __init__(self):
    self.code = 0
    self._previous: dict[int, object] = {}

  @property
  def name(self) -> str | None:
    return SIGNAL_NAMES.get(self.code)

  def install(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread; the default ones stay
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def uninstall(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    code = 2 if signum == signal.SIGINT else 1
    if code == 2 and self.code == 2:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.code = max(self.code, code)
    print(f"received {SIGNAL_NAMES[code]}: stopping after this step, once its checkpoint is saved"
          + (" (Ctrl-C again stops at once, without saving)" if code == 2 else ""), flush=True)


def stop_line(reason: str, *, step: int = 0, num_steps: int = 0, gen_tokens: int = 0, max_gen_tokens: int = 0,
              saved: int | None = None, error: str = "") -> str:
  """The one line that says why a run stopped; `reason` is one of REASONS."""
  if reason not in REASONS:
    raise ValueError(f"stop reason {reason!r} is not one of {REASONS}")
  resume = "; rerun the same command to resume" + (f" from step {saved}" if saved is not None else "")
  if reason == "finished steps":
    return f"stopped: finished {step}/{num_steps} steps"
  if reason == "token budget":
    return (f"stopped: token budget spent at step {step}: {gen_tokens:,} generated tokens of max_gen_tokens="
            f"{max_gen_tokens:,}")
  if reason in ("SIGTERM", "SIGINT"):
    kept = "checkpoint saved" if saved == step else f"latest checkpoint step {saved}"
    return f"stopped: {reason} at step {step} of {num_steps}, {kept}{resume}"
  if reason == "already finished":
    return f"stopped: already finished at step {step}; nothing to train (use a fresh --workdir for a new run)"
  return f"stopped: error: {error}"
