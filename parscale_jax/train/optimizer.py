"""optax AdamW with warmup + cosine or warmup-stable-decay, clipping and a weight-decay mask."""
from __future__ import annotations

import jax
import optax
from flax import nnx

from parscale_jax.model.prefix import PrefixParam
from parscale_jax.train.config import OptimConfig


def warmup_steps(config: OptimConfig, steps: int) -> int:
  return config.warmup_steps or int(round(config.warmup_fraction * steps))


def decay_start(config: OptimConfig, steps: int) -> int:
  """wsd: the step from which the learning rate decays; before it, the schedule does not depend on
  `steps` (a token ladder's cooldown branches start from one stable run there)."""
  warmup = max(warmup_steps(config, steps), 1)
  decay = max(int(round(config.decay_fraction * steps)), 1)
  return warmup + max(steps - warmup - decay, 0)


def lr_schedule(config: OptimConfig, steps: int) -> optax.Schedule:
  warmup = warmup_steps(config, steps)
  final = config.lr * config.min_lr_ratio
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(steps, warmup + 1), final)
  if config.schedule == "constant":
    return optax.warmup_constant_schedule(0.0, config.lr, max(warmup, 1))
  start = decay_start(config, steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.lr, max(warmup, 1)),
       optax.constant_schedule(config.lr),
       optax.linear_schedule(config.lr, final, max(steps - start, 1))],
      boundaries=[max(warmup, 1), start])


def _names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def _by_variable(params, choose):
  """A mask over params (a state of nnx Variables): choose(variable, path names) per variable,
  held in a Variable of the same kind so the mask has the params' structure."""
  return jax.tree_util.tree_map_with_path(
      lambda path, v: v.replace(bool(choose(v, _names(path)))), params,
      is_leaf=lambda x: isinstance(x, nnx.Variable))


def prefix_mask(params):
  """The prefix forms' parameters (their type, PrefixParam): what prefix_lr_scale scales."""
  return _by_variable(params, lambda v, names: isinstance(v, PrefixParam))


def decay_mask(params):
  """Decay matrices only: not biases, norm scales, the prefix (a learned input, like an
  embedding) or the embedding table."""
  def keep(v, names):
    if isinstance(v, PrefixParam) or "embedding" in names:
      return False
    # Scanned layers (no layer index after "layers") carry a leading layer axis.
    scanned = "layers" in names and not names[names.index("layers") + 1].isdigit()
    return v.get_value().ndim - scanned >= 2
  return _by_variable(params, keep)


def make_optimizer(config: OptimConfig, steps: int) -> optax.GradientTransformation:
  adamw = optax.adamw(lr_schedule(config, steps), b1=config.b1, b2=config.b2, eps=config.eps,
                      weight_decay=config.weight_decay, mask=decay_mask)
  chain = [adamw]
  if config.clip_norm > 0:
    chain.insert(0, optax.clip_by_global_norm(config.clip_norm))
  if config.prefix_lr_scale != 1.0:  # Only then: it adds a state slot to the checkpoint.
    chain.append(optax.masked(optax.scale(config.prefix_lr_scale), prefix_mask))
  return chain[0] if len(chain) == 1 else optax.chain(*chain)
