"""The user's own images: the 2D model (scenes.multi_mnist's objects, decoder and pictures) trained
and evaluated on images the user brings (air_jax.data.images: an npz or a folder of PNG/JPEG).

config.data.train_path and eval_path name the two sets; every image is square, of one side
(config.data.canvas_size, or 0: the side of the train images, written into the run's config).
Where both npz files carry
`counts`, evaluation reports the count accuracy; otherwise the steps used (as Omniglot).
"""
import pathlib
from typing import Dict

import numpy as np

from air_jax.data import images as images_lib
from air_jax.data import sources
from air_jax.scenes import multi_mnist

SPLIT_PATHS = {'train': 'train_path', 'test': 'eval_path'}


def has_counts_file(path: str) -> bool:
  """Whether path is an npz that holds `counts` (read from the zip's directory only)."""
  path = pathlib.Path(path)
  if not path.is_file() or path.suffix.lower() in images_lib.SUFFIXES:
    return False
  try:
    with np.load(path, allow_pickle=False) as f:
      return 'counts' in f.keys()
  except Exception:  # pylint: disable=broad-except  (read() says what is wrong with the file)
    return False


class Scene(multi_mnist.Scene):
  """Images read from config.data.train_path / eval_path; objects as in multi_mnist.Scene."""

  name = 'images'
  evaluators = ()

  @classmethod
  def resolved(cls, config):
    """The paths made absolute and canvas_size 0 replaced by the side of the train images, so that
    the saved config of a run finds its data and builds its model from any folder."""
    data = config.data
    for field in SPLIT_PATHS.values():
      if data[field]:
        data[field] = str(pathlib.Path(data[field]).expanduser().absolute())
    if data.canvas_size == 0 and data.train_path:
      try:
        data.canvas_size = images_lib.side_of(data.train_path, 'config.data.train_path')
      except images_lib.ImagesError as e:
        raise ValueError(str(e)) from e
    return config

  def __init__(self, config):
    self._splits: Dict[str, sources.InMemory] = {}
    super().__init__(config)

  def check(self) -> None:
    for field in SPLIT_PATHS.values():
      if not self.data[field]:
        raise ValueError(f'config.data.{field} is empty: name an npz (images [N, H, W], optional counts [N]) '
                         'or a folder of PNG/JPEG images')
    if not self.data.canvas_size > 0:
      raise ValueError(f'config.data.canvas_size must be positive (0 before the config is resolved: the side '
                       f'of the train images), got {self.data.canvas_size}')
    super().check()

  @property
  def eval_split(self) -> str:
    return 'test'  # the images of config.data.eval_path


  @property
  def has_counts(self) -> bool:
    return all(has_counts_file(self.data[field]) for field in SPLIT_PATHS.values())

  def scenes(self, split: str) -> sources.InMemory:
    """The images of a split, read and checked once: {'image', 'count' (-1 without counts)}."""
    if split not in SPLIT_PATHS:
      raise ValueError(f'an images split is one of {tuple(SPLIT_PATHS)}, got {split!r}')
    if split not in self._splits:
      field = SPLIT_PATHS[split]
      size = self.data.canvas_size
      try:
        images, counts = images_lib.read(self.data[field], f'config.data.{field}', size)
      except images_lib.ImagesError as e:
        raise ValueError(str(e)) from e
      if counts is not None:
        sources.check_counts(f'config.data.{field}: its counts', sorted(set(counts.tolist())), self.model.max_steps)
      else:
        counts = np.full(len(images), -1, np.int32)
      self._splits[split] = sources.InMemory(dict(image=images, count=counts))
    return self._splits[split]

  def sources(self, log=print):
    """(train, test) as read from the two paths (nothing is cached: the files are the data)."""
    made = tuple(self.scenes(split) for split in SPLIT_PATHS)
    if len({has_counts_file(self.data[f]) for f in SPLIT_PATHS.values()}) > 1:
      raise ValueError('config.data.train_path and eval_path: one has counts and the other not; give both '
                       'counts (count accuracy) or neither (the steps used)')
    for split, source in zip(SPLIT_PATHS, made):
      counts = source.arrays['count']
      known = f', counts {sorted(set(counts.tolist()))}' if (counts >= 0).all() else ', no counts'
      log(f'{len(source)} {split} images of {self.image_shape[0]}x{self.image_shape[1]}{known}')
    return made
