"""Hostile model files: non-finite weights, lying safetensors headers, index paths leaving the directory."""
import json
import os
import struct

import numpy as np
import pytest

from jaxghpo import models
from jaxghpo.faults import NonFiniteError
from jaxghpo.models.safetensors_io import SafetensorsError, SafetensorsFile, read_header, save_file
from tests.hf_fixtures import make_hf_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "m")
  make_hf_model("qwen2", path)
  return path


def copy_with(model_dir, tmp_path, change):
  """The model directory with its tensors passed through change(dict) -> dict."""
  out = str(tmp_path / "m")
  os.makedirs(out)
  with open(os.path.join(model_dir, "config.json")) as f:
    cfg = f.read()
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(cfg)
  src = SafetensorsFile(os.path.join(model_dir, "model.safetensors"))
  tensors = change({k: np.array(src.get(k)) for k in src.keys()})
  save_file(tensors, os.path.join(out, "model.safetensors"))
  return out


def test_imported_nan_names_the_tensor(model_dir, tmp_path):
  def poison(t):
    t["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan
    return t
  path = copy_with(model_dir, tmp_path, poison)
  with pytest.raises(NonFiniteError, match=r"imported weights: NaN or inf in model\.layers\.1\.mlp\.down_proj\.weight;"
                                           r" .*re-download"):
    models.from_pretrained(path)


def write_raw(path, header: dict, data: bytes):
  blob = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob + data)
  return str(path)


@pytest.mark.parametrize("header, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, r"'a' and 'b' overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, r"'a' has data_offsets \[8, 0\]"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, r"'a' has data_offsets \[-8, 0\]"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, r"'a' has shape \[-2\]"),
    ({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}, r"'a' has shape \[2.5\]"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}}, r"'a' has data_offsets"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, r"'a' .*needs 16 bytes .* data section has 12"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, r"'a' .*needs 12 bytes at \[0, 8\)"),
    ({"a": [0, 8]}, r"header entry of tensor 'a' is not an object"),
])
def test_lying_headers_are_refused_before_reading(tmp_path, header, message):
  path = write_raw(tmp_path / "x.safetensors", header, b"\0" * 12)
  with pytest.raises(SafetensorsError, match=message):
    read_header(path)


def test_a_valid_header_still_reads(tmp_path):
  path = write_raw(tmp_path / "x.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                "b": {"dtype": "I8", "shape": [0], "data_offsets": [8, 8]}},
                   np.arange(2, dtype=np.float32).tobytes())
  np.testing.assert_array_equal(SafetensorsFile(path).get("a"), [0.0, 1.0])


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_paths_stay_in_the_model_directory(model_dir, tmp_path, shard):
  path = copy_with(model_dir, tmp_path, lambda t: t)
  names = list(SafetensorsFile(os.path.join(path, "model.safetensors")).keys())
  weight_map = {k: "model.safetensors" for k in names}
  weight_map[names[0]] = shard
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": weight_map}, f)
  with open(tmp_path / "outside.safetensors", "wb") as f:
    f.write(b"x")
  with pytest.raises(SafetensorsError, match=rf"names the shard '{shard}', which is not a file name inside"):
    models.from_pretrained(path)


def test_empty_model_path_is_refused():
  with pytest.raises(ValueError, match="the model path is empty"):
    models.from_pretrained("")
