"""AIR on Omniglot characters (air_jax.scenes.omniglot): 50x50, up to 4 steps (parts).

    python experiments/train.py --config=air_jax/configs/omniglot.py --workdir=/tmp/air_omniglot
    python experiments/train.py --config=air_jax/configs/omniglot.py:smoke --workdir=/tmp/omni_smoke

The model and the objective are the 2D ones (configs/multi_mnist.py says what each option means); the
values that differ, and why, are below.
"""
import ml_collections

from air_jax.configs import multi_mnist
from air_jax.data import omniglot


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = multi_mnist.get_config()
  config.scene_kind = 'omniglot'
  config.data = ml_collections.ConfigDict(dict(
      data_dir='',        # cache of the preprocessed characters (<data_dir>/scenes; '' = ~/.cache/air_jax)
      # '' = the shipped sample (train: 5 alphabets, held out: 5 others); else a folder holding the
      # archives named below, e.g. the full images_background.zip and images_evaluation.zip.
      archive_dir='',
      train_archive=omniglot.SAMPLE_TRAIN,
      eval_archive=omniglot.SAMPLE_EVAL,
      canvas_size=50,     # 105x105 drawings area-averaged to 50x50 (the Multi-MNIST canvas)
      train_seed=1,       # the order of the training batches
  ))
  model = config.model
  model.max_steps = 4  # the paper's Omniglot AIR: up to 4 parts
  # Parts meet and cross at stroke junctions: with 'sum' two strokes through one pixel add up past
  # the ink's 1, with 'union' (1 - prod(1 - part)) they do not, as one pen's ink does not.
  model.composition = 'union'
  model.z_what_size = 50  # a part's appearance code, as Omniglot's results were measured (2D default: 20)
  objective = config.objective
  # Windows of parts, not of whole characters: s ~ N(-0.6, 0.5), a window side of 0.1 + 0.9
  # sigmoid(s) = 0.42 of the canvas (21 px; 16-26 px at +-1 sd), where a character spans ~35-40 px
  # and a digit's window was 0.70 (35 px). Centres x, y ~ N(0, 0.5) as for digits.
  objective.z_where_prior_loc = (-0.6, 0.0, 0.0)
  objective.z_where_prior_scale = (0.5, 0.5, 0.5)
  # A part costs -log 0.1 = 2.3 nats, fixed (no anneal). Multi-MNIST's prior anneals to 1e-7 (16
  # nats an object) to prune a digit explained twice; a character has no true count to recover, so
  # the prior only has to keep a step that explains nothing from being used.
  objective.z_pres_prior = objective.z_pres_prior_start = 0.1
  objective.z_pres_prior_anneal_steps = 0
  config.ema_decay = 0.0  # the latest parameters, as Omniglot's results were measured
  config.num_train_steps = 10_000

  if arg == 'smoke':
    model.lstm_size = 16
    model.predictor_hidden = model.encoder_hidden = model.decoder_hidden = model.baseline_hidden = 16
    model.z_what_size = 4
    model.glimpse_size = model.patch_size = 8
    config.batch_size = 8
    config.eval_batch_size = 256
    config.num_train_steps = 4
    config.log_every_steps = config.checkpoint_every_steps = 2
    config.eval_every_steps = 4  # an evaluation reads all 2,120 held-out characters: once per run
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use '' or 'smoke'")
  return config
