"""jaxghpo: RL from verifiable rewards in JAX, with solution-trace hints (GHPO) for problems the
model cannot yet solve. Subpackages: models, rollout, rl, curriculum, data, rewards, parallel."""
__version__ = "0.1.0"
