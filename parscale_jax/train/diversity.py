"""How different a P-stream model's streams are: each stream's own loss, the aggregate's, and the
correlation ρ of the streams' per-token residuals, with what the paper's theory predicts from ρ.

The theory (Chen et al. 2025, section 2): if each stream's prediction deviates from the truth by a
residual, with pairwise correlation ρ between streams, aggregating P streams divides the residual
variance by P / (1 + (P − 1)ρ), which the Chinchilla form turns into parameters:
N_eff / N = (P / (1 + (P − 1)ρ))^(1/α). ρ = 1: no gain; ρ = 0: the largest.

Residual used here, per validation token t and stream i: r_i(t) = 1 − p_i(y_t), the probability
stream i leaves off the observed next token (its own final hidden state through the final norm and
the LM head). It is the theory's residual in probability space on the one token that is observed;
it also carries the token's own unpredictability, which is shared by all streams, so this ρ is at
least the theory's and the multiplier predicted from it is conservative. ρ is the mean over stream
pairs of the Pearson correlation over tokens.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from parscale_jax.scaling import diversity_multiplier
from parscale_jax.errors import UserError
from parscale_jax.model.parscale import ParScaleLM


def predicted_multiplier(P: int, rho: float, alpha: float) -> float:
  """(P / (1 + (P − 1)ρ))^(1/α): the parameters P streams with residual correlation ρ are worth."""
  return float(diversity_multiplier(P, rho, alpha))


@functools.partial(jax.jit, static_argnames="graphdef")
def _token_stats(state, rows_BxS1, *, graphdef):
  """(target log-probability of each stream [P, B, S], of the aggregate [B, S])."""
  model = nnx.merge(graphdef, state)
  inputs, targets_BxS = rows_BxS1[:, :-1], rows_BxS1[:, 1:]
  h_PxBxSxD, _ = model.streams(model.embed(inputs),
                               jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape))

  def target_logprob(logits_BxSxV):
    logp = jax.nn.log_softmax(logits_BxSxV, axis=-1)
    return jnp.take_along_axis(logp, targets_BxS[..., None], axis=-1)[..., 0]

  per_stream = jax.vmap(lambda h: target_logprob(model.head(h)))(h_PxBxSxD)
  return per_stream, target_logprob(model.head(model.aggregate(h_PxBxSxD)))


def stream_diversity(model: ParScaleLM, rows: np.ndarray, alpha: float, batch_size: int = 8) -> dict:
  """Stream losses, aggregate loss, ρ and the predicted multiplier over `rows` ([R, S + 1] ids)."""
  P = model.config.P
  if P < 2:
    raise UserError(f"stream diversity needs a model with P > 1 streams, this one has P = {P}")
  graphdef, state = nnx.split(model)
  stream_lp, agg_lp = [], []
  for start in range(0, len(rows), batch_size):
    s, a = _token_stats(state, jnp.asarray(rows[start:start + batch_size]), graphdef=graphdef)
    stream_lp.append(np.asarray(s).reshape(P, -1))
    agg_lp.append(np.asarray(a).reshape(-1))
  logp_PxT, agg_T = np.concatenate(stream_lp, axis=1), np.concatenate(agg_lp)
  residual_PxT = 1.0 - np.exp(logp_PxT)
  corr = np.corrcoef(residual_PxT)
  pairs = [corr[i, j] for i, j in itertools.combinations(range(P), 2)]
  rho = float(np.clip(np.mean(pairs), -1.0, 1.0))
  return {"P": P, "tokens": int(agg_T.size), "rho": rho,
          "rho_pairs": [float(c) for c in pairs],
          "stream_losses": [float(-lp.mean()) for lp in logp_PxT],
          "aggregate_loss": float(-agg_T.mean()),
          "alpha": alpha, "predicted_multiplier": predicted_multiplier(P, rho, alpha)}
