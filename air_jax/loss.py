"""The training loss of every scene kind, by config.objective.z_pres_estimator:
- 'nvil': the negative ELBO plus the surrogate whose gradient is the REINFORCE / NVIL term for the
  discrete latents, and the baseline's regression loss;
- 'concrete': the negative ELBO of a relaxed draw of z_pres (cores.Relaxation,
  objectives.relaxed_bernoulli): pathwise gradients only, at a temperature annealed by the train step
  (the KLs stay the analytic Bernoulli ones, weighted by the relaxed active and z_pres; its training
  metrics are of relaxed draws);
- 'vimco': the negative K-draw bound L_K (air_jax.bounds) with VIMCO's score term for z_pres
  (objectives.vimco_surrogate), K = objective.vimco_samples.
The scene kind and the core are the same for all three; 'concrete' and 'vimco' need a kind whose
object latents are all reparameterised (SceneKind.relaxable).

NVIL: see air_jax.objectives for the estimator's math. The discrete decisions of step i are z_pres_i and,
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

from air_jax import bounds
from air_jax import cores
from air_jax import objectives


def elbo_terms_for(models, out, images, prior) -> objectives.ELBOTerms:
  """objectives.elbo_terms with the config's likelihood scale and the scene kind's object KLs."""
  objective = models.config.objective
  return objectives.elbo_terms(out, images, likelihood_scale=objective.likelihood_scale,
                               z_pres_prior=prior, object_kls=models.scene.object_kls(out),
                               likelihood_blur=objective.likelihood_blur,
                               sequential=models.core.sequential)


def hold(learn, x, held):
  """x where learn, else held (the same values behind a stop-gradient): a traced switch."""
  return jax.tree.map(lambda a, b: jnp.where(learn, a, b), x, held)


def held_output(scene, out, learn_z_pres, learn_discrete):
  """out with q(z_pres) and q(discrete object latents) held where their learning is off."""
  return out._replace(z_pres_logits=hold(learn_z_pres, out.z_pres_logits, jax.lax.stop_gradient(out.z_pres_logits)),
                      objects=hold(learn_discrete, out.objects, scene.hold_discrete(out.objects)))


def make_loss_fn(models):
  """loss_fn(params, stats, images [B, H, W] in [0, 1], key, prior, learn_z_pres=True,
  learn_discrete=True, temperature=objective.concrete_temperature) -> (loss, aux), aux: out (a
  draw), terms (its ELBO terms), stats, baseline_loss, advantage.

  The loss's gradient is the chosen estimator's of -ELBO (-L_K for 'vimco') for the model, and
  for 'nvil' also the baseline's squared-error gradient. learn_z_pres False (the train step's
  first objective.z_pres_freeze_steps steps): q(z_pres) gets no gradient, neither a score term nor
  its KL's, so it keeps its initial (high) probability while the object latents learn; the loss's
  value is the same. learn_discrete False (the first objective.discrete_freeze_steps steps): the
  same for q of the scene kind's discrete object latents (3D: the identity keeps its initial,
  near-uniform q while each shape's rotation learns). temperature: the Concrete draw's ('concrete')."""
  estimator = models.config.objective.z_pres_estimator  # one of ESTIMATORS (checked by models.build)
  return {'nvil': nvil_loss_fn, 'concrete': concrete_loss_fn, 'vimco': vimco_loss_fn}[estimator](models)


def nvil_loss_fn(models):
  config, scene, core, baseline_net = models.config, models.scene, models.core, models.baseline

  def loss_fn(params, stats, images, key, prior, learn_z_pres=True, learn_discrete=True, temperature=None):
    del temperature  # the draws are hard
    out = held_output(scene, core.apply({'params': params['model']}, images, rngs={'sample': key}),
                      learn_z_pres, learn_discrete)
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


def no_baseline(stats, out):
  """aux entries of the estimators without NVIL's baseline: stats unchanged, zero loss and advantage."""
  return dict(stats=stats, baseline_loss=jnp.zeros(()), advantage=jnp.zeros_like(out.z_pres))


def concrete_loss_fn(models):
  config, scene, core = models.config, models.scene, models.core
  objective = config.objective

  def loss_fn(params, stats, images, key, prior, learn_z_pres=True, learn_discrete=True, temperature=None):
    temperature = objective.concrete_temperature if temperature is None else temperature
    relaxation = cores.Relaxation(jnp.asarray(temperature, jnp.float32), jnp.asarray(learn_z_pres),
                                  objective.concrete_straight_through)
    out = core.apply({'params': params['model']}, images, relaxation=relaxation, rngs={'sample': key})
    out = held_output(scene, out, learn_z_pres, learn_discrete)
    terms = elbo_terms_for(models, out, images, prior)
    return -terms.elbo.mean(), dict(out=out, terms=terms, **no_baseline(stats, out))

  return loss_fn


def vimco_loss_fn(models):
  config, scene, core = models.config, models.scene, models.core
  draws = config.objective.vimco_samples

  def loss_fn(params, stats, images, key, prior, learn_z_pres=True, learn_discrete=True, temperature=None):
    del temperature  # the draws are hard

    def one(k):
      out = held_output(scene, core.apply({'params': params['model']}, images, rngs={'sample': k}),
                        learn_z_pres, learn_discrete)
      discrete_log_q = (out.active * objectives.bernoulli_log_prob(out.z_pres, out.z_pres_logits)).sum(-1)
      return out, bounds.log_weight_of(models, out, images, prior), discrete_log_q

    outs, log_w, discrete_log_q = jax.vmap(one)(jax.random.split(key, draws))  # [K, B, ...]
    out = jax.tree.map(lambda x: x[0], outs)
    terms = elbo_terms_for(models, jax.lax.stop_gradient(out), images, prior)  # of the first draw, reported
    loss = objectives.vimco_surrogate(log_w, discrete_log_q).mean()
    return loss, dict(out=out, terms=terms, **no_baseline(stats, out))

  return loss_fn
