"""Hostile model files: non-finite weights, lying safetensors headers, index paths leaving the directory."""
import json
import os
import struct

import numpy as np
import pytest

from jaxghpo import models
from jaxghpo.faults import NonFiniteError
from jaxghpo.models.safetensors_io import SafetensorsError, SafetensorsFile, save_file
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


# The reasons are the safetensors package's (its Rust parser checks the header when the file is opened);
# the error is ours: a SafetensorsError naming the file and the mend.
@pytest.mark.parametrize("header, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, r"invalid offset for tensor `b`"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, r"invalid offset for tensor `a`"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, r"integer `-8`, expected usize"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, r"integer `-2`, expected usize"),
    ({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}, r"floating point `2.5`, expected usize"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}}, r"string \"8\", expected usize"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, r"file not fully covered"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, r"invalid shape, data type, or offset"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, r"file not fully covered"),  # 4 bytes too many
    ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, r"unknown variant `Q7`"),
    ({"a": [0, 8]}, r"invalid type"),
])
def test_lying_headers_are_refused_before_reading(tmp_path, header, message):
  path = write_raw(tmp_path / "x.safetensors", header, b"\0" * 12)
  with pytest.raises(SafetensorsError, match=rf"x\.safetensors: not a valid safetensors file \(.*{message}.*\): "
                                             r"the file is truncated or corrupt; re-download"):
    SafetensorsFile(path)


def test_short_file_is_refused(tmp_path):
  path = tmp_path / "x.safetensors"
  path.write_bytes(b"\x05\x00")
  with pytest.raises(SafetensorsError, match=r"x\.safetensors: not a valid safetensors file"):
    SafetensorsFile(str(path))


def test_a_valid_header_still_reads(tmp_path):
  path = write_raw(tmp_path / "x.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                "b": {"dtype": "I8", "shape": [0], "data_offsets": [8, 8]}},
                   np.arange(2, dtype=np.float32).tobytes())
  f = SafetensorsFile(path)
  np.testing.assert_array_equal(f.get("a"), [0.0, 1.0])
  assert (f.dtype_code("a"), f.shape("a"), f.shape("b")) == ("F32", (2,), (0,))


def test_bfloat16_round_trip_and_slices(tmp_path):
  import ml_dtypes
  x = np.arange(12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "b.safetensors")
  save_file({"x": x, "y": np.ones(3, np.int64)}, path, {"format": "pt"})
  f = SafetensorsFile(path)
  assert f.dtype_code("x") == "BF16" and f.get("x").dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(f.get("x"), x)
  np.testing.assert_array_equal(f.read("x", (slice(1, 3), slice(None))), x[1:3])
  with pytest.raises(SafetensorsError, match=r"c\.safetensors: cannot write"):
    save_file({"z": np.zeros(2, np.complex128)}, str(tmp_path / "c.safetensors"))
  assert not os.path.exists(tmp_path / "c.safetensors.tmp")


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
