"""Omniglot characters (Lake, Salakhutdinov and Tenenbaum, 2015) from archives in the official layout.

An archive (`images_background.zip`, `images_evaluation.zip`, or the shipped samples) holds
`[TOP/]ALPHABET/characterNN/*.png`: 105x105 drawings, black strokes on white. Example i of an
`Omniglot` source is the i-th png in sorted member order, preprocessed:

    ink   = 1 - png                         (strokes 1 on a 0 background)
    image = R ink R^T,  R [canvas, 105]     area averaging: R[i, j] = |[i r, (i + 1) r) n [j, j + 1)| / r,
                                            r = 105 / canvas (each output pixel the mean of the ink it covers)

stored as round(255 image) uint8 (the pipeline divides by 255: floats in [0, 1]). Each example
carries `image`, `count` (-1: a character's number of parts is not known), `alphabet` and
`character` (indices into the archive's sorted alphabets and its characters across alphabets).

The embedded default (no download: no package registry ships Omniglot) is two MIT-licensed
background subsets shipped in `omniglot_sample/` beside this file (LICENSE there):
`images_background_small1.zip` (5 alphabets, 2,720 images) to train on and
`images_background_small2.zip` (5 alphabets, 3,120 images) to evaluate on. The two share Greek and
Latin (the same 1,000 images), so the held-out source leaves out the train archive's alphabets
(air_jax.scenes.omniglot): it holds the 2,120 images of Japanese (katakana), Sanskrit and Tagalog.
"""
import hashlib
import io
import pathlib
import re
import zipfile
from typing import Dict, Sequence

import numpy as np

from air_jax.data import sources

SOURCE_SIZE = 105
SAMPLE_DIR = pathlib.Path(__file__).resolve().parent / 'omniglot_sample'
SAMPLE_TRAIN, SAMPLE_EVAL = 'images_background_small1.zip', 'images_background_small2.zip'
PREPROCESS_VERSION = 1  # bump when preprocessing changes: names the cached files
_MEMBER = re.compile(r'^(?:[^/]+/)?([^/]+)/(character\d+)/[^/]+\.png$')


class OmniglotUnavailableError(ValueError, sources.UnavailableError):
  """An archive is missing, is not a zip, or does not hold Omniglot's layout."""


def area_resize_matrix(source: int, target: int) -> np.ndarray:
  """R [target, source]: (R v)_i = the mean of v over output cell i's span [i r, (i + 1) r), r =
  source / target, each input pixel j weighted by how much of [j, j + 1) the span covers."""
  ratio = source / target
  start = np.arange(target)[:, None] * ratio
  left = np.arange(source)[None, :]
  overlap = np.clip(np.minimum(start + ratio, left + 1) - np.maximum(start, left), 0.0, None)
  return overlap / ratio


def preprocess(drawings: np.ndarray, canvas_size: int) -> np.ndarray:
  """drawings [N, 105, 105] (1 = white paper, 0 = stroke; bool or 0/1) -> uint8 [N, canvas, canvas]
  of round(255 R (1 - drawing) R^T): strokes white on black, area-averaged to the canvas."""
  drawings = np.asarray(drawings)
  if drawings.ndim != 3 or drawings.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
    raise OmniglotUnavailableError(f'Omniglot drawings must be [N, {SOURCE_SIZE}, {SOURCE_SIZE}], '
                                   f'got {drawings.shape}')
  ink = 1.0 - drawings.astype(np.float64)
  resize = area_resize_matrix(SOURCE_SIZE, canvas_size)
  image = resize @ ink @ resize.T
  return np.round(255.0 * np.clip(image, 0.0, 1.0)).astype(np.uint8)


def archive_path(archive_dir: str, name: str) -> pathlib.Path:
  """<archive_dir>/<name>, or the shipped sample's <name> when archive_dir is ''."""
  return (pathlib.Path(archive_dir) if archive_dir else SAMPLE_DIR) / name


class Omniglot:
  """Random-access source of one archive's characters (len / getitem / getitems), preprocessed to
  canvas_size x canvas_size, less those of exclude_alphabets; the archive's members are listed
  once, pngs decoded on demand."""

  def __init__(self, path: str | pathlib.Path, canvas_size: int = 50, exclude_alphabets: Sequence[str] = ()):
    self.path = pathlib.Path(path)
    if canvas_size < 8:
      raise OmniglotUnavailableError(f'Omniglot canvas_size must be at least 8, got {canvas_size}')
    self.canvas_size = int(canvas_size)
    if not self.path.is_file():
      raise OmniglotUnavailableError(
          f'no Omniglot archive at {self.path}: give a folder holding it (official layout '
          'ALPHABET/characterNN/*.png, e.g. images_background.zip) or leave the folder empty for the '
          'shipped sample')
    try:
      with zipfile.ZipFile(self.path) as archive:
        names = archive.namelist()
    except zipfile.BadZipFile as e:
      raise OmniglotUnavailableError(f'{self.path} is not a zip archive ({e})') from e
    matches = sorted((m.group(1), m.group(2), name) for name in names if (m := _MEMBER.match(name)))
    if not matches:
      raise OmniglotUnavailableError(
          f'{self.path} holds no Omniglot images: expected members ALPHABET/characterNN/*.png '
          f'(optionally under one top folder), found {len(names)} other members')
    matches = [m for m in matches if m[0] not in set(exclude_alphabets)]
    if not matches:
      raise OmniglotUnavailableError(f'{self.path}: every alphabet is excluded ({sorted(exclude_alphabets)})')
    self.members = [name for _, _, name in matches]
    self.alphabets = sorted({a for a, _, _ in matches})
    characters = sorted({(a, c) for a, c, _ in matches})
    index_of = {key: i for i, key in enumerate(characters)}
    self.alphabet = np.array([self.alphabets.index(a) for a, _, _ in matches], np.int32)
    self.character = np.array([index_of[(a, c)] for a, c, _ in matches], np.int32)
    self.num_characters = len(characters)
    digest = hashlib.sha1(self.path.read_bytes())  # the archive's content and the members chosen
    digest.update('\n'.join(self.members).encode())
    self.digest = digest.hexdigest()[:10]

  def __len__(self) -> int:
    return len(self.members)

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    return {k: v[0] for k, v in self.__getitems__([index]).items()}

  def __getitems__(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    indices = [int(i) for i in indices]
    for i in indices:
      if not 0 <= i < len(self):
        raise IndexError(f'index {i} out of range for {len(self)} Omniglot images')
    drawings = []
    with zipfile.ZipFile(self.path) as archive:
      for i in indices:
        try:
          with Image.open(io.BytesIO(archive.read(self.members[i]))) as png:
            drawing = np.asarray(png.convert('L'), np.float64) / 255.0
        except (OSError, zipfile.BadZipFile) as e:  # PIL's UnidentifiedImageError is an OSError
          raise OmniglotUnavailableError(f'{self.path}: {self.members[i]} is not a readable png ({e})') from e
        if drawing.shape != (SOURCE_SIZE, SOURCE_SIZE):
          raise OmniglotUnavailableError(f'{self.path}: {self.members[i]} is {drawing.shape[1]}x'
                                         f'{drawing.shape[0]}, Omniglot drawings are {SOURCE_SIZE}x{SOURCE_SIZE}')
        drawings.append(drawing)
    idx = np.asarray(indices, np.int64)
    return dict(image=preprocess(np.stack(drawings) if drawings else np.zeros((0, SOURCE_SIZE, SOURCE_SIZE)),
                                 self.canvas_size),
                count=np.full(len(idx), -1, np.int32), alphabet=self.alphabet[idx],
                character=self.character[idx])

  def cache_name(self, split: str) -> str:
    return (f'omniglot_v{PREPROCESS_VERSION}_{split}_{self.path.stem}_{self.digest}'
            f'_canvas{self.canvas_size}.npz')


def split_of(split: str, archive_dir: str, train_archive: str, eval_archive: str, canvas_size: int) -> 'Omniglot':
  """The characters of the train archive ('train') or of the held-out one ('test'), less the
  train archive's alphabets: held-out characters are of alphabets never trained on (the shipped
  samples share two)."""
  if split not in ('train', 'test'):
    raise ValueError(f"an Omniglot split is 'train' or 'test', got {split!r}")
  train = Omniglot(archive_path(archive_dir, train_archive), canvas_size)
  if split == 'train':
    return train
  return Omniglot(archive_path(archive_dir, eval_archive), canvas_size, exclude_alphabets=train.alphabets)
