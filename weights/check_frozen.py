"""Check that a candidate changed only what its stage trained (a selection rule's "other outputs bit-identical").

    python weights/check_frozen.py REF CAND --prefix heads.parsing --outputs parsing,parsing_wide

compares the two weights files tensor by tensor (every tensor outside the ``--prefix`` list must be equal; tensors
new in CAND must lie under a prefix) and runs both models on about 180 aligned validation crops (CelebAMask val,
FER2013 PublicTest, ``celeba_more`` val; never test): every output not named in ``--outputs`` must be bit-identical.
Prints a one-line verdict per check and exits 1 when one fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceanalysis._lazy import exit_without_torch

exit_without_torch("check_frozen")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import numpy as np
import torch
from safetensors.torch import load_file

from faceanalysis.config import PreprocessConfig
from faceanalysis.data.sources import default_data_root, load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.preprocess import crop_faces, to_tensor
from faceanalysis.train import _under
from faceanalysis.weights import load_model

SPLITS = (("celebamask_mini", "val"), ("fer2013", "PublicTest"), ("celeba_more", "val"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("ref", type=Path, help="the weights the stage started from (safetensors)")
    p.add_argument("cand", type=Path, help="the stage's candidate weights")
    p.add_argument("--prefix", required=True, help="comma-separated parameter-name prefixes the stage trained")
    p.add_argument("--outputs", default="", help="comma-separated outputs allowed to change")
    p.add_argument("--per-split", type=int, default=60, help="crops per validation split")
    p.add_argument("--data-root", default=str(default_data_root()), help="the data pack")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for path in (a.ref, a.cand):
        if not path.is_file():
            raise FaceAnalysisError(f"{path}: no such weights file")
    prefixes = tuple(x.strip() for x in a.prefix.split(",") if x.strip())
    allowed = {x.strip() for x in a.outputs.split(",") if x.strip()}
    ra, rb = load_file(str(a.ref)), load_file(str(a.cand))
    new = sorted(set(rb) - set(ra))
    missing = sorted(set(ra) - set(rb))
    changed = sorted(k for k in ra if k in rb and not torch.equal(ra[k], rb[k]))
    outside = [k for k in changed + new if not _under(k, prefixes)] + missing
    print(f"tensors: {len(changed)} changed, {len(new)} new, {len(missing)} missing; outside {list(prefixes)}: "
          f"{outside or 'none'}")
    (ma, _), (mb, _) = load_model(a.ref), load_model(a.cand)
    pre = PreprocessConfig(input_size=ma.cfg.input_size)
    crops = []
    for name, split in SPLITS:
        src = load_source(name, split, a.data_root)
        for i in range(0, len(src), max(1, len(src) // a.per_split)):
            c, _ = crop_faces(src.images[i], [src.kps5[i]], pre)
            crops.append(c[0])
    x = to_tensor(np.stack(crops), pre)
    with torch.no_grad():
        ya, yb = ma(x), mb(x)
    differ = sorted(k for k in ya if k in yb and not torch.equal(ya[k], yb[k]))
    bad = [k for k in differ if k not in allowed] + sorted((set(ya) ^ set(yb)) - allowed)
    print(f"outputs on {len(crops)} validation crops: changed {differ or 'none'}; outside {sorted(allowed)}: "
          f"{bad or 'none'}")
    ok = not outside and not bad
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_command("check_frozen", main))
