"""The training loss of every scene kind: the negative ELBO plus the surrogate whose gradient is the
REINFORCE / NVIL term for the discrete latents, and the baseline's regression loss.

See air_jax.objectives for the estimator's math. The discrete decisions of step i are z_pres_i and,
when the step is present, the scene kind's discrete object latents d_i (3D: the shape identity):
    log q(discrete_i) = log Bern(z_pres_i; q_i) + z_i log q(d_i),
scored with the same per-step advantage a_i (the signal of step i's decisions is the same l_i).
A scene kind may instead sum over d_i's values (scene.enumerated_discrete: 3D with
objective.discrete_gradient 'enumerate', the ELBO's expectation exactly, objectives.enumerated_surrogate,
or 'wake', the inclusive KL to d_i's exact conditional posterior, objectives.wake_surrogate);
z_pres is scored as ever.
"""
import jax
import jax.numpy as jnp

from air_jax import objectives


def elbo_terms_for(models, out, images, prior) -> objectives.ELBOTerms:
  """objectives.elbo_terms with the config's likelihood scale and the scene kind's object KLs."""
  objective = models.config.objective
  return objectives.elbo_terms(out, images, likelihood_scale=objective.likelihood_scale,
                               z_pres_prior=prior, object_kls=models.scene.object_kls(out),
                               likelihood_blur=objective.likelihood_blur)


def make_loss_fn(models):
  """loss_fn(params, stats, images [B, H, W] in [0, 1], key, prior, learn_z_pres=True,
  learn_discrete=True) -> (loss, aux).

  loss = mean over images of (surrogate - ELBO) + baseline regression loss: its gradient is the
  ELBO gradient estimate for the model and the baseline's squared-error gradient for the baseline.
  learn_z_pres False (the train step's first objective.z_pres_freeze_steps steps): q(z_pres) gets
  no gradient, neither the score term nor its KL's, so it keeps its initial (high) probability
  while the object latents learn; the loss's value is the same. learn_discrete False (the first
  objective.discrete_freeze_steps steps): the same for q of the scene kind's discrete object
  latents (3D: the identity keeps its initial, near-uniform q while each shape's rotation learns)."""
  config, scene, core, baseline_net = models.config, models.scene, models.core, models.baseline

  def loss_fn(params, stats, images, key, prior, learn_z_pres=True, learn_discrete=True):
    out = core.apply({'params': params['model']}, images, rngs={'sample': key})
    hold = lambda learn, x, held: jax.tree.map(lambda a, b: jnp.where(learn, a, b), x, held)
    out = out._replace(z_pres_logits=hold(learn_z_pres, out.z_pres_logits, jax.lax.stop_gradient(out.z_pres_logits)),
                       objects=hold(learn_discrete, out.objects, scene.hold_discrete(out.objects)))
    terms = elbo_terms_for(models, out, images, prior)
    updated = stats.update(terms.learning_signal, out.active, config.objective.signal_decay)
    # Centre and scale with the statistics of earlier batches (this batch's only at the start).
    stats_for_signal = jax.tree.map(lambda old, new: jnp.where(stats.weight > 0, old, new), stats, updated)
    target, scale = objectives.normalised_signal(terms.learning_signal, stats_for_signal)
    baseline = baseline_net.apply({'params': params['baseline']}, out.image_features, out.hidden)
    advantage = scale * (target - baseline)  # in nats, like the pathwise terms
    discrete_log_prob = (objectives.bernoulli_log_prob(out.z_pres, out.z_pres_logits)
                         + out.z_pres * scene.discrete_log_prob(out))
    surrogate = objectives.reinforce_surrogate(discrete_log_prob, advantage, out.active)
    enumerated = scene.enumerated_discrete(out, learn_discrete)
    if enumerated is not None:  # discrete object latents summed over their values, not scored
      alternatives = objectives.log_likelihood(images, enumerated.canvases, config.objective.likelihood_scale,
                                               config.objective.likelihood_blur)
      if enumerated.inclusive:
        surrogate += objectives.wake_surrogate(enumerated.logits, alternatives + enumerated.log_ratio, out.z_pres)
      else:
        surrogate += objectives.enumerated_surrogate(jax.nn.softmax(enumerated.logits), alternatives, out.z_pres)
    baseline_loss = (out.active * jnp.square(target - baseline)).sum(-1).mean()
    loss = (surrogate - terms.elbo).mean() + baseline_loss
    aux = dict(out=out, terms=terms, stats=updated, baseline_loss=baseline_loss,
               advantage=advantage)
    return loss, aux

  return loss_fn
