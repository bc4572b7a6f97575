"""Masks for an export from a folder in the MVTec AD layout (`vivano evaluate --ground_truth`):
each scored image finds its mask by (defect type, file stem), and every missing, extra, ambiguous,
unreadable or mis-sized mask is listed. numpy and PIL only, as the offline evaluator."""

import os
import pathlib
from typing import Optional

import numpy as np

from vivano_jax import image_io


def _mask_files(gt: pathlib.Path, problems: list[str]) -> dict[tuple[str, str], pathlib.Path]:
  """(defect type, image stem) -> mask file, of ground_truth/<defect type>/ but 'good'."""
  available = {}
  for d in sorted(p for p in gt.iterdir() if p.is_dir() and not image_io.is_ignored(p.name)
                  and p.name != 'good'):
    for f in sorted(d.iterdir()):
      if image_io.is_ignored(f.name) or not f.is_file():
        continue
      stem, ext = os.path.splitext(f.name)
      if ext.lower() not in image_io.IMAGE_EXTENSIONS or not stem.endswith('_mask'):
        problems.append(f'{f}: not a <stem>_mask.<image extension> file')
        continue
      key = (d.name, stem[:-len('_mask')])
      if key in available:
        problems.append(f'{f}: a second mask for {key[1]} beside {available[key].name}')
      available[key] = f
  return available


def masks_from_folder(root: str | os.PathLike, filenames: np.ndarray, defect_types: np.ndarray,
                      shapes: list[tuple[int, int]], problems: list[str],
                      expected: Optional[np.ndarray] = None) -> tuple[list[np.ndarray], np.ndarray]:
  """Masks from an MVTec AD layout folder: (n bool [H_i, W_i], has_mask [n] bool).

  Args:
    root: the folder holding ground_truth/<defect type>/<stem>_mask.<ext>.
    filenames, defect_types: [n] as in scores.csv; a mask is found by (defect type, file stem).
    shapes: the maps' [H_i, W_i], which the masks must have.
    problems: appended with every missing, extra, unreadable, ambiguous or mis-sized mask.
    expected: [n] the export's has_mask: an image it scored against a mask must find one here
      (a missing ground_truth/<defect type>/ folder is not taken as "no masks").
  ground_truth/good/ is ignored (good images have no defect pixels), as the folder builder does.
  """
  gt = pathlib.Path(root) / 'ground_truth'
  if not gt.is_dir():
    problems.append(f'{gt}: no such folder (expected ground_truth/<defect type>/<stem>_mask.png)')
    return [], np.zeros(0, bool)
  available = _mask_files(gt, problems)
  folders = {d for d, _ in available} | {
      p.name for p in gt.iterdir() if p.is_dir() and not image_io.is_ignored(p.name)}
  masks, has_mask, used = [], np.zeros(len(filenames), bool), set()
  for i, (name, defect) in enumerate(zip(filenames, defect_types)):
    key = (defect, pathlib.PurePath(name).stem)
    if key in available:
      used.add(key)
      try:
        mask = image_io.read_mask(available[key])
      except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
        problems.append(f'{available[key]}: unreadable mask ({type(e).__name__}: {e})')
        mask = np.zeros(shapes[i], bool)
      if mask.shape != tuple(shapes[i]):
        problems.append(f'{available[key]}: mask size {mask.shape} (H, W) differs from the map '
                        f'{tuple(shapes[i])} of {name}')
      masks.append(mask)
      has_mask[i] = True
    elif defect in folders and defect != 'good':
      problems.append(f'{gt / defect}: no mask for {name} (expected {key[1]}_mask.png)')
      masks.append(np.zeros(shapes[i], bool))
    else:
      if defect != 'good' and expected is not None and expected[i]:
        problems.append(f'{gt / defect}: no such folder, but scores.csv scored {name} against a '
                        'mask')
      masks.append(np.zeros(shapes[i], bool))
      has_mask[i] = defect == 'good'
  for key in sorted(set(available) - used):
    problems.append(f'{available[key]}: a mask for no image of scores.csv')
  return masks, has_mask
