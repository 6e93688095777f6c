"""AIR on Multi-MNIST (50x50, 0-2 digits), the default run. `get_config('smoke')` shrinks it for tests.

    python experiments/train.py --workdir=/tmp/air
    python experiments/train.py --config=air_jax/configs/multi_mnist.py:smoke --workdir=/tmp/smoke
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.scene_kind = 'multi_mnist'  # what a scene is (air_jax.scenes); 3D: configs/shapes_3d.py
  config.seed = 0  # root PRNG key of the run; per step key = fold_in(root, step)

  config.data = ml_collections.ConfigDict(dict(
      data_dir='',            # MNIST cache folder; '' = $AIR_JAX_DATA_DIR or ~/.cache/air_jax
      canvas_size=50,
      digit_size=28,          # MNIST digits resized to this side (px) before composing; 21: Pyro's ~1.3x shrink
      train_counts=(0, 1, 2),
      eval_counts=(0, 1, 2),
      num_train=60_000,       # scenes composed from MNIST train digits
      num_eval=5_000,         # held-out scenes composed from MNIST test digits
      # The last this many MNIST train digits are never in a training scene: eval_split
      # 'validation' evaluates on scenes of them (choose settings there), 'test' on test digits.
      validation_digits=10_000,
      eval_split='test',
      train_seed=1,
      eval_seed=2,
  ))

  config.model = ml_collections.ConfigDict(dict(
      inference='recurrent',  # the inference core (air_jax.models.CORES): AIR/DAIR, one object per step,
                              # or 'parallel': a grid of cells, each an object or none (air_jax.cores.parallel)
      max_steps=3,            # one more than the most objects, so the model can say "stop" ('parallel': grid_size^2)
      grid_size=4,            # 'parallel': cells per side
      cell_hidden=256,        # 'parallel': size of each cell's state
      # 'parallel': cells decide in turn, each reading what the earlier ones left ('raster', as
      # SPAIR with DAIR's residual: 99.1% on validation at step 3,000 of the default task) or at
      # once ('parallel', as SPACE: neighbours split digits, <52%; docs/results/crowded.md).
      cell_order='raster',
      # inference='parallel' only: each cell reads and draws in a square crop of this many cells' side around it
      # (its window clipped there), so a cell's cost grows with the crop, not the canvas; 0: the
      # whole canvas. At least 4 (the 'raster' residual's 3 x 3 cells and its resize's reach).
      cell_reach=0,
      difference_input=False,  # True: DAIR (the LSTM sees image - canvas so far)
      memoryless=False,       # DAIR only: step i sees x - canvas_<i and nothing else (no LSTM memory)
      # The image encoder phi (air_jax.cores.recurrent): () = the pixels, linearly projected into the LSTM
      # gates (the paper's); (32, 64, ...) = 3x3 stride-2 convolutions of these widths first.
      image_conv_features=(),
      lstm_size=256,
      predictor_hidden=200,
      encoder_hidden=200,
      decoder_hidden=200,
      baseline_hidden=200,
      # An object's appearance code: small enough that the decoder cannot draw two close digits as
      # one object, large enough that it need not split one digit in two (chosen on the validation
      # split among 10, 15, 20 and 50: docs/results/multi_mnist.md).
      z_what_size=20,
      glimpse_size=28,
      patch_size=28,
      decoder_bias=-2.0,      # new objects start almost blank
      composition='sum',      # canvas = sum of the objects, or 'union': 1 - prod(1 - object)
      matmul_dtype='float32',  # or 'bfloat16': mixed precision, see modules.matmul
      z_pres_logit_bias=0.0,  # initial q(z_pres) = 0.5
      # logit = bound * tanh(logit / bound): q(z_pres) within [0.018, 0.982], so an object that
      # should go keeps being sampled off and its gradients never vanish (the k+1 trap).
      z_pres_logit_bound=4.0,
  ))

  config.objective = ml_collections.ConfigDict(dict(
      likelihood_scale=0.3,
      likelihood_blur=0.0,     # > 0: the likelihood of the image blurred by a Gaussian of this sd (px)
      # Bernoulli success probability per step (a geometric count prior), annealed log-linearly
      # from z_pres_prior_start to z_pres_prior over z_pres_prior_anneal_steps (0: fixed). An
      # object costs -log p nats: 18.4 at the start (1e-8), 16.1 at the end (1e-7): dear enough that
      # a duplicate of a digit does not pay its way while the decoder is poor, cheap enough that two
      # digits are not drawn by one window.
      z_pres_prior=1e-7,
      z_pres_prior_start=1e-8,
      z_pres_prior_anneal_steps=10_000,
      # z_where = (s, x, y): window side 0.1 + 0.9 sigmoid(s) of the canvas, centre (x, y).
      # s ~ N(0.7, 0.2): windows of ~0.70 +- 0.04 of the canvas (35 px), digit-sized with slack
      # (0.55 = 27 px left too little room and digits were split between two windows).
      # x, y ~ N(0, 0.5): digits' centres lie within +-0.45; with sd 1 an object could park off the
      # canvas (no reconstruction gradient there) and stay on forever.
      z_where_prior_loc=(0.7, 0.0, 0.0),
      z_where_prior_scale=(0.2, 0.5, 0.5),
      # > 0: each present object pays this many nats per unit of its decoded patch's intensity
      # within boundary_width patch pixels of the patch's edge (SPACE's boundary loss; the
      # parallel core's cells would otherwise split a digit between neighbours).
      boundary_penalty=0.0,
      boundary_width=2,
      signal_decay=0.99,       # EMA decay of the learning signal's running moments
      # q(z_pres) gets no gradient for this many first steps (its logit starts at
      # model.z_pres_logit_bias): the object latents learn before objects can be switched off.
      z_pres_freeze_steps=0,
      # The same for q of the scene kind's discrete object latents (3D: the shape identity).
      discrete_freeze_steps=0,
      # The gradient estimator of z_pres (air_jax.loss): 'nvil' (REINFORCE with NVIL's baseline,
      # centring, scaling and per-step credit), 'concrete' (a relaxed z_pres, pathwise gradients) or
      # 'vimco' (the vimco_samples-draw bound with VIMCO's leave-one-out baselines).
      z_pres_estimator='nvil',
      # 'concrete': the temperature falls log-linearly from concrete_temperature_start to
      # concrete_temperature over concrete_anneal_steps; straight-through: hard z_pres forward.
      concrete_temperature_start=1.0,
      concrete_temperature=0.3,
      concrete_anneal_steps=10_000,
      concrete_straight_through=False,
      vimco_samples=5,
  ))

  config.batch_size = 64            # global batch (split over all devices)
  config.per_device_batch_size = 0  # > 0: global batch = this x number of devices instead
  config.learning_rate = 1e-3
  # The model's learning rate at the last step as a fraction of learning_rate, reached by a cosine
  # over num_train_steps: lr(t) = learning_rate (f + (1 - f) (1 + cos(pi t / T)) / 2); 1 = constant.
  config.learning_rate_decay_to = 1.0
  config.baseline_learning_rate = 1e-3
  config.grad_clip_norm = 10.0
  # > 0: keep theta_ema <- d theta_ema + (1 - d) theta and evaluate (and checkpoint-restore for
  # inference) with it; 0: evaluate the latest parameters (their count swings from one evaluation
  # to the next).
  config.ema_decay = 0.999
  config.num_train_steps = 10_000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 1_000
  config.eval_batch_size = 500
  # > 0: each evaluation also reports the importance-weighted bound L_K on log p(x) with K this
  # many draws per image (air_jax.bounds; K forward passes per image, 50 at a time); 0: the ELBO only.
  config.eval_importance_samples = 0
  config.max_checkpoints = 2
  config.max_nonfinite_in_a_row = 10  # skipped (non-finite) steps in a row that stop the run

  if arg == 'smoke':
    config.data.num_train = 64
    config.data.num_eval = 16
    config.data.validation_digits = 10
    config.model.lstm_size = 16
    config.model.predictor_hidden = config.model.encoder_hidden = 16
    config.model.decoder_hidden = config.model.baseline_hidden = 16
    config.model.z_what_size = 4
    config.model.glimpse_size = config.model.patch_size = 8
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 4
    config.ema_decay = 0.0  # a few steps: evaluate the latest parameters (tests/test_ema.py: the average)
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use '' or 'smoke'")
  return config
