"""The input pipeline: grain over a random-access source, shuffled by seed, sharded by JAX process,
batched into lists of Examples, prefetched in background threads, with a checkpointable position.

The global stream is the source in a new seeded permutation each epoch, epochs back to back. A
global batch is `batch_size_per_process * process_count` consecutive stream elements; process h
gets the h-th contiguous chunk of every global batch. So:
  - processes read disjoint slices and every process yields the same number of batches;
  - global batch b is the same set of examples, in the same row order when the chunks are stacked
    by process index, whatever the process count (a 2-process run with batch B each sees what a
    1-process run with batch 2B sees);
  - the position is one integer, the global step, equal on every process.
With num_epochs set, the stream ends after that many epochs and its last partial global batch is
dropped; with num_epochs=None it never ends (batches may straddle epochs).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator, Mapping, Sequence

import grain

from jaxghpo.data.example import Example

_STATE_KEYS = ("num_examples", "seed", "shuffle", "num_epochs", "global_batch_size")
_CONTENT = "content_fingerprint"  # in the state when the source is a list of Examples


def content_fingerprint(examples: Sequence[Example]) -> int:
  """A 62-bit hash of the examples' content and order (id, problem, answer, level, trace).

  Two datasets of the same length but other rows (or another order) get different fingerprints,
  so a resume can tell that its data changed. ~1 s per 100k rows.
  """
  h = hashlib.blake2b(digest_size=8)
  for ex in examples:
    h.update(f"{ex.problem_id}\x1f{ex.level}\x1f{ex.answer}\x1f{ex.problem}\x1f".encode("utf-8", "replace"))
    h.update(ex.step_sep.join(ex.steps).encode("utf-8", "replace"))
    h.update(b"\x1e")
  return int.from_bytes(h.digest(), "little") >> 2


def _to_example(element: Any) -> Example:
  """An Example from what a source yields: an Example, or a record dict (TFDS: text as bytes)."""
  if isinstance(element, Example):
    return element
  if isinstance(element, Mapping):
    return Example.from_record(element)
  raise TypeError(f"the source yielded a {type(element).__name__}; expected an Example or a record "
                  f"dict (Example.to_record / a TFDS data source of jaxghpo's builders).")


class Pipeline(Iterator[list[Example]]):
  """An iterator of batches (list[Example] of length batch_size_per_process) for one process.

  get_state() -> dict of ints, set_state(state) restores it exactly: the batches after a restore
  are those an uninterrupted pipeline would have yielded. The state is the same on every process
  (the global step), so one copy in a checkpoint serves all.
  """

  def __init__(self, source: Sequence[Any], *, batch_size_per_process: int, seed: int,
               shuffle: bool, num_epochs: int | None, process_index: int, process_count: int,
               prefetch: int):
    num_examples = len(source)
    if num_examples == 0:
      raise ValueError("the source is empty: build or load the dataset first (no examples to read).")
    if batch_size_per_process <= 0:
      raise ValueError(f"batch_size_per_process={batch_size_per_process}: must be positive.")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count}).")
    if not 0 <= seed < 2**32:
      raise ValueError(f"seed={seed}: grain shuffles with a seed in [0, 2**32).")
    if num_epochs is not None and num_epochs <= 0:
      raise ValueError(f"num_epochs={num_epochs}: give a positive number, or None for no end.")
    if prefetch < 0:
      raise ValueError(f"prefetch={prefetch}: the number of batches read ahead cannot be negative.")
    self.batch_size_per_process = int(batch_size_per_process)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.global_batch_size = self.batch_size_per_process * self.process_count
    self._fingerprint = {"num_examples": int(num_examples), "seed": int(seed),
                         "shuffle": int(bool(shuffle)),
                         "num_epochs": -1 if num_epochs is None else int(num_epochs),
                         "global_batch_size": self.global_batch_size}
    if isinstance(source, (list, tuple)) and all(isinstance(x, Example) for x in source):
      self._fingerprint[_CONTENT] = content_fingerprint(source)

    stream = grain.MapDataset.source(source)
    if shuffle:
      stream = stream.shuffle(seed=seed)  # grain reseeds each epoch: seed + epoch
    stream = stream.repeat(num_epochs).map(_to_example)
    # Chunks of one process's batch size; process h takes chunks h, h + count, h + 2 count, ...
    # i.e. the h-th chunk of every global batch. Cutting the chunk count to a multiple of the
    # process count drops the last partial global batch, so every process gets as many batches.
    chunks = stream.batch(self.batch_size_per_process, drop_remainder=True, batch_fn=list)
    num_global_batches = len(chunks) // self.process_count
    if num_global_batches == 0:
      raise ValueError(
          f"{num_examples} examples x num_epochs={num_epochs} do not fill one global batch of "
          f"{self.global_batch_size} (batch_size_per_process x process_count): lower the batch "
          f"size or raise num_epochs.")
    mine = chunks[self.process_index:num_global_batches * self.process_count:self.process_count]
    self._num_batches = None if num_epochs is None else num_global_batches
    # Batches are read ahead by a thread pool; grain's position counts the batches returned, not
    # those read ahead, so a saved state is exact.
    read_options = grain.ReadOptions(num_threads=min(prefetch, 4), prefetch_buffer_size=prefetch)
    self._iterator = mine.to_iter_dataset(read_options).__iter__()

  # -- iteration ----------------------------------------------------------------------------------
  def __iter__(self) -> "Pipeline":
    return self

  def __next__(self) -> list[Example]:
    return next(self._iterator)

  def __len__(self) -> int:
    """Batches per process over the whole run (only with num_epochs set)."""
    if self._num_batches is None:
      raise TypeError("the pipeline has no end (num_epochs=None), so it has no length.")
    return self._num_batches

  @property
  def step(self) -> int:
    """The number of batches returned so far (= global steps; equal on every process)."""
    return int(self._iterator.get_state()["next_index"])

  @property
  def epoch(self) -> float:
    """Epochs of the source consumed so far (global examples read / examples in the source)."""
    return self.step * self.global_batch_size / self._fingerprint["num_examples"]

  # -- position -----------------------------------------------------------------------------------
  def get_state(self) -> dict[str, int]:
    """The position: {"step": batches returned} plus what it is only valid with (all ints)."""
    return {"step": self.step, **self._fingerprint}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Moves to a saved position; the next batch is the one that followed it."""
    missing = [k for k in ("step",) + _STATE_KEYS if k not in state]
    if missing:
      raise ValueError(f"pipeline state lacks {missing}; expected a dict from Pipeline.get_state().")
    # A state saved before content fingerprints existed carries none; it is checked on length only.
    if _CONTENT in state and _CONTENT in self._fingerprint and int(state[_CONTENT]) != self._fingerprint[_CONTENT]:
      raise ValueError(
          f"the training data changed since this position was saved: content fingerprint "
          f"{int(state[_CONTENT]):016x} then ({int(state['num_examples'])} rows), "
          f"{self._fingerprint[_CONTENT]:016x} now ({self._fingerprint['num_examples']} rows). A resume needs "
          f"the same rows in the same order (config.data files, on_bad_row, prompt room, seed); restore the "
          f"data the run started with, or start a fresh workdir.")
    for key in _STATE_KEYS:
      if int(state[key]) != self._fingerprint[key]:
        raise ValueError(
            f"pipeline state was saved with {key}={int(state[key])} but this pipeline has "
            f"{key}={self._fingerprint[key]}: a saved position is only valid for the same data, seed, "
            f"shuffle, num_epochs and global batch size (batch_size_per_process x process_count). "
            f"Restore with those, or start the data afresh (state=None).")
    step = int(state["step"])
    if step < 0 or (self._num_batches is not None and step > self._num_batches):
      raise ValueError(f"pipeline state step={step} is outside [0, {self._num_batches}].")
    self._iterator.set_state({"next_index": step})

  def close(self) -> None:
    """Stops the read-ahead threads."""
    self._iterator.close()

  def __enter__(self) -> "Pipeline":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def make_pipeline(source: Sequence[Any], *, batch_size_per_process: int, seed: int,
                  shuffle: bool = True, num_epochs: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  prefetch: int = 2, state: Mapping[str, Any] | None = None) -> Pipeline:
  """A Pipeline of list[Example] batches over `source`.

  Args:
    source: random access (len and [i]): a TFDS data source of jaxghpo's builders
      (tfds_builders.data_source), a list of Examples, or a list of Example records.
    batch_size_per_process: examples per batch on this process; the global batch is this times
      process_count.
    seed: shuffle seed in [0, 2**32); epoch e uses a permutation seeded with seed + e.
    shuffle: False keeps source order (still sharded and batched).
    num_epochs: epochs before the pipeline ends; None never ends.
    process_index, process_count: this process's shard; default jax.process_index() / count().
    prefetch: batches read ahead in background threads (0: read on demand).
    state: a position from Pipeline.get_state() to resume from.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (only when the caller leaves it to JAX)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  pipeline = Pipeline(source, batch_size_per_process=batch_size_per_process, seed=seed,
                      shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
                      process_count=process_count, prefetch=prefetch)
  if state is not None:
    pipeline.set_state(state)
  return pipeline


__all__ = ["Pipeline", "make_pipeline"]
