"""Build the demo screenshot's inputs from the data pack: a collage with four real faces and a gallery.

    python demos/make_collage.py --data-root ../shared/data --out-dir /tmp/fa_demo

writes ``OUT/collage.png`` (960x600: two CelebAMask-HQ photos, two LFW photos) and ``OUT/gallery/<Name>.jpg``
holding a *different* LFW photo of each of the two LFW people, so their names come from a real match while
the two CelebAMask-HQ faces are not in the gallery. Nothing is written into the repository.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from faceanalysis.errors import FaceAnalysisError
from faceanalysis.preprocess import load_image

# LFW View-2 "same" pairs: (gallery photo, collage photo)
LFW_PEOPLE = (("Abel_Pacheco_0001", "Abel_Pacheco_0004"), ("Akhmed_Zakayev_0001", "Akhmed_Zakayev_0003"))
CELEBA = 2  # first N CelebAMask-HQ images (sorted by name)
TILE = 220


def build(data_root: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the collage and gallery; returns their paths."""
    celeb = sorted((data_root / "celebamask_mini" / "images").glob("*.jpg"))[:CELEBA]
    lfw = data_root / "lfw" / "images"
    if len(celeb) < CELEBA or not lfw.is_dir():
        raise FaceAnalysisError(f"data pack not found under {data_root} (need celebamask_mini/ and lfw/)")
    gallery = out_dir / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    tiles = [load_image(p) for p in celeb]
    for enrol, shown in LFW_PEOPLE:
        name = enrol.rsplit("_", 1)[0]
        cv2.imwrite(str(gallery / f"{name}.jpg"), load_image(lfw / f"{enrol}.jpg")[:, :, ::-1])
        tiles.append(load_image(lfw / f"{shown}.jpg"))
    canvas = np.full((600, 960, 3), 40, np.uint8)
    for i, im in enumerate(tiles):  # 2 x 2 grid with room for the labels around each face
        x = 60 + (i % 2) * 460
        y = 80 + (i // 2) * 265
        canvas[y:y + TILE, x:x + TILE] = cv2.resize(im, (TILE, TILE), interpolation=cv2.INTER_AREA)
    collage = out_dir / "collage.png"
    cv2.imwrite(str(collage), canvas[:, :, ::-1])
    return collage, gallery


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--out-dir", required=True)
    a = p.parse_args(argv)
    try:
        collage, gallery = build(Path(a.data_root), Path(a.out_dir))
    except FaceAnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{collage}\n{gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
