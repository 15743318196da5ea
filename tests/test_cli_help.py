"""CLI polish (issue 12): help text and defaults for every option, --version, --max-side (and the deprecated
--det-size), backend from the weights' suffix, hints that name flags, the demo's help, the --json schema."""
from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from faceanalysis.cli import build_parser, main
from faceanalysis.weights import DEFAULT_ONNX

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "astronaut.jpg"
SCHEMA = Path(importlib.import_module("faceanalysis").__file__).parent / "schemas" / "faces.schema.json"


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser_of(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command builds (caught at parse_args, so nothing runs)."""
    def grab(self, *a, **k):
        raise _Captured(self)

    from faceanalysis._argparse import ArgumentParser

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    monkeypatch.setattr(ArgumentParser, "parse_args", grab)  # the project's parsers override it
    with pytest.raises(_Captured) as info:
        importlib.import_module(f"faceanalysis.{module}").main([])
    monkeypatch.undo()
    return info.value.parser


def _all_parsers_analyze() -> argparse.ArgumentParser:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["analyze"]


def _all_parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {"faceanalysis": top, "analyze": sub.choices["analyze"]}
    for name, module in (("train", "train"), ("eval", "evaluate"), ("export", "export.cli"), ("demo", "demo"),
                         ("verification", "verification")):
        parsers[name] = _parser_of(module, monkeypatch)
    return parsers


def test_every_option_has_help_and_a_stated_default(monkeypatch):
    missing, no_default = [], []
    for name, p in _all_parsers(monkeypatch).items():
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS:
                continue
            shown = p._get_formatter()._get_help_string(a)  # the help line as --help renders it
            if not a.help:
                missing.append(f"{name} {a.option_strings[0]}")
            elif a.default not in (None, False, argparse.SUPPRESS) and "default" not in shown.lower():
                no_default.append(f"{name} {a.option_strings[0]} (default {a.default!r})")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose default --help does not show: {no_default}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    out = capsys.readouterr().out
    assert "(default: cpu)" in out and "(default: auto)" in out and "--max-side" in out
    assert "--det-size" not in out  # hidden alias


def test_version(capsys):
    import faceanalysis

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"faceanalysis {version}" == f"faceanalysis {faceanalysis.__version__}"


def test_det_size_is_a_deprecated_alias_of_max_side(tmp_path, capsys):
    rc = main(["analyze", str(EXAMPLE), "--det-size", "320", "--json", str(tmp_path / "r.json"), "--quiet",
               "--tasks", "pose"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--det-size is deprecated; use --max-side" in err
    args = build_parser().parse_args(["analyze", "x.jpg", "--det-size", "320"])
    assert args.max_side == 320 and not hasattr(args, "det_size")


def test_backend_follows_the_weights_suffix(tmp_path, capsys):
    from faceanalysis import FaceAnalysisError, FaceAnalyzer

    onnx = tmp_path / "x.onnx"
    shutil.copy(DEFAULT_ONNX, onnx)
    assert FaceAnalyzer(weights=onnx).backend == "onnx"
    out_json = tmp_path / "r.json"
    rc = main(["analyze", str(EXAMPLE), "--weights", str(onnx), "--json", str(out_json), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    (faces,) = json.loads(out_json.read_text()).values()
    assert len(faces) == 1
    # a backend that contradicts the suffix is refused, naming the flag from the CLI and the argument from Python
    rc = main(["analyze", str(EXAMPLE), "--weights", str(onnx), "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "--backend torch" in err and "backend=" not in err
    with pytest.raises(FaceAnalysisError, match="backend='torch'"):
        FaceAnalyzer(weights=onnx, backend="torch")


def test_hints_name_flags_in_the_cli_and_arguments_in_python(tiny_weights, capsys):
    pytest.importorskip("torch")
    import torch

    from faceanalysis import FaceAnalysisError, FaceAnalyzer

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["analyze", str(EXAMPLE), "--device", "cuda:7", "--weights", str(tiny_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cpu" in err and "device=" not in err, err
    with pytest.raises(FaceAnalysisError, match="device='cpu'"):
        FaceAnalyzer(weights=tiny_weights, device="cuda:7")
    rc = main(["analyze", str(EXAMPLE), "--max-faces", "0", "--weights", str(tiny_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "--max-faces" in err and "max_faces" not in err, err


def test_demo_help_points_only_to_installed_programs(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        importlib.import_module("faceanalysis.demo").main(["--help"])
    text = capsys.readouterr().out
    assert "demos/" not in text and "weights/export" not in text
    for module in re.findall(r"python -m ([\w.]+)", text):
        assert importlib.util.find_spec(module) is not None, module
    assert "--max-side" in text and "--det-size" not in text


def test_export_help_names_the_user_photo_options(capsys):
    from faceanalysis.export.cli import main as export_main

    with pytest.raises(SystemExit):
        export_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--calib-data", "--check-data", "--no-check", "--check"):
        assert flag in text
    assert "weights/export" not in text


# ---- the --json output and its schema ----------------------------------------------------------------
def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema, schema


def test_json_output_matches_the_shipped_schema(tmp_path, capsys):
    jsonschema, schema = _validator()
    import cv2

    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(EXAMPLE, d / "face.jpg")
    cv2.imwrite(str(d / "wall.png"), np.full((90, 120, 3), 80, np.uint8))
    (d / "broken.jpg").write_bytes(EXAMPLE.read_bytes()[:200])
    out_json, out_jsonl = tmp_path / "r.json", tmp_path / "r.jsonl"
    args = ["analyze", str(d), "--json", str(out_json), "--quiet"]
    if any("--jsonl" in a.option_strings for a in _all_parsers_analyze()._actions):
        args += ["--jsonl", str(out_jsonl)]
    main(args)
    capsys.readouterr()
    report = json.loads(out_json.read_text())
    jsonschema.validate(report, schema)
    assert len(report[str(d / "face.jpg")]) == 1 and report[str(d / "wall.png")] == []
    assert "error" in report[str(d / "broken.jpg")]
    if out_jsonl.exists():
        line_schema = {**schema, "$ref": "#/$defs/jsonlRecord"}
        line_schema.pop("additionalProperties"), line_schema.pop("type")
        lines = [json.loads(ln) for ln in out_jsonl.read_text().splitlines()]
        assert len(lines) == 3
        for rec in lines:
            jsonschema.validate(rec, line_schema)
    # a task subset leaves the other fields null, still valid
    main(["analyze", str(d / "face.jpg"), "--tasks", "pose", "--json", str(tmp_path / "p.json"), "--quiet"])
    sub = json.loads((tmp_path / "p.json").read_text())
    jsonschema.validate(sub, schema)
    (face,) = next(iter(sub.values()))
    assert face["pose"] is not None and face["landmarks"] is None


def test_schema_rejects_what_is_not_analyze_output():
    jsonschema, schema = _validator()
    from faceanalysis import FaceAnalyzer

    (face,) = FaceAnalyzer(tasks=["pose", "parsing"]).analyze(EXAMPLE)
    good = {"a.jpg": [face.to_dict()]}
    jsonschema.validate(good, schema)
    for bad in ({"a.jpg": [{**face.to_dict(), "bbox": [1, 2]}]},
                {"a.jpg": [{k: v for k, v in face.to_dict().items() if k != "score"}]},
                {"a.jpg": {"message": "x"}},
                {"a.jpg": [{**face.to_dict(), "expression": "joy"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("argv, flag", [
    (["verify"], "a, b"),                                     # missing positionals
    (["verify", "x.jpg", "y.jpg", "--threshold", "abc"], "--threshold"),  # malformed value
    (["eval", "--bogus"], "--bogus"),                         # a passthrough command's own parser
    (["index"], "SUBCOMMAND"),                                # a sub-command parser (inherits the class)
    (["pseudo-label"], "-o/--output"),
    (["analyze", "x.jpg", "--bogus"], "faceanalysis analyze: error: unrecognized arguments: --bogus"),  # own name
    (["index", "search", "q.jpg", "--db", "x.db", "--bogus"], "faceanalysis index search: error: unrecognized arguments: --bogus"),
])
def test_usage_errors_are_one_line(argv, flag, capsys):
    """argparse's usage errors print one line naming the flag and pointing at --help, exit status 2 (the README's
    CLI section promises this); plain argparse prints its whole usage block first."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "error:" in err[0] and flag in err[0] and "--help" in err[0]
    assert not err[0].startswith("usage:")
