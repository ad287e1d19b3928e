"""The RL core: group-relative advantages, the masked policy loss and the sharded functional train step.

    from jaxghpo import rl
    cfg = rl.default_config()                                   # config.rl: every loss/step/optimizer key
    adv = rl.group_advantages(rewards_PxG, estimator="grpo")    # float32 [P, G]; "drgrpo", "rloo", ...
    # Names from the config are looked up in registries (an unknown name lists the known ones):
    # ESTIMATORS (rl.advantage_estimator), KL_ESTIMATORS (rl.kl_estimator), LOSS_AGG_MODES (rl.loss_agg);
    # a new entry is one decorated function: @rl.ESTIMATORS.register("name"), @rl.register_loss_agg("name").
    loss, metrics = rl.policy_loss(logp, old_logp, adv_B, mask, cfg, ref_logp=None)
    batch = rl.make_batch(prompts, prompt_valid, responses, response_valid, adv_B, old_logp_BxN)
    step = rl.make_train_step(graphdef, cfg, mesh, rl.make_optimizer(cfg, total_steps), param_shardings)
    params, opt_state, metrics = step(params, opt_state, batch, rng)
"""
from jaxghpo.rl.advantages import ESTIMATORS, group_advantages, register_estimator
from jaxghpo.rl.batch import HINT, PAD, PROMPT, RESPONSE, RLBatch, guide_batch, make_batch
from jaxghpo.rl.config import default_config, resolve_config, validate_config
from jaxghpo.rl.losses import (
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    LossAgg,
    finalize,
    kl_penalty,
    loss_agg,
    loss_counts,
    merge_terms,
    policy_loss,
    policy_loss_terms,
    register_loss_agg,
    token_entropy,
    token_logprobs,
    weighted_loss,
)
from jaxghpo.rl.train_step import (
    TrainStep,
    batch_logprobs,
    init_opt_state,
    loss_and_grads,
    make_grad_fn,
    make_logprob_fn,
    make_lr_schedule,
    make_optimizer,
    make_train_step,
    optimizer_shardings,
    sequence_logprobs,
    train_step,
)

__all__ = [
    "ESTIMATORS", "HINT", "KL_ESTIMATORS", "LOSS_AGG_MODES", "LossAgg", "PAD", "PROMPT", "RESPONSE",
    "RLBatch", "TrainStep", "batch_logprobs", "default_config", "finalize", "group_advantages", "guide_batch",
    "init_opt_state", "kl_penalty", "loss_agg", "loss_and_grads", "loss_counts", "make_batch", "make_grad_fn",
    "make_logprob_fn", "make_lr_schedule", "make_optimizer", "make_train_step", "merge_terms",
    "optimizer_shardings", "policy_loss", "policy_loss_terms", "register_estimator", "register_loss_agg",
    "resolve_config", "sequence_logprobs", "token_entropy", "token_logprobs", "train_step", "validate_config",
    "weighted_loss",
]
