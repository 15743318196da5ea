"""The README runs as written: every ```python block executes (in a folder holding the photos it names), the
Quick start command works on the bundled example photo, and the export example works without the data pack."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLE = REPO / "examples" / "astronaut.jpg"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.M | re.S)


def test_readme_has_python_blocks():
    assert len(_blocks("python")) >= 2


@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_python_block_runs(i, tmp_path, monkeypatch):
    code = _blocks("python")[i]
    for name in set(re.findall(r'"([\w./-]+\.(?:jpg|png))"', code)):  # every photo the block names
        if "/" not in name:
            shutil.copy(EXAMPLE, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": f"readme_block_{i}"})


def test_quick_start_command(tmp_path, monkeypatch, capsys):
    from faceanalysis.cli import main

    (line,) = [ln for b in _blocks("bash") for ln in b.splitlines() if ln.startswith("faceanalysis analyze examples/")]
    args = line.split("#")[0].split()[1:]
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "examples" / EXAMPLE.name)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    assert "examples/astronaut.jpg: 1 face(s)" in capsys.readouterr().out
    assert (tmp_path / "out" / "astronaut_faces.png").is_file()


def test_export_example_on_a_fresh_checkout_without_the_data_pack(tmp_path, monkeypatch, capsys):
    """The README's first export line, run twice in a clean folder with no data pack: the first run writes the
    artifact (parity skipped with a note), the second refuses to overwrite it."""
    pytest.importorskip("onnx")
    from faceanalysis.cli import main
    from faceanalysis.export import read_sidecar

    (args,) = {tuple(ln.split("#")[0].split()[1:]) for b in _blocks("bash") for ln in b.splitlines()
               if ln.startswith("faceanalysis export --format onnx --precision fp32 -o")}
    args = list(args)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEANALYSIS_DATA", str(tmp_path / "no_pack"))
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "parity: not measured" in out and "--check-data" in out
    (artifact,) = (tmp_path / "my_export").glob("*.onnx")
    assert read_sidecar(artifact)["parity"]["measured"] is False
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err


def test_export_section_states_the_default_precision_and_its_calibration():
    from faceanalysis.export.cli import DEFAULT_PRECISION

    section = README.read_text().split("## Export and speed", 1)[1].split("\n## ", 1)[0]
    intro = " ".join(section.split("```", 1)[0].split())
    assert DEFAULT_PRECISION["onnx"] == DEFAULT_PRECISION["tflite"] == "int8"
    assert "Without `--precision`, ONNX (and TFLite) export int8. ONNX int8 is dynamic and needs no photos" in intro
    assert "TFLite int8 (static) needs calibration photos (`--calib-data DIR`, or the data pack when present)" in intro


def test_readme_names_no_moved_paths():
    text = README.read_text()
    assert "weights/MODEL_CARD.md" not in text and "weights/faceanalysis_s128" not in text
    assert "[onnx]" in text and "[torch]" in text
    assert os.path.isfile(REPO / "faceanalysis" / "assets" / "MODEL_CARD.md")
