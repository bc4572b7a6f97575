"""A stand-in MVTec AD category of the real one's size, to time configs/mvtec_ad.py (not a test).

MVTec AD cannot be downloaded here; its timing depends on the image count and size, not on the
pictures. This writes DIR/<category>/ in the official layout with the category's official counts
(`OFFICIAL_COUNTS`), RGB images of `--size` pixels (a textured disc on a dark background, the
defects bright discs with their masks). Its metrics mean nothing; its wall time does:

  python benchmarks/standin_mvtec_category.py /tmp/standin [--category=bottle --size=900]
  python benchmarks/bench_default_run.py --config=configs/mvtec_ad.py:bottle -- \\
      --config.dataset.manual_dir=/tmp/standin
"""

import argparse
import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage

from vivano_jax.datasets.mvtec_ad import OFFICIAL_COUNTS


def draw(rng: np.random.Generator, size: int, defect: bool) -> tuple[np.ndarray, np.ndarray]:
  """(RGB uint8 [size, size, 3], mask uint8 [size, size] of 0/255)."""
  yy, xx = np.mgrid[:size, :size]
  disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
  texture = np.kron(ndimage.gaussian_filter(rng.normal(size=(size // 4, size // 4)), 2),
                    np.ones((4, 4)))
  gray = np.where(disc, 120 + 20 * texture, 30 + 5 * texture)
  mask = np.zeros((size, size), np.uint8)
  if defect:
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    spot = (yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(size // 45, size // 15)) ** 2
    gray, mask[spot] = np.where(spot, 220, gray), 255
  rgb = np.stack([gray, gray * 0.9, gray * 0.7], axis=-1)
  return rgb.clip(0, 255).astype(np.uint8), mask


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('root')
  parser.add_argument('--category', default='bottle', choices=sorted(OFFICIAL_COUNTS))
  parser.add_argument('--size', type=int, default=900)
  args = parser.parse_args()
  root = pathlib.Path(args.root) / args.category
  rng = np.random.default_rng(0)
  for folder, count in OFFICIAL_COUNTS[args.category].items():
    split, kind = folder.split('/')
    for i in range(count):
      rgb, mask = draw(rng, args.size, kind != 'good')
      path = root / split / kind / f'{i:03d}.png'
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rgb).save(path)
      if split == 'test' and kind != 'good':
        mask_path = root / 'ground_truth' / kind / f'{i:03d}_mask.png'
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mask_path)
  print(f'{sum(OFFICIAL_COUNTS[args.category].values())} images of {args.size} px in {root}')


if __name__ == '__main__':
  main()
