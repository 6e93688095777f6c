"""Omniglot: the 2D scene kind's model on handwritten characters, each explained as a few parts.

The model is scenes.multi_mnist's, unchanged (per step z_where: a window; z_what: its appearance,
decoded and written through the window; canvas = sum or union of the parts): only the data differ.
A character's number of parts is not known, so its examples carry count -1 and evaluation reports
the steps used. Train on config.data.train_archive, evaluate on config.data.eval_archive's
alphabets that the train archive lacks (default: the shipped background samples small1 and small2;
air_jax.data.omniglot).
"""
from air_jax.scenes import multi_mnist


class Scene(multi_mnist.Scene):
  """Omniglot characters as canvas_size x canvas_size images; objects as in multi_mnist.Scene;
  sources: each archive's characters preprocessed once, cached under <data_dir>/scenes."""

  making_sources = 'preprocessing'

  def scenes(self, split: str):
    """The characters of the train archive ('train') or of the held-out one ('test'), less the
    train archive's alphabets: held-out characters are of alphabets never trained on (the shipped
    samples share two)."""
    from air_jax.data import omniglot  # pylint: disable=g-import-not-at-top
    data = self.data
    train = omniglot.Omniglot(omniglot.archive_path(data.archive_dir, data.train_archive), data.canvas_size)
    if split == 'train':
      return train
    return omniglot.Omniglot(omniglot.archive_path(data.archive_dir, data.eval_archive), data.canvas_size,
                             exclude_alphabets=train.alphabets)
