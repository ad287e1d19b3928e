"""The one record type every dataset yields: a problem with its answer and its solution trace."""
from __future__ import annotations

import dataclasses
import zlib


@dataclasses.dataclass(frozen=True)
class Example:
  """A problem with a verifiable answer and a step-by-step solution trace.

  problem_id: stable int64 id (the scheduler keys its statistics on it).
  problem: the question text, without any prompt template.
  steps: the solution trace as a list of steps (lines); joined by `step_sep` it is the full solution.
  answer: the final answer as a string (for math: LaTeX as MATH writes it).
  level: difficulty level (number of steps for procedural tasks), -1 when unknown.
  step_sep: how steps are joined into the solution text.
  """
  problem_id: int
  problem: str
  steps: tuple[str, ...]
  answer: str
  level: int = -1
  step_sep: str = "\n"

  @property
  def solution(self) -> str:
    return self.step_sep.join(self.steps)

  def to_record(self) -> dict:
    """A flat dict of plain types (what TFDS/grain store)."""
    return {
        "problem_id": int(self.problem_id),
        "problem": self.problem,
        "steps": list(self.steps),
        "answer": self.answer,
        "level": int(self.level),
        "step_sep": self.step_sep,
    }

  @classmethod
  def from_record(cls, record: dict) -> "Example":
    def text(x):
      return x.decode("utf-8") if isinstance(x, bytes) else str(x)
    return cls(
        problem_id=int(record["problem_id"]),
        problem=text(record["problem"]),
        steps=tuple(text(s) for s in record["steps"]),
        answer=text(record["answer"]),
        level=int(record["level"]),
        step_sep=text(record.get("step_sep", "\n")),
    )


def stable_id(*parts: str) -> int:
  """A stable non-negative int63 id from strings (same input -> same id on every host and run)."""
  key = "\x1f".join(parts).encode("utf-8")
  hi = zlib.crc32(key)
  lo = zlib.adler32(key[::-1])
  return ((hi << 31) ^ lo) & 0x7FFF_FFFF_FFFF_FFFF
