"""One process of the two-process pipeline test (tests/test_pipeline.py).

Reads built TFDS datasets through make_pipeline as process PROCESS_INDEX of PROCESS_COUNT, one
epoch each, and writes dataset k's batches to OUT_DIR/k.jsonl, one batch of Example records a line.

  python tests/_pipeline_worker.py PROCESS_INDEX PROCESS_COUNT BATCH SEED OUT_DIR DIR:SPLIT [...]
"""
import json
import os
import sys

from jaxghpo.data import pipeline
from jaxghpo.data import tfds_builders


def main(argv):
  index, count, batch, seed, out_dir = argv[1:6]
  for k, spec in enumerate(argv[6:]):
    dataset_dir, split = spec.rsplit(":", 1)
    source = tfds_builders.data_source(dataset_dir, split)
    batches = pipeline.make_pipeline(source, batch_size_per_process=int(batch), seed=int(seed),
                                     num_epochs=1, process_index=int(index),
                                     process_count=int(count))
    with batches, open(os.path.join(out_dir, f"{k}.jsonl"), "w") as f:
      for batch_examples in batches:
        f.write(json.dumps([e.to_record() for e in batch_examples]) + "\n")
  # A reader must not pull in TensorFlow.
  assert "tensorflow" not in sys.modules, "reading the TFDS builds imported tensorflow"


if __name__ == "__main__":
  main(sys.argv)
