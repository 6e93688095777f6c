"""Omniglot: the 2D scene kind's model on handwritten characters, each explained as a few parts.

The model is scenes.multi_mnist's, unchanged (per step z_where: a window; z_what: its appearance,
decoded and written through the window; canvas = sum or union of the parts): only the data differ.
A character's number of parts is not known, so its examples carry count -1 and evaluation reports
the steps used. Train on config.data.train_archive, evaluate on config.data.eval_archive's
alphabets that the train archive lacks (default: the shipped background samples small1 and small2;
air_jax.data.omniglot).
"""
from air_jax.data import omniglot
from air_jax.scenes import multi_mnist


class Scene(multi_mnist.Scene):
  """Omniglot characters as canvas_size x canvas_size images; objects as in multi_mnist.Scene;
  sources: each archive's characters preprocessed once, cached under <data_dir>/scenes."""

  name = 'omniglot'
  making_sources = 'preprocessing'
  has_counts = False
  evaluators = ()

  @property
  def eval_split(self) -> str:
    return 'test'  # the held-out archive's alphabets

  def scenes(self, split: str):
    """omniglot.split_of: the train archive's characters, or the held-out archive's of alphabets
    never trained on."""
    data = self.data
    return omniglot.split_of(split, data.archive_dir, data.train_archive, data.eval_archive, data.canvas_size)
