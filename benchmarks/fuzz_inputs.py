"""Fuzz the public API with >= 10,000 hostile inputs; the only allowed outcomes are a result or FaceAnalysisError.

    taskset -c 1 python benchmarks/fuzz_inputs.py [--cases 10000] [--seed 0] [-o benchmarks/fuzz_inputs.md]

Cases (generators in tests/fuzz_inputs.py, shared with the hypothesis test tests/test_fuzz.py): numpy arrays of
random rank, sides, dtypes and values (NaN, inf, negative, huge), random bytes, valid small encodings of a pack
portrait in every supported format (JPEG, PNG 8/16 bit, WebP, BMP, TIFF, GIF incl. animated, PNM, TGA, ICO,
JPEG 2000, QOI, PCX, SGI, HEIC when pillow-heif is installed) corrupted by 1-4 rounds of truncation, flipped
bytes, inserted or deleted runs and huge header dimensions, and the same written to files with odd names and
extensions. Each case runs ``FaceAnalyzer().analyze`` (shipped weights); most fail at decode, which keeps
10,000 cases to a few minutes on one core. The report lists the outcome counts and any other exception.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_inputs import EXTS, mutate, png_with_size, random_array, seed_images  # noqa: E402

from faceanalysis import FaceAnalysisError, FaceAnalyzer  # noqa: E402
from faceanalysis.preprocess import load_image  # noqa: E402

NAMES = ["a", "with space", "ünï 顔", "new\nline", "x" * 200, "-dash", "semi;colon", "\u202eevil"]


def make_case(rng: np.random.Generator, seeds: dict[str, bytes], tmp: str, i: int):
    kind = rng.choice(["array", "bytes", "corrupt", "huge", "file", "valid"], p=[0.25, 0.1, 0.35, 0.1, 0.15, 0.05])
    if kind == "array":
        return kind, random_array(rng)
    if kind == "bytes":
        return kind, rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    if kind == "huge":
        return kind, png_with_size(int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
    data = seeds[str(rng.choice(sorted(seeds)))]
    if kind == "valid":
        return kind, data
    for _ in range(int(rng.integers(1, 5))):
        data = mutate(data, rng)
    if kind == "corrupt":
        return kind, data
    path = os.path.join(tmp, f"{i}-{rng.choice(NAMES)}{rng.choice(EXTS)}")
    with open(path, "wb") as f:
        f.write(data)
    return kind, path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("-o", "--out", default=str(Path(__file__).with_suffix(".md")))
    a = p.parse_args(argv)
    import glob

    faces = sorted(glob.glob(str(Path(a.data_root) / "celebamask_mini" / "images" / "*.jpg")))
    seeds = seed_images(load_image(faces[0]) if faces else None)
    fa = FaceAnalyzer()
    rng = np.random.default_rng(a.seed)
    counts: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unexpected: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.cases):
            kind, x = make_case(rng, seeds, tmp, i)
            try:
                out = fa.analyze(x)
                assert isinstance(out, list)
                outcome = "result (faces)" if out else "result (no face)"
            except FaceAnalysisError:
                outcome = "FaceAnalysisError"
            except Exception as err:  # noqa: BLE001 - what the fuzzer is looking for
                outcome = f"UNEXPECTED {type(err).__name__}"
                unexpected.append(f"case {i} ({kind}): {type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
            counts[outcome] += 1
            by_kind[kind][outcome] += 1
            if isinstance(x, str):
                os.remove(x)
            if (i + 1) % 1000 == 0:
                print(f"{i + 1} cases, {time.perf_counter() - t0:.0f} s, {dict(counts)}", flush=True)
    secs = time.perf_counter() - t0
    outcomes = sorted(counts)
    lines = ["# Fuzzing the public API", "",
             f"`python benchmarks/fuzz_inputs.py --cases {a.cases} --seed {a.seed}`: **{a.cases} cases** through "
             f"`FaceAnalyzer().analyze` in {secs:.0f} s, **{sum(v for k, v in counts.items() if k.startswith('UNEXPECTED'))} "
             "unexpected exceptions** (anything other than a result or `FaceAnalysisError`), no crash.", "",
             "| case kind | " + " | ".join(outcomes) + " |", "|---" * (len(outcomes) + 1) + "|"]
    for kind in sorted(by_kind):
        lines.append(f"| {kind} | " + " | ".join(str(by_kind[kind][o]) for o in outcomes) + " |")
    lines.append("| **all** | " + " | ".join(f"**{counts[o]}**" for o in outcomes) + " |")
    if unexpected:
        lines += ["", "## Unexpected exceptions", "", "```", *unexpected[:20], "```"]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
