"""Cloud TPU slices by name (v5p-64, v5e-16, v6e-64, v4-32, ...): their devices for compiling on a CPU host,
and the per-chip numbers the report divides by.

A slice name is ``GENERATION-N`` as Cloud TPU names accelerator types: N counts TensorCores on v4 and v5p
(two per chip, one JAX device per chip: megacore) and chips on v5e and v6e. ``devices(name)`` returns the
slice's devices from ``jax.experimental.topologies`` through libtpu (``pip install -e ".[tpu]"``); XLA:TPU
compiles for them with no TPU attached (nothing can run on them).

Per-chip numbers (bf16 peak FLOP/s, HBM bytes, HBM bandwidth bytes/s), from Google's public Cloud TPU pages:
  v4   275e12, 32 GiB, 1200 GB/s    https://cloud.google.com/tpu/docs/v4
  v5e  197e12, 16 GB,   819 GB/s    https://cloud.google.com/tpu/docs/v5e
  v5p  459e12, 95 GB,  2765 GB/s    https://cloud.google.com/tpu/docs/v5p
  v6e  918e12, 32 GB,  1640 GB/s    https://cloud.google.com/tpu/docs/v6e
Topologies (chips along each ICI axis) are those the same pages list for each slice size.
"""
from __future__ import annotations

import dataclasses
import math
import os


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str           # "v5p"
  topology_prefix: str      # libtpu's name: "v5p" in "v5p:2x4x4"
  chip_config: str          # libtpu chip config: "megacore" (one device per two-core chip) or "default"
  cores_per_chip_in_name: int  # what N in "GEN-N" counts: 2 (TensorCores, v4/v5p) or 1 (chips, v5e/v6e)
  peak_bf16_flops: float    # per chip (= per JAX device)
  hbm_bytes: float          # per chip
  hbm_bytes_per_s: float    # per chip
  topologies: dict          # chips in the slice -> topology ("2x4x4")
  source: str


_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8", 512: "8x8x8",
       1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}

CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", "v4", "megacore", 2, 275e12, 32 * 2**30, 1200e9, _3D, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("v5e", "v5e", "default", 1, 197e12, 16e9, 819e9, _2D, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("v5p", "v5p", "megacore", 2, 459e12, 95e9, 2765e9, _3D, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("v6e", "v6e", "default", 1, 918e12, 32e9, 1640e9, _2D, "https://cloud.google.com/tpu/docs/v6e"),
}
CHIPS_PER_HOST = (2, 2, 1)  # four chips per host VM on every generation here (v5e/v6e single-host 8-chip VMs aside)


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str        # "v5p-64"
  chip: Chip
  num_chips: int   # = JAX devices
  topology: str    # "2x4x4"

  @property
  def num_hosts(self) -> int:
    return max(1, self.num_chips // math.prod(CHIPS_PER_HOST))

  @property
  def hbm_bytes_per_device(self) -> float:
    return self.chip.hbm_bytes


def parse(name: str) -> Slice:
  """The slice called `name` (e.g. "v5p-64"): its chip and topology; a clear error for an unknown one."""
  generation, _, count = str(name).strip().lower().partition("-")
  chip = CHIPS.get(generation.replace("v5litepod", "v5e"))
  if chip is None or not count.isdigit():
    raise ValueError(f"TPU slice {name!r}: expected GENERATION-N with GENERATION one of {sorted(CHIPS)} "
                     "(e.g. v5p-64, v5e-16, v6e-64, v4-32)")
  cores = int(count)
  chips, rest = divmod(cores, chip.cores_per_chip_in_name)
  if rest or chips not in chip.topologies:
    known = sorted(n * chip.cores_per_chip_in_name for n in chip.topologies)
    raise ValueError(f"TPU slice {name!r}: no {chip.generation} slice of that size; sizes: "
                     + ", ".join(f"{chip.generation}-{n}" for n in known))
  return Slice(f"{chip.generation}-{cores}", chip, chips, chip.topologies[chips])


def _libtpu_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("libtpu") is not None


def devices(slice_: Slice):
  """The slice's devices (jax.Device objects of a compile-only TPU client), in the topology's order.

  Needs libtpu; the check names the install command. ALLOW_MULTIPLE_LIBTPU_LOAD lets this process load
  libtpu while another process on the host has it loaded (tests run several)."""
  if not _libtpu_available():
    raise SystemExit("compiling for a TPU slice needs libtpu, which is not installed; install it with\n"
                     "    pip install -e \".[tpu]\"\n(about 700 MB; it compiles for TPU on a CPU host)")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server off Google Cloud
  from jax.experimental import topologies
  bounds = tuple(min(c, n) for c, n in zip(CHIPS_PER_HOST, _dims(slice_.topology)))
  topology = topologies.get_topology_desc(
      platform="tpu", topology_name=f"{slice_.chip.topology_prefix}:{slice_.topology}",
      chip_config_name=slice_.chip.chip_config, chips_per_host_bounds=bounds, num_slices=1)
  found = list(topology.devices)
  if len(found) != slice_.num_chips:
    raise RuntimeError(f"libtpu gave {len(found)} devices for {slice_.name} ({slice_.topology}); expected "
                       f"{slice_.num_chips}")
  return found


def _dims(topology: str) -> tuple[int, int, int]:
  dims = [int(x) for x in topology.split("x")]
  return tuple(dims + [1] * (3 - len(dims)))
