"""Default AIR on Multi-MNIST (50x50, 0-2 digits). `get_config('smoke')` shrinks it for tests.

    python experiments/train.py --config=air_jax/configs/default.py --workdir=/tmp/air
    python experiments/train.py --config=air_jax/configs/default.py:smoke --config.batch_size=8 ...
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.scene_kind = 'multi_mnist'  # what a scene is (air_jax.scenes); 3D: configs/shapes_3d.py
  config.seed = 0  # root PRNG key of the run; per step key = fold_in(root, step)

  config.data = ml_collections.ConfigDict(dict(
      data_dir='',            # MNIST cache folder; '' = $AIR_JAX_DATA_DIR or ~/.cache/air_jax
      canvas_size=50,
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
      max_steps=3,            # one more than the most objects, so the model can say "stop"
      difference_input=False,  # True: DAIR (the LSTM sees image - canvas so far)
      memoryless=False,       # DAIR only: step i sees x - canvas_<i and nothing else (no LSTM memory)
      # The image encoder phi (air_jax.model): () = the pixels, linearly projected into the LSTM
      # gates (the paper's); (32, 64, ...) = 3x3 stride-2 convolutions of these widths first.
      image_conv_features=(),
      lstm_size=256,
      predictor_hidden=200,
      encoder_hidden=200,
      decoder_hidden=200,
      baseline_hidden=200,
      # An object's appearance code. With 50 the decoder drew two digits 10-15 px apart as one
      # object (83-93% of such pairs counted right at 10k steps, validation seeds 0-4); with 10 it
      # split single digits in two; with 20, 92-96% of those pairs and a final accuracy >= 50's on
      # each of the 5 seeds, but 98% up to 1,000 steps later (sessions 19-20, WORKSPACE.md).
      z_what_size=20,
      glimpse_size=28,
      patch_size=28,
      decoder_bias=-2.0,      # new objects start almost blank
      composition='sum',      # canvas = sum of the objects, or 'union': 1 - prod(1 - object)
      matmul_dtype='float32',  # or 'bfloat16': mixed precision, see modules.matmul
      z_pres_logit_bias=0.0,  # initial q(z_pres) = 0.5 (2.0 converged ~3k steps later, measured)
      # logit = bound * tanh(logit / bound): q(z_pres) within [0.018, 0.982], so an object that
      # should go keeps being sampled off and its gradients never vanish (the k+1 trap; WORKSPACE.md).
      z_pres_logit_bound=4.0,
  ))

  config.objective = ml_collections.ConfigDict(dict(
      likelihood_scale=0.3,
      likelihood_blur=0.0,     # > 0: the likelihood of the image blurred by a Gaussian of this sd (px)
      # Bernoulli success probability per step (a geometric count prior), annealed log-linearly
      # from z_pres_prior_start to z_pres_prior over z_pres_prior_anneal_steps (0: fixed). An
      # object costs -log p nats: 18.4 at the start (1e-8), 16.1 at the end (1e-7). Cheaper at the
      # start (1e-4, 9.2 nats) every digit scene was read as 3 objects for ~2,000 steps (duplicates
      # paid their way); dearer (1e-9 on 1 seed of 9, 1e-11 always) two digits became one object.
      z_pres_prior=1e-7,
      z_pres_prior_start=1e-8,
      z_pres_prior_anneal_steps=10_000,
      # z_where = (s, x, y): window side 0.1 + 0.9 sigmoid(s) of the canvas, centre (x, y).
      # s ~ N(0.7, 0.2): windows of ~0.70 +- 0.04 of the canvas (35 px), digit-sized with slack
      # (0.55 = 27 px left too little room and digits were split between two windows).
      # x, y ~ N(0, 0.5): digits' centres lie within +-0.45; with sd 1 an object could park off the
      # canvas (no reconstruction gradient there) and stay on forever (seed 2's trap; WORKSPACE.md).
      z_where_prior_loc=(0.7, 0.0, 0.0),
      z_where_prior_scale=(0.2, 0.5, 0.5),
      signal_decay=0.99,       # EMA decay of the learning signal's running moments
      # q(z_pres) gets no gradient for this many first steps (its logit starts at
      # model.z_pres_logit_bias): the object latents learn before objects can be switched off.
      z_pres_freeze_steps=0,
      # The same for q of the scene kind's discrete object latents (3D: the shape identity).
      discrete_freeze_steps=0,
  ))

  config.batch_size = 64            # global batch (split over all devices)
  config.per_device_batch_size = 0  # > 0: global batch = this x number of devices instead
  config.learning_rate = 1e-3
  # The model's learning rate at the last step as a fraction of learning_rate, reached by a cosine
  # over num_train_steps: lr(t) = learning_rate (f + (1 - f) (1 + cos(pi t / T)) / 2); 1 = constant.
  # 0.1 counted close digit pairs better (0.955 against 0.939, 5 validation seeds) but ended 2 scenes
  # lower on 2 of the seeds (session 21, WORKSPACE.md): not the default.
  config.learning_rate_decay_to = 1.0
  config.baseline_learning_rate = 1e-3
  config.grad_clip_norm = 10.0
  # > 0: keep theta_ema <- d theta_ema + (1 - d) theta and evaluate (and checkpoint-restore for
  # inference) with it; 0: evaluate the latest parameters. 0.999: held-out count accuracy >= the
  # latest parameters' at 19 of 20 checkpoints (two 10k-step runs, validation split; WORKSPACE.md).
  config.ema_decay = 0.999
  config.num_train_steps = 10_000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 1_000
  config.eval_batch_size = 500
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
