"""AIR on the user's own images (air_jax.scenes.images): the 2D model of configs/multi_mnist.py.

    python experiments/train.py --config=air_jax/configs/images.py --workdir=/tmp/mine \\
        --config.data.train_path=train.npz --config.data.eval_path=held_out.npz

An npz holds images [N, H, W] (uint8 0-255 or float 0-1) and optionally counts [N]; a folder holds
PNG/JPEG images (greyscale, white on black; no counts). Set config.model.max_steps to one more than
the most objects an image holds, and the window prior (objective.z_where_prior_loc) to the objects'
size: the defaults are Multi-MNIST's (digits of ~28 px on 50x50, up to 2 a scene).
"""
import ml_collections

from air_jax.configs import multi_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = multi_mnist.get_config(arg)  # 'smoke': its small model and short run
  config.scene_kind = 'images'
  config.data = ml_collections.ConfigDict(dict(
      train_path='',   # npz or folder of PNG/JPEG to train on
      eval_path='',    # npz or folder of PNG/JPEG held out, evaluated as training goes
      canvas_size=0,   # the images' side in pixels; 0: the side of the train images
      train_seed=1,    # the order of the training batches
  ))
  return config
