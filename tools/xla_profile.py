"""Where the time of a compiled XLA program goes, grouped by op kind (matmul fusions, and the rest by name)."""
from __future__ import annotations

import collections
import glob
import re
import tempfile
import time


def op_kinds(hlo_text):
  """Maps each fusion of the compiled program to "matmul" when its computation holds a dot."""
  import re

  bodies, current = {}, None
  for line in hlo_text.splitlines():
    head = re.match(r"^%?([\w.\-]+) .*\{$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  kinds = {}
  for lines in bodies.values():
    for line in lines:
      m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .* fusion\(.*calls=%([\w.\-]+)", line)
      if m and any(" dot(" in x for x in bodies.get(m.group(2), ())):
        kinds[m.group(1)] = "matmul"
  return kinds



def profile(run, compiled_text: str, calls: int = 2):
  """Traces `calls` calls of `run()` (which must wait for its results) and returns
  (wall seconds per call, Counter kind -> op milliseconds per call, number of XLA threads seen).

  compiled_text: the compiled program's HLO (`jitted.lower(...).compile().as_text()`), to tell matmul
  fusions (a dot inside) from the others.
  """
  import jax
  from jax.profiler import ProfileData

  run()
  with tempfile.TemporaryDirectory() as trace_dir:
    wall = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(calls):
        run()
    wall = (time.perf_counter() - wall) / calls
    data = ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  kinds = op_kinds(compiled_text)
  per_kind, threads = collections.Counter(), set()
  for plane in data.planes:
    for line in plane.lines:
      if "Eigen" not in line.name:  # XLA:CPU runs compiled ops on its Eigen thread pool
        continue
      for event in line.events:
        if event.name.startswith("ThunkExecutor") or "Await" in event.name:
          continue
        threads.add(line.name)
        kind = kinds.get(event.name) or re.sub(r"[._]?\d+$", "", re.sub(r"\.clone.*", "", event.name))
        per_kind[kind] += event.duration_ns / calls / 1e6
  return wall, per_kind, len(threads)


def print_profile(title: str, wall: float, per_kind, threads: int, top: int = 12) -> None:
  total = sum(per_kind.values())
  print(f"profile ({title}, traced wall {wall * 1e3:.0f} ms per call; op time {total:.0f} ms on {threads} XLA threads):")
  for kind, ms in per_kind.most_common(top):
    print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f}%  {kind}")
