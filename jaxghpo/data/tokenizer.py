"""Tokenizers: a procedural task's character tokenizer, and one loader for every HF tokenizer dir.

A procedural task (jaxghpo/data/tasks/) ships its own tokenizer (its module's ALPHABET, saved in HF format
under jaxghpo/assets/<its TOKENIZER_DIR>/), so the task tokenizer and a real model's tokenizer load through
the same call: `load(path)` -> `transformers.AutoTokenizer.from_pretrained(path)`.

Vocabulary of the shipped task's tokenizer (ids are fixed; the shipped base policy depends on them):
  0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 "|" (the hint marker of the in-prompt placement, see
  templates.py), 5..30 "a".."z", 31..40 "0".."9", 41 "+", 42 "-", 43 "=", 44 ";".
Every character is one token; decoding concatenates tokens without spaces. No token is added
automatically on encode (no BOS): templates.py writes "<bos>" into the prompt text itself.

Rebuild the shipped files (only needed if this file changes):  python -m jaxghpo.data.tokenizer
"""
from __future__ import annotations

import json
import os
import pathlib

import tokenizers
from tokenizers import decoders, models, pre_tokenizers
import transformers

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK)  # ids 0..3, in this order
HINT_MARKER = "|"
_MODEL_MAX_LENGTH = 4096


def build_char_tokenizer(alphabet: str, *, chat_template: str | None = None
                         ) -> transformers.PreTrainedTokenizerFast:
  """A character-level HF tokenizer: specials <pad>=0, <eos>=1, <bos>=2, <unk>=3, then `alphabet`.

  Each character of `alphabet` becomes one token, in order (ids 4, 5, ...). A character outside the
  alphabet encodes as <unk>. `chat_template` (a jinja string) is stored with the tokenizer if given,
  so tests can build a small tokenizer that has one.
  """
  if len(set(alphabet)) != len(alphabet):
    raise ValueError(f"alphabet {alphabet!r} repeats a character; give each character once.")
  vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + list(alphabet))}
  backend = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
  # Oniguruma's (?m) is "dot matches newline": every character, newline included, is its own piece.
  backend.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(r"(?m)."), behavior="isolated")
  backend.decoder = decoders.Fuse()  # concatenate: no spaces between characters
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK,
      clean_up_tokenization_spaces=False, model_max_length=_MODEL_MAX_LENGTH)
  if chat_template is not None:
    tok.chat_template = chat_template
  return tok


def _task_module(task: str):
  from jaxghpo.data import tasks  # noqa: PLC0415  (the task modules name their alphabet and assets dir)
  return tasks.get_task(task)


def task_names() -> tuple[str, ...]:
  from jaxghpo.data import tasks  # noqa: PLC0415
  return tuple(tasks.GENERATORS)


def build_task_tokenizer(task: str | None = None) -> transformers.PreTrainedTokenizerFast:
  """A procedural task's tokenizer (the shipped task's: 45 tokens), built from scratch."""
  return build_char_tokenizer(HINT_MARKER + _task_module(task or task_names()[0]).ALPHABET)


def assets_dir() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parent.parent / "assets"


def task_tokenizer_path(task: str | None = None) -> str:
  """The packaged HF tokenizer dir of a procedural task (default: the shipped one)."""
  task = task or task_names()[0]
  if task not in task_names():
    raise KeyError(f"no packaged tokenizer for task {task!r}; known: {sorted(task_names())}.")
  return str(assets_dir() / _task_module(task).TOKENIZER_DIR)


def save_task_tokenizer(out_dir: str | os.PathLike | None = None, task: str | None = None) -> str:
  """Builds a procedural task's tokenizer and writes it in HF format (default: the packaged assets dir)."""
  out_dir = str(out_dir) if out_dir is not None else task_tokenizer_path(task)
  tok = build_task_tokenizer(task)
  tok.save_pretrained(out_dir)
  # transformers 5 writes its own class name "TokenizersBackend", which transformers 4 (and tools
  # pinned to it, e.g. vLLM) cannot resolve; "PreTrainedTokenizerFast" loads in both.
  config_path = pathlib.Path(out_dir) / "tokenizer_config.json"
  config = json.loads(config_path.read_text(encoding="utf-8"))
  config["tokenizer_class"] = "PreTrainedTokenizerFast"
  config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
  return out_dir


def load(path_or_name: str | os.PathLike) -> transformers.PreTrainedTokenizerBase:
  """Loads a tokenizer through AutoTokenizer: a procedural task's name or an HF tokenizer dir.

  Anything that is not a task name goes to `AutoTokenizer.from_pretrained` unchanged (a local dir,
  or a hub id where the machine can reach the hub).
  """
  path = str(path_or_name)
  if path in task_names():
    path = task_tokenizer_path(path)
  return transformers.AutoTokenizer.from_pretrained(path)


if __name__ == "__main__":
  print(save_task_tokenizer())
