"""The grain input pipeline (jaxghpo/data/pipeline.py): shuffling, sharding, exact resume."""
import collections
import json
import os
import subprocess
import sys

import pytest

from jaxghpo.data import pipeline
from jaxghpo.data import tfds_builders
from jaxghpo.data.example import Example
from jaxghpo.data.tasks import chains

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def examples(n):
  return [Example(problem_id=1000 + i, problem=f"p{i}", steps=(f"s{i}",), answer=str(i), level=i % 3)
          for i in range(n)]


def ids(batches):
  return [[e.problem_id - 1000 for e in batch] for batch in batches]


def take(it, n):
  return ids(next(it) for _ in range(n))


def test_each_epoch_is_a_new_permutation_fixed_by_the_seed():
  run = ids(pipeline.make_pipeline(examples(20), batch_size_per_process=5, seed=3, num_epochs=3,
                                   process_index=0, process_count=1))
  assert len(run) == 12 and all(len(b) == 5 for b in run)
  epochs = [sum(run[4 * e:4 * e + 4], []) for e in range(3)]
  assert all(sorted(epoch) == list(range(20)) for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) == 3 and epochs[0] != list(range(20))
  assert run == ids(pipeline.make_pipeline(examples(20), batch_size_per_process=5, seed=3,
                                           num_epochs=3, process_index=0, process_count=1))
  other = ids(pipeline.make_pipeline(examples(20), batch_size_per_process=5, seed=4, num_epochs=3,
                                     process_index=0, process_count=1))
  assert other != run
  plain = pipeline.make_pipeline(examples(20), batch_size_per_process=5, seed=3, shuffle=False,
                                 num_epochs=2, process_index=0, process_count=1)
  assert sum(ids(plain), []) == list(range(20)) * 2


@pytest.mark.parametrize("process_count, prefetch", [(1, 0), (1, 3), (2, 2)])
def test_restored_position_yields_the_batches_of_an_uninterrupted_run(process_count, prefetch):
  # 10 examples, global batch 4 (x process count): batches straddle epoch boundaries.
  def make(state=None, index=0):
    return pipeline.make_pipeline(examples(10), batch_size_per_process=4 // process_count, seed=5,
                                  process_index=index, process_count=process_count,
                                  prefetch=prefetch, state=state)

  for index in range(process_count):
    never_stopped = make(index=index)
    take(never_stopped, 2)                       # 8 examples: still in epoch 0
    state = json.loads(json.dumps(never_stopped.get_state()))  # plain types survive a checkpoint
    assert state["step"] == 2 and all(isinstance(v, int) for v in state.values())
    following = take(never_stopped, 6)           # through epochs 1 and 2
    restored = make(state=state, index=index)
    assert restored.step == 2 and restored.epoch == 0.8
    assert take(restored, 6) == following
    never_stopped.set_state(state)               # rewinding an iterator works the same way
    assert take(never_stopped, 6) == following
    never_stopped.close()
    restored.close()


def test_state_from_other_data_or_settings_is_refused():
  state = pipeline.make_pipeline(examples(10), batch_size_per_process=2, seed=1, process_index=0,
                                 process_count=1).get_state()
  for kwargs, key in [(dict(seed=2), "seed"), (dict(batch_size_per_process=3), "global_batch_size"),
                      (dict(shuffle=False), "shuffle"), (dict(num_epochs=4), "num_epochs")]:
    args = dict(batch_size_per_process=2, seed=1, process_index=0, process_count=1) | kwargs
    with pytest.raises(ValueError, match=rf"saved with {key}=.*but this pipeline has {key}="):
      pipeline.make_pipeline(examples(10), state=state, **args)
  with pytest.raises(ValueError, match=r"training data changed.* then \(10 rows\).* now \(11 rows\)"):
    pipeline.make_pipeline(examples(11), batch_size_per_process=2, seed=1, process_index=0,
                           process_count=1, state=state)
  # Same global batch on another process count: the position is still valid.
  pipeline.make_pipeline(examples(10), batch_size_per_process=1, seed=1, process_index=1,
                         process_count=2, state=state)


def test_processes_split_each_global_batch_into_disjoint_chunks():
  # 48 examples, 3 processes x 4: a process's batch b is its chunk of the one-process batch b of 12.
  single = ids(pipeline.make_pipeline(examples(48), batch_size_per_process=12, seed=9, num_epochs=2,
                                      process_index=0, process_count=1))
  shards = [ids(pipeline.make_pipeline(examples(48), batch_size_per_process=4, seed=9, num_epochs=2,
                                       process_index=h, process_count=3)) for h in range(3)]
  assert [len(s) for s in shards] == [8, 8, 8]
  for b in range(8):
    assert shards[0][b] + shards[1][b] + shards[2][b] == single[b]
  first_epoch = [set(sum(s[:4], [])) for s in shards]
  assert sum(len(x) for x in first_epoch) == 48 and set.union(*first_epoch) == set(range(48))


def test_remainder_is_dropped_so_every_process_gets_as_many_batches():
  shards = [pipeline.make_pipeline(examples(50), batch_size_per_process=4, seed=0, num_epochs=1,
                                   process_index=h, process_count=2) for h in range(2)]
  assert [len(s) for s in shards] == [6, 6]
  read = [sum(ids(s), []) for s in shards]
  assert [len(r) for r in read] == [24, 24] and len(set(read[0]) | set(read[1])) == 48
  with pytest.raises(ValueError, match="do not fill one global batch of 64"):
    pipeline.make_pipeline(examples(50), batch_size_per_process=32, seed=0, num_epochs=1,
                           process_index=0, process_count=2)


def test_sources_and_defaults():
  records = [e.to_record() for e in examples(6)]
  batches = list(pipeline.make_pipeline(records, batch_size_per_process=3, seed=0, shuffle=False,
                                        num_epochs=1))  # process index/count from JAX: 0 of 1
  assert batches == [examples(6)[:3], examples(6)[3:]]
  with pytest.raises(TypeError, match="the source yielded a str"):
    next(pipeline.make_pipeline(["x"] * 4, batch_size_per_process=2, seed=0, process_index=0,
                                process_count=1))
  with pytest.raises(ValueError, match="source is empty"):
    pipeline.make_pipeline([], batch_size_per_process=2, seed=0, process_index=0, process_count=1)


def test_two_processes_read_disjoint_shards_of_tfds_builds(tmp_path):
  """A chains build and a JSONL build, read through grain by two processes (one epoch each)."""
  task = tfds_builders.prepare(tfds_builders.task_builder(
      "chains", seed=11, sizes={"train": 200}, levels=[1, 2, 3], data_dir=tmp_path / "tfds"))
  rows = [{"problem": f"What is {i} + {i}?", "solution": f"Double it.\nSo \\boxed{{{2 * i}}}.",
           "level": "Level 2"} for i in range(60)]
  jsonl = tmp_path / "math.jsonl"
  jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
  math = tfds_builders.prepare(tfds_builders.files_builder({"train": str(jsonl)},
                                                           data_dir=tmp_path / "tfds"))
  expected = [chains.generate("train", 200, 11, [1, 2, 3]), tfds_builders.read_examples(math, "train")]
  assert len(expected[1]) == 60

  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = []
  for index in range(2):
    out = tmp_path / f"p{index}"
    out.mkdir()
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "_pipeline_worker.py"), str(index), "2", "4",
         "13", str(out), f"{task.data_dir}:train", f"{math.data_dir}:train"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  for p in procs:
    output = p.communicate(timeout=120)[0].decode(errors="replace")
    assert p.returncode == 0, output[-3000:]

  for k, source in enumerate(expected):
    read = []
    for index in range(2):
      lines = (tmp_path / f"p{index}" / f"{k}.jsonl").read_text().splitlines()
      batches = [[Example.from_record(r) for r in json.loads(line)] for line in lines]
      assert all(len(b) == 4 for b in batches)
      read.append(collections.Counter(e for b in batches for e in b))
    # Same count on both; the remainder of 60 (4 of a global batch of 8) dropped.
    assert sum(read[0].values()) == sum(read[1].values()) == (len(source) // 8) * 4
    # Counted as multisets (chains draws problems with replacement, so an Example may repeat): no
    # stored example is read twice, and every one read equals its source in every field.
    assert not (read[0] + read[1]) - collections.Counter(source)
    if len(source) % 8 == 0:
      assert read[0] + read[1] == collections.Counter(source)  # the full epoch
    else:
      assert not set(read[0]) & set(read[1])  # the file's problems are unique
