"""The chains tokenizer: fixed ids, exact round trips, the packaged files equal a fresh build."""
import json
import string

import pytest

from jaxghpo.data import tokenizer
from jaxghpo.data.tasks import chains


@pytest.fixture(scope="module")
def tok():
  return tokenizer.load("chains")


def test_fixed_ids(tok):
  assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  assert len(tok) == 45
  vocab = tok.get_vocab()
  assert vocab["|"] == 4 and vocab["a"] == 5 and vocab["z"] == 30
  assert vocab["0"] == 31 and vocab["9"] == 40
  assert [vocab[c] for c in "+-=;"] == [41, 42, 43, 44]


def test_round_trip_is_exact_one_token_per_char_no_bos(tok):
  ids = tok.encode("k+3-5+2=")
  assert ids == [15, 41, 34, 42, 36, 41, 33, 43]  # no BOS added, no spaces
  assert tok.decode(ids) == "k+3-5+2="
  for ex in chains.generate("ood", 20, seed=3):
    for text in (ex.problem, ex.solution, ex.problem + ex.solution + "|"):
      ids = tok.encode(text)
      assert len(ids) == len(text)
      assert tok.decode(ids) == text
      assert tok.unk_token_id not in ids


def test_specials_encode_as_one_token_and_can_be_skipped(tok):
  ids = tok.encode("<bos>a+1=b<eos><pad>")
  assert ids == [2, 5, 41, 32, 43, 6, 1, 0]
  assert tok.decode(ids) == "<bos>a+1=b<eos><pad>"
  assert tok.decode(ids, skip_special_tokens=True) == "a+1=b"


def test_unknown_character_is_unk(tok):
  assert tok.encode("A b") == [3, 3, 6]


def test_packaged_files_equal_a_fresh_build(tmp_path):
  tokenizer.save_task_tokenizer(tmp_path)
  packaged = tokenizer.task_tokenizer_path()
  for name in ("tokenizer.json", "tokenizer_config.json"):
    fresh = json.loads((tmp_path / name).read_text())
    shipped = json.loads(open(f"{packaged}/{name}").read())
    assert fresh == shipped, f"{name} differs: rerun python -m jaxghpo.data.tokenizer"
  assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == \
      "PreTrainedTokenizerFast"


def test_load_by_name_and_by_path_agree(tok):
  by_path = tokenizer.load(tokenizer.task_tokenizer_path())
  assert by_path.encode("q-9+1=") == tok.encode("q-9+1=")
  with pytest.raises(KeyError, match="chains"):
    tokenizer.task_tokenizer_path("nope")


def test_char_tokenizer_with_any_alphabet_round_trips_spaces_and_newlines():
  alphabet = "".join(c for c in string.printable if c not in "\x0b\x0c")
  tok = tokenizer.build_char_tokenizer(alphabet, chat_template="{{ messages }}")
  text = "Let $x = \\frac{1}{2}$.\nSo  x=0.5 "
  ids = tok.encode(text)
  assert len(ids) == len(text) and tok.decode(ids) == text
  assert tok.chat_template == "{{ messages }}"
  with pytest.raises(ValueError, match="repeats"):
    tokenizer.build_char_tokenizer("abca")
