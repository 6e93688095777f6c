"""A user's own images: an npz or a folder of PNG/JPEG, read and checked, for training (the
'images' scene kind) and for inference (air_jax.infer).

An npz holds `images` [N, H, W] (uint8 0-255, or float in [0, 1]; or the file's only array) and
optionally `counts` [N] (int >= 0, the objects in each image). A folder holds PNG/JPEG files, read
in file-name order as greyscale (white objects on black, like MNIST); a folder has no counts. Bad
input raises ImagesError with one line naming what is wrong.
"""
import pathlib
import zipfile
from typing import Optional, Tuple

import numpy as np


SUFFIXES = ('.png', '.jpg', '.jpeg')


class ImagesError(ValueError):
  """Images the library cannot use; the message says what is wrong, in one line."""


def read(path, what: str = '--images', size: Optional[int] = None,
         resize: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(images [N, S, S] uint8, or float32 in [0, 1] from a float npz; counts [N] int32 or None) of an
  npz, a folder of PNG/JPEG or one image file, all square and of one side S: size where given, else
  their own. resize: square image files of another side are resized to size (inference), else
  refused (training data). `what` names the input in messages (a flag or a config field)."""
  path = pathlib.Path(path)
  if path.is_dir() or path.suffix.lower() in SUFFIXES:
    return _read_files(path, what, size, resize), None
  if not path.is_file():
    raise ImagesError(f'{what}: no such file: {path}')
  return _read_npz(path, what, size)


def _read_npz(path: pathlib.Path, what: str, size: Optional[int]):
  try:
    with np.load(path, allow_pickle=False) as f:
      names = list(f.keys())
      if 'images' in names:
        images = f['images']
      elif len(names) == 1:
        images = f[names[0]]
      else:
        raise ImagesError(f"{what}: {path} has arrays {names}; name the images 'images'")
      counts = f['counts'] if 'counts' in names else None
  except ImagesError:
    raise
  except Exception as e:  # not a zip, truncated, pickled objects, ...
    raise ImagesError(f'{what}: {path} is not a readable npz file ({type(e).__name__}: {e})') from e
  if images.ndim != 3:
    raise ImagesError(f'{what}: expected an array [N, H, W], got shape {images.shape}')
  if images.shape[0] == 0:
    raise ImagesError(f'{what}: the array holds no images (N = 0)')
  if size is not None and images.shape[1:] != (size, size):
    raise ImagesError(f'{what}: the model takes {size}x{size} images, got {images.shape[1]}x{images.shape[2]}')
  if images.shape[1] != images.shape[2]:
    raise ImagesError(f'{what}: images must be square, got {images.shape[1]}x{images.shape[2]}')
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise ImagesError(f'{what}: dtype must be uint8 (0-255) or float (0-1), got {images.dtype}')
    bad = ~np.isfinite(images)
    if bad.any():
      raise ImagesError(f'{what}: {int(bad.sum())} pixels are NaN or infinite '
                        f'(first in image {int(np.argwhere(bad)[0][0])})')
    if images.min() < 0.0 or images.max() > 1.0:
      raise ImagesError(f'{what}: float pixels must lie in [0, 1], got [{images.min():g}, {images.max():g}]'
                        ' (uint8 images are taken as 0-255)')
    images = images.astype(np.float32)
  if counts is not None:
    if counts.shape != (len(images),):
      raise ImagesError(f'{what}: counts must be [N] = [{len(images)}], one per image, got shape {counts.shape}')
    if not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
      raise ImagesError(f'{what}: counts must be integers >= 0, got {counts.dtype} '
                        f'from {counts.min()} to {counts.max()}')
    counts = counts.astype(np.int32)
  return images, counts


def side_of(path, what: str = '--images') -> int:
  """The side S of the images at path, read from the npz's array header or the first image file
  (the images themselves are not loaded); read() checks them all."""
  path = pathlib.Path(path)
  if path.is_dir() or path.suffix.lower() in SUFFIXES:
    from PIL import Image  # pylint: disable=g-import-not-at-top  (PIL loads only for image files)
    first = files(path, what)[0]
    try:
      with Image.open(first) as image:
        return image.size[0]
    except Exception as e:  # pylint: disable=broad-except
      raise ImagesError(f'{what}: {first} is not a readable PNG or JPEG image ({type(e).__name__}: {e})') from e
  try:  # an npz: the shape from its images array's header; the pixels are read (and checked) when used
    with zipfile.ZipFile(path) as archive:
      names = [n for n in archive.namelist() if n.endswith('.npy')]
      name = 'images.npy' if 'images.npy' in names else (names[0] if len(names) == 1 else None)
      if name is not None:
        with archive.open(name) as member:
          major, _ = np.lib.format.read_magic(member)
          header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
          shape = header(member)[0]
        if len(shape) == 3 and shape[1] == shape[2]:
          return int(shape[1])
  except (OSError, ValueError, zipfile.BadZipFile):
    pass
  images, _ = read(path, what)  # not a plain npz of [N, H, W]: read() says what is wrong
  return images.shape[1]


def files(path: pathlib.Path, what: str = '--images') -> list:
  """The PNG/JPEG files of a folder in file-name order, or [path] for one image file."""
  if path.is_dir():
    found = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith('.'))
    if not found:
      raise ImagesError(f'{what}: the folder {path} holds no PNG or JPEG files ({", ".join(SUFFIXES)})')
    return found
  if not path.is_file():
    raise ImagesError(f'{what}: no such file: {path}')
  return [path]


def read_file(path: pathlib.Path, size: Optional[int] = None, what: str = '--images') -> np.ndarray:
  """One PNG/JPEG -> greyscale uint8 [S, S]: colour becomes luma (PIL's 'L'), alpha is
  dropped; a square image of another side than size is resized (area average when shrinking,
  bilinear when growing); an image that is not square is refused."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top  (PIL loads only for image files)
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)  # JPEGs from cameras and phones: upright as shown
      if image.mode.startswith('I;16'):
        image = Image.fromarray((np.asarray(image, np.float64) / 257.0).round().astype(np.uint8))
      image = image.convert('L')
  except Exception as e:  # not an image, truncated, unknown format, ...
    raise ImagesError(f'{what}: {path} is not a readable PNG or JPEG image ({type(e).__name__}: {e})') from e
  width, height = image.size
  if width != height:
    target = f'{size}x{size}' if size else 'square'
    raise ImagesError(f'{what}: {path.name} is {width}x{height}; the model takes {target} images (square '
                      'images of another size are resized): crop or pad it to a square first')
  if size is not None and width != size:
    resample = Image.Resampling.BOX if width > size else Image.Resampling.BILINEAR
    image = image.resize((size, size), resample)
  return np.asarray(image, np.uint8)


def _read_files(path: pathlib.Path, what: str, size: Optional[int], resize: bool) -> np.ndarray:
  found = files(path, what)
  if resize and size is not None:
    return np.stack([read_file(f, size, what) for f in found])
  images = [read_file(f, None, what) for f in found]  # every image keeps its side
  sides = sorted({image.shape[0] for image in images})
  if len(sides) > 1:
    raise ImagesError(f'{what}: the images of {path} have mixed sizes ({", ".join(f"{s}x{s}" for s in sides)}); '
                      'give them one size')
  if size is not None and sides[0] != size:
    raise ImagesError(f'{what}: the model takes {size}x{size} images, got {sides[0]}x{sides[0]}')
  return np.stack(images)
