"""Run files on a local disk or an object store (gs://, s3://): one path layer over etils.epath, as orbax uses.

Every file a run writes outside its checkpoints goes through here: metrics.jsonl, TensorBoard events,
config.json, evaluation rows, summary.md/json, curves.png, the data report and the HF export. A workdir
is a local path or a URI; epath reaches gs:// through fsspec's gcsfs (`pip install gcsfs`), or through
tf.io.gfile when TensorFlow is installed.

Object stores write whole objects: there is no append and no rename, and a written object is either
the old one or the new one. So `write_text` is atomic everywhere (locally a temporary file and a
rename), and files that grow (metrics.jsonl, event files) are rewritten whole when they are remote.

    paths.join(workdir, "eval", name)       # str, "gs://b/run/eval/name" or "/runs/x/eval/name"
    paths.write_text(path, text)            # atomic
    with paths.local_dir(out_dir) as d:     # tools that write only to local directories (safetensors,
      model.save(d)                         # tokenizers, matplotlib): copied to out_dir when remote
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import IO, Iterator

from etils import epath

from jaxghpo import disk_full

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether `path` is a URI of a remote store (gs://, s3://, ...), not a local path."""
  text = os.fspath(path)
  return "://" in text and not text.startswith("file://")


def as_path(path: PathLike) -> epath.Path:
  return epath.Path(os.fspath(path))


def join(path: PathLike, *parts: str) -> str:
  """`path`/parts as a string (a URI stays a URI; a local path stays as given, not made absolute)."""
  if not is_remote(path):
    return os.path.join(os.fspath(path), *parts)
  return os.fspath(as_path(path).joinpath(*parts))


def makedirs(path: PathLike) -> None:
  as_path(path).mkdir(parents=True, exist_ok=True)


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def isdir(path: PathLike) -> bool:
  return as_path(path).is_dir()


def remove(path: PathLike) -> None:
  """Deletes file `path` (nothing when it does not exist)."""
  try:
    as_path(path).unlink()
  except FileNotFoundError:
    pass


def listdir(path: PathLike) -> list[str]:
  """Names in directory `path`, sorted."""
  return sorted(p.name for p in as_path(path).iterdir())


def open_file(path: PathLike, mode: str = "r") -> IO:
  """A file object; text modes read and write UTF-8. Modes "r", "w" (and "rb", "wb"); no appends."""
  if "a" in mode or "+" in mode:
    raise ValueError(f"paths.open_file({os.fspath(path)!r}, {mode!r}): object stores cannot append or update; "
                     "read the file and write it whole (write_text)")
  if not is_remote(path):
    return open(os.fspath(path), mode, **({} if "b" in mode else {"encoding": "utf-8"}))
  return as_path(path).open(mode)


def read_text(path: PathLike) -> str:
  with open_file(path, "r") as f:
    return f.read()


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` atomically (a reader sees the old file or the new one); makes the parent directory.
  A full disk raises disk_full.DiskFull naming `path` and len(data)."""
  with disk_full.writing(path, len(data)):
    _write_bytes(path, data)


def _write_bytes(path: PathLike, data: bytes) -> None:
  if is_remote(path):
    with as_path(path).open("wb") as f:  # one object upload
      f.write(data)
    return
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: PathLike, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def copy_tree(src_dir: PathLike, dst_dir: PathLike) -> None:
  """Copies the files under local directory `src_dir` to `dst_dir` (a local path or a URI)."""
  src_dir = os.fspath(src_dir)
  for root, _, files in os.walk(src_dir):
    rel = os.path.relpath(root, src_dir)
    for name in files:
      target = join(dst_dir, name) if rel == "." else join(dst_dir, rel, name)
      if not is_remote(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(root, name), target)
        continue
      with open(os.path.join(root, name), "rb") as src, as_path(target).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)  # streamed: export shards are up to 2 GB


@contextlib.contextmanager
def local_dir(path: PathLike) -> Iterator[str]:
  """A local directory to write `path`'s files into: `path` itself when local (created), otherwise a
  temporary directory whose files are copied to `path` when the block ends without an error."""
  if not is_remote(path):
    os.makedirs(os.fspath(path), exist_ok=True)
    yield os.fspath(path)
    return
  tmp = tempfile.mkdtemp(prefix="jaxghpo-")
  try:
    yield tmp
    copy_tree(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_file(path: PathLike) -> Iterator[str]:
  """A local file name to write `path` with (for writers that take a file name); uploaded at the end."""
  if not is_remote(path):
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    yield os.fspath(path)
    return
  tmp = tempfile.mkdtemp(prefix="jaxghpo-")
  try:
    name = os.path.join(tmp, os.path.basename(os.fspath(path)))
    yield name
    with open(name, "rb") as f:
      write_bytes(path, f.read())
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- TensorBoard
class _EventFile:
  """A TensorBoard event file on a remote store: the records so far, uploaded whole at each flush."""

  def __init__(self, path: str):
    self.path, self.data, self.written = path, bytearray(), 0

  def write(self, data: bytes) -> None:
    self.data += data

  def flush(self) -> None:
    if len(self.data) != self.written:
      write_bytes(self.path, bytes(self.data))
      self.written = len(self.data)

  def close(self) -> None:
    self.flush()


class _EventFileFactory:
  def open(self, path: str) -> _EventFile:
    # Event files are named by the second and host: a writer opened within the same second as an
    # earlier one (a quick restart) would replace its object; TensorBoard reads any *tfevents* name.
    name, n = path, 0
    while exists(name):
      n += 1
      name = f"{path}.{n}"
    return _EventFile(name)

  def directory_check(self, path: str) -> None:
    makedirs(path)


def tensorboard_writer(logdir: PathLike, **kwargs):
  """A tensorboardX SummaryWriter for `logdir`; a remote logdir's event files are written through this
  module (tensorboardX's own gs:// writer needs google-cloud-storage, and it has none for other stores)."""
  from tensorboardX import SummaryWriter  # imported here: it is slow to import
  from tensorboardX import record_writer

  logdir = os.fspath(logdir)
  if is_remote(logdir):
    record_writer.register_writer_factory(logdir.split(":")[0], _EventFileFactory())
  return SummaryWriter(logdir=logdir, **kwargs)
