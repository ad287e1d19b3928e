"""Logit parity with transformers, HF round trip, sharded and bfloat16 loading, clear errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxghpo import models, parallel
from jaxghpo.models.safetensors_io import SafetensorsError
from tests.hf_fixtures import make_hf_model


@pytest.fixture(scope="module", params=["qwen2", "qwen3", "llama"])
def hf_dir(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param))
  model = make_hf_model(request.param, path)
  return request.param, path, model


def _torch_logits(model, tokens, attention_mask=None):
  with torch.no_grad():
    kw = {} if attention_mask is None else {"attention_mask": torch.tensor(attention_mask)}
    return model(torch.tensor(tokens), **kw).logits.float().numpy()


@pytest.mark.parametrize("length", [1, 7, 33])
def test_logit_parity(hf_dir, length):
  family, path, hf_model = hf_dir
  model, cfg = models.from_pretrained(path, dtype=jnp.float32)
  assert cfg.model_type == family
  tokens = np.random.default_rng(length).integers(3, cfg.vocab_size, size=(3, length)).astype(np.int32)
  ours = np.asarray(models.logits(model, tokens))
  theirs = _torch_logits(hf_model, tokens)
  assert ours.shape == (3, length, cfg.vocab_size) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_left_padded_batch_matches_unpadded(hf_dir):
  family, path, hf_model = hf_dir
  model, cfg = models.from_pretrained(path)
  rng = np.random.default_rng(0)
  lengths = [5, 9, 2]
  T = max(lengths)
  tokens = np.zeros((3, T), np.int32)
  valid = np.zeros((3, T), bool)
  for i, n in enumerate(lengths):
    tokens[i, T - n:] = rng.integers(3, cfg.vocab_size, n)
    valid[i, T - n:] = True
  padded = np.asarray(models.logits_padded(model, tokens, valid))
  for i, n in enumerate(lengths):
    alone = np.asarray(models.logits(model, tokens[i:i + 1, T - n:]))[0]
    np.testing.assert_allclose(padded[i, T - n:], alone, atol=1e-5)
  theirs = _torch_logits(hf_model, tokens, valid.astype(np.int64))
  np.testing.assert_allclose(padded[valid], theirs[valid], atol=1e-4)


def test_save_pretrained_round_trip(hf_dir, tmp_path):
  family, path, hf_model = hf_dir
  model, cfg = models.from_pretrained(path)
  out = str(tmp_path / "export")
  models.save_pretrained(model, cfg, out)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokens = np.random.default_rng(1).integers(3, cfg.vocab_size, size=(2, 11)).astype(np.int32)
  np.testing.assert_allclose(_torch_logits(reloaded, tokens), _torch_logits(hf_model, tokens), atol=1e-6)
  ours_again, _ = models.from_pretrained(out)
  np.testing.assert_allclose(np.asarray(models.logits(ours_again, tokens)),
                             np.asarray(models.logits(model, tokens)), atol=0)


def test_sharded_save_with_index(tmp_path):
  path = str(tmp_path / "src")
  hf_model = make_hf_model("qwen2", path)
  model, cfg = models.from_pretrained(path)
  out = str(tmp_path / "sharded")
  models.save_pretrained(model, cfg, out, max_shard_bytes=20_000)
  assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
  assert len([f for f in os.listdir(out) if f.endswith(".safetensors")]) > 2
  again, _ = models.from_pretrained(out)
  tokens = np.arange(3, 20, dtype=np.int32)[None]
  np.testing.assert_allclose(np.asarray(models.logits(again, tokens)), _torch_logits(hf_model, tokens), atol=1e-4)


@pytest.mark.parametrize("mesh_shape", [(1, 8, 1), (2, 2, 2), (1, 4, 2)])
def test_load_under_mesh_places_by_logical_axes(mesh_shape, tmp_path):
  path = str(tmp_path / "m")
  hf_model = make_hf_model("qwen2", path)
  mesh = parallel.make_mesh(mesh_shape)
  with jax.set_mesh(mesh):
    model, cfg = models.from_pretrained(path)
  fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
  attn = model.layers[0].self_attn
  q = attn.q_proj.kernel.get_value()  # [embed=64, heads*hd=64]: embed over fsdp, heads over tensor
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp" if fsdp > 1 else None,
                                                       "tensor" if tensor > 1 else None)
  assert q.addressable_shards[0].data.shape == (64 // fsdp, 64 // tensor)
  emb = model.embed_tokens.get_value()  # [vocab=97, embed]: 97 is not divisible -> vocab replicated
  assert emb.sharding.spec[0] is None
  norm = model.norm.scale.get_value()
  assert norm.sharding.spec == jax.sharding.PartitionSpec(None)
  tokens = np.arange(3, 12, dtype=np.int32)[None]
  with jax.set_mesh(mesh):
    ours = np.asarray(models.logits(model, tokens))
  np.testing.assert_allclose(ours, _torch_logits(hf_model, tokens), atol=1e-4)


def test_bfloat16_loading(tmp_path):
  path = str(tmp_path / "bf16")
  hf_model = make_hf_model("llama", path, dtype=torch.bfloat16)
  model, cfg = models.from_pretrained(path, dtype=jnp.bfloat16)
  assert cfg.param_dtype == "bfloat16"
  assert model.layers[0].mlp.up_proj.kernel.get_value().dtype == jnp.bfloat16
  tokens = np.arange(3, 15, dtype=np.int32)[None]
  ours = np.asarray(models.logits(model, tokens))
  theirs = _torch_logits(hf_model.float(), tokens)
  assert np.abs(ours - theirs).max() < 0.1  # bf16 compute
  f32, _ = models.from_pretrained(path, dtype=jnp.float32)  # bf16 file, f32 params: exact upcast
  np.testing.assert_allclose(np.asarray(models.logits(f32, tokens)), theirs, atol=1e-4)


def test_unsupported_architecture(tmp_path):
  path = str(tmp_path / "m")
  make_hf_model("qwen2", path)
  cfg = json.load(open(os.path.join(path, "config.json")))
  cfg["model_type"] = "gpt2"
  cfg["architectures"] = ["GPT2LMHeadModel"]
  json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
  with pytest.raises(ValueError, match="gpt2.*not supported"):
    models.from_pretrained(path)


def _model_with_tensors(tmp_path, edit) -> str:
  """A saved tiny qwen2 whose safetensors file was rewritten with edit(tensors) -> tensors."""
  from jaxghpo.models.safetensors_io import SafetensorsFile, save_file
  path = str(tmp_path / "m")
  make_hf_model("qwen2", path)
  f = SafetensorsFile(os.path.join(path, "model.safetensors"))
  save_file(edit({k: np.array(f.get(k)) for k in f.keys()}), os.path.join(path, "model.safetensors"))
  return path


def test_missing_tensor_names_tensor_and_file(tmp_path):
  gone = "model.layers.1.mlp.up_proj.weight"
  path = _model_with_tensors(tmp_path, lambda t: {k: v for k, v in t.items() if k != gone})
  with pytest.raises(SafetensorsError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing.*model\.safetensors"):
    models.from_pretrained(path)


def test_extra_tensor_is_an_error(tmp_path):
  extra = {"model.layers.7.mlp.up_proj.weight": np.zeros((2, 2), np.float32)}
  path = _model_with_tensors(tmp_path, lambda t: {**t, **extra})
  with pytest.raises(SafetensorsError, match=r"model\.layers\.7\.mlp\.up_proj\.weight"):
    models.from_pretrained(path)


def test_truncated_file_is_an_error(tmp_path):
  path = str(tmp_path / "m")
  make_hf_model("qwen2", path)
  st = os.path.join(path, "model.safetensors")
  data = open(st, "rb").read()
  open(st, "wb").write(data[: len(data) // 2])
  with pytest.raises(SafetensorsError, match="truncated or corrupt"):
    models.from_pretrained(path)


def test_dtype_mismatch_is_an_error(tmp_path):
  path = _model_with_tensors(tmp_path, lambda t: {**t, "model.norm.weight": t["model.norm.weight"].astype(np.int32)})
  with pytest.raises(SafetensorsError, match=r"model\.norm\.weight.*I32.*float"):
    models.from_pretrained(path)
  with pytest.raises(ValueError, match="dtype"):
    models.ModelConfig(model_type="qwen2", vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                       num_heads=1, num_kv_heads=1, head_dim=8, attention_bias=True, dtype="int8")


def test_qwen2_without_biases_is_refused_with_the_mend():
  """A Qwen2 config.json cannot say "no q/k/v biases", so a bias-less qwen2 would export a model that does
  not load; the config names the two ways out. The same decoder as llama round-trips."""
  fields = dict(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=1, num_kv_heads=1,
                head_dim=8)
  with pytest.raises(ValueError, match="attention_bias=True.*model_type='llama'"):
    models.ModelConfig(model_type="qwen2", attention_bias=False, **fields)
  llama = models.ModelConfig(model_type="llama", attention_bias=False, **fields)
  assert models.ModelConfig.from_hf_dict(llama.to_hf_dict()) == llama


def test_shape_mismatch_names_the_tensor(tmp_path):
  path = str(tmp_path / "m")
  make_hf_model("qwen2", path)
  cfg = json.load(open(os.path.join(path, "config.json")))
  cfg["intermediate_size"] = 96
  json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
  with pytest.raises(SafetensorsError, match=r"mlp\.(gate|up|down)_proj\.weight.*shape"):
    models.from_pretrained(path)


@pytest.mark.parametrize("lead", [(), (5,), (3, 4), (2, 3, 4)])
def test_matmul_2d_equals_einsum_and_its_gradients(lead):
  """The flattened matmul of every Linear (kept 2-D so XLA:CPU's weight gradient needs no transposed
  copies) computes the same values and gradients as the einsum over all leading axes."""
  from jaxghpo.models.layers import matmul_2d
  rs = np.random.default_rng(0)
  x = jnp.asarray(rs.standard_normal((*lead, 6)), jnp.float32)
  w = jnp.asarray(rs.standard_normal((6, 7)), jnp.float32)
  dy = jnp.asarray(rs.standard_normal((*lead, 7)), jnp.float32)
  ref = lambda x, w: jnp.sum(jnp.einsum("...i,io->...o", x, w) * dy)
  ours = lambda x, w: jnp.sum(matmul_2d(x, w) * dy)
  assert matmul_2d(x, w).shape == (*lead, 7)
  np.testing.assert_allclose(matmul_2d(x, w), jnp.einsum("...i,io->...o", x, w), rtol=1e-5, atol=1e-5)
  for g_ours, g_ref in zip(jax.grad(ours, argnums=(0, 1))(x, w), jax.grad(ref, argnums=(0, 1))(x, w)):
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-5)
