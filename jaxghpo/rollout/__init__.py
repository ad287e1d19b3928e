"""Rollout engine: a jitted KV-cache sampler (prefill + while_loop decode) with logprobs and decode-time controls."""
from jaxghpo.rollout.filters import (choose_tokens, deepconf_confidence, filter_top_k_top_p, log_probs,
                                      sample_categorical)
from jaxghpo.rollout.penalties import ThoughtSwitchPenalty
from jaxghpo.rollout.sampler import SampleOutput, Sampler, generate, prompt_bucket, sampler_for
