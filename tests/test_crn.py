"""Common random numbers: a row's samples depend on its own key (seed, step, problem, round, occurrence),
not on its position in a sampler call or on how many calls came before, so two arms of one seed draw the
same first-round samples, also after a retry in one of them."""
import jax
import numpy as np
import pytest

from jaxghpo import models
from jaxghpo.rollout import crn
from jaxghpo.rollout.sampler import Sampler

from train_fixtures import make_tiny_policy, tiny_config

MODEL_CFG = models.ModelConfig(model_type="qwen2", vocab_size=32, hidden_size=32, intermediate_size=64,
                               num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True,
                               tie_word_embeddings=True)


def test_problem_keys_depend_on_what_the_row_is_not_where_it_sits():
  base = jax.random.key(3)
  ids = np.array([11, 2**40 + 5, 11, 7])
  keys = crn.problem_keys(base, 4, ids, 0)
  assert crn.occurrences(ids).tolist() == [0, 0, 1, 0]
  # The same problem later in another call of other width: the same key.
  again = crn.problem_keys(base, 4, np.array([7, 2**40 + 5]), 0, np.array([0, 0]))
  np.testing.assert_array_equal(again[0], keys[3])
  np.testing.assert_array_equal(again[1], keys[1])
  # A repeated id (its second occurrence), another round, another step, the high half of a 64-bit id:
  # all other keys.
  distinct = [keys[0], keys[2], crn.problem_keys(base, 4, ids[:1], 1)[0], crn.problem_keys(base, 5, ids[:1], 0)[0],
              crn.problem_keys(base, 4, np.array([5]), 0)[0], keys[1]]
  assert len({tuple(k.tolist()) for k in distinct}) == len(distinct)


def test_sampler_row_keys_make_a_rows_draws_independent_of_its_position_and_call_width():
  model = models.init_model(MODEL_CFG, seed=0)
  prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
  keys = crn.problem_keys(jax.random.key(0), 0, np.array([10, 20, 30]), 0)
  wide = Sampler(model, batch_size=3, max_prompt_len=6, max_new_tokens=6, num_samples=2)
  narrow = Sampler(model, batch_size=1, max_prompt_len=6, max_new_tokens=6, num_samples=2)
  out = wide(model, prompts, rng=jax.random.key(1), temperature=1.0, row_keys=keys)
  shuffled = wide(model, prompts[::-1], rng=jax.random.key(2), temperature=1.0, row_keys=keys[::-1])
  alone = narrow(model, prompts[2:], rng=jax.random.key(3), temperature=1.0, row_keys=keys[2:])
  tokens = np.asarray(out.tokens).reshape(3, 2, 6)
  np.testing.assert_array_equal(np.asarray(shuffled.tokens).reshape(3, 2, 6)[::-1], tokens)
  np.testing.assert_array_equal(np.asarray(alone.tokens).reshape(1, 2, 6)[0], tokens[2])
  # The two samples of a prompt differ (fold_in of the sample index), and other keys draw other tokens.
  assert not np.array_equal(tokens[:, 0], tokens[:, 1])
  other = wide(model, prompts, rng=jax.random.key(1), temperature=1.0,
               row_keys=crn.problem_keys(jax.random.key(9), 0, np.array([10, 20, 30]), 0))
  assert not np.array_equal(np.asarray(other.tokens), np.asarray(out.tokens))
  with pytest.raises(ValueError, match="row_keys"):
    wide(model, prompts, rng=jax.random.key(1), temperature=1.0, row_keys=keys[:2])


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("crn_policy")))


def _first_round_tokens(config, workdir, steps=2):
  """{step: [tokens of each sampler call]} and the calls' ratios, for `steps` RL steps of a Trainer."""
  from jaxghpo import train
  trainer = train.Trainer(config, workdir)
  calls = {}
  rollout = trainer.setup.rollout

  def recording(params, examples, ratios, rng, **kw):
    groups = rollout(params, examples, ratios, rng, **kw)
    calls.setdefault(current[0], []).append((np.asarray(ratios).copy(), groups.tokens.copy()))
    return groups

  trainer.setup.rollout = recording
  current = [0]
  for step in range(steps):
    current[0] = step
    trainer.rl_step(step, jax.random.fold_in(trainer.rng, step))
  return calls


def test_two_arms_of_one_seed_draw_the_same_first_round_samples_also_after_a_retry(policy_dir, tmp_path):
  # A random policy fails every level-3 group, so GHPO retries at step 0 and GRPO does not. With learning
  # rate 0 both arms keep the same params, so their first-round samples at step 1 must agree too: the
  # retry's draws took nothing from the next step's.
  arms = {}
  for mode in ("none", "ghpo"):
    c = tiny_config(policy_dir, **{"curriculum.mode": mode, "rl.learning_rate": 0.0})
    c.data.task_configs.chains.train_levels = {"3": 1.0}
    arms[mode] = _first_round_tokens(c, str(tmp_path / mode))
  grpo, ghpo = arms["none"], arms["ghpo"]
  assert len(grpo[0]) == 1 and len(ghpo[0]) > 1, "GHPO should have retried at step 0 (a random policy fails)"
  assert float(ghpo[0][1][0].min()) > 0  # the retry round was hinted
  for step in (0, 1):
    np.testing.assert_array_equal(ghpo[step][0][1], grpo[step][0][1], err_msg=f"first round of step {step}")
  assert not np.array_equal(grpo[0][0][1], grpo[1][0][1])  # and steps draw differently
