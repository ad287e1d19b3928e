"""A full disk (ENOSPC) reported in one line: the path being written and the bytes it needed.

Writers wrap their writes: `with disk_full.writing(path, nbytes): ...` turns an OSError ENOSPC (also one
that orbax or tensorstore wrap in another exception, or report as text) into DiskFull, whose message
names the path, the bytes needed and the bytes free. main.py prints that message as the run's last
line and exits 1, without the traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from typing import Iterator

_ENOSPC_TEXT = ("No space left on device", "ENOSPC", "Disk quota exceeded")


class DiskFull(OSError):
  """Writing `path` (`bytes_needed` bytes) failed for want of space."""

  def __init__(self, path: str, bytes_needed: int | None):
    self.path, self.bytes_needed = os.fspath(path), bytes_needed
    self.bytes_free = free_bytes(self.path)
    need = f"{bytes_needed:,} bytes" if bytes_needed is not None else "an unknown number of bytes"
    free = f"{self.bytes_free:,} bytes free there" if self.bytes_free is not None else "free space unknown"
    super().__init__(errno.ENOSPC, f"disk full: writing {self.path} needs {need} ({free}); free space or use "
                                   "another --workdir, then rerun the same command to resume from the last checkpoint")

  def __str__(self) -> str:
    return self.strerror


def free_bytes(path: str) -> int | None:
  """Free bytes on the local file system holding `path` (its nearest existing parent); None for a URI."""
  if "://" in path and not path.startswith("file://"):
    return None
  path = os.path.abspath(path)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      return None
    path = parent
  try:
    return int(shutil.disk_usage(path).free)
  except OSError:
    return None


def find(e: BaseException | None) -> DiskFull | OSError | None:
  """The exception in `e`'s chain (causes, contexts, exception groups) that says the disk is full, or None."""
  seen = set()
  stack = [e]
  while stack:
    x = stack.pop()
    if x is None or id(x) in seen:
      continue
    seen.add(id(x))
    if isinstance(x, DiskFull):
      return x
    if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
      return x
    if any(t in str(x) for t in _ENOSPC_TEXT):
      return x
    stack += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]
  return None


def message(e: BaseException) -> str | None:
  """The one line for a full disk found in `e`'s chain; None when the disk is not the cause."""
  full = find(e)
  if full is None:
    return None
  if isinstance(full, DiskFull):
    return str(full)
  path = getattr(full, "filename", None)
  return str(DiskFull(path, None)) if path else f"disk full: {full}"


@contextlib.contextmanager
def writing(path, bytes_needed: int | None) -> Iterator[None]:
  """Turns a full disk met inside the block into DiskFull(path, bytes_needed)."""
  try:
    yield
  except DiskFull:
    raise
  except Exception as e:  # pylint: disable=broad-except  (re-raised as it is unless the disk is full)
    if find(e) is None:
      raise
    raise DiskFull(os.fspath(path), bytes_needed) from e
