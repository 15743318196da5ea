"""Parity of the int8 ONNX and TFLite artifacts on aarch64 (emulated by qemu-user) against PyTorch.

    python export/arm/emulated_parity.py --artifacts weights/export --data-root ../shared/data [--n 30]

Integer kernels differ by architecture (onnxruntime's MLAS and LiteRT's XNNPACK / ruy pick ARM NEON dot-product
code on aarch64, other code on x86; onnxruntime even fuses a different set of QDQ groups), so an int8 artifact
that meets its floors on x86 is not proven on ARM. This script:

1. takes the held-out aligned crops of the export parity check (``faceanalysis.export.calibration.parity_crops``,
   the same seed: the first ``--n`` of them) and the PyTorch reference outputs of the weights the artifacts were
   exported from (their sidecars' ``weights.sha256`` must match ``--weights``, else exit 2);
2. builds, once, a tiny arm64 sysroot in a cache folder: Debian's arm64 ``python3.X-minimal`` and the libraries
   it needs (``apt-get download`` + ``dpkg -x``, no root) and the arm64 wheels of the *same* numpy / onnxruntime /
   ai-edge-litert versions as this environment (``pip install --platform manylinux..._aarch64 --target``);
3. runs ``arm_runner.py`` in that sysroot under ``qemu-aarch64`` (``-cpu cortex-a76`` by default: a Raspberry
   Pi 5 class core, Armv8.2 with dot-product, no SVE / i8mm) and natively on x86 on the same crops;
4. compares both with PyTorch at the export parity floors (``faceanalysis.export.parity``), lists which ops of each
   artifact leave the int8 path on each architecture, prints a table, writes ``export/arm/emulated_parity.md``
   (``--report``) and, with ``--update-readme export/README.md``, the marked block of that file.

Exit status: 0 floors met on aarch64, 1 a floor missed, 2 setup problem (qemu / apt / pip missing, weights
mismatch). Needs qemu-user (``apt-get install qemu-user-static``; without it the script unpacks Debian's package
into the cache) and the arm64 package lists (``dpkg --add-architecture arm64 && apt-get update``, root).
Emulated wall times are the CI cost, never latencies: for ARM latency see ``export/arm/latency.py``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUNNER = HERE / "arm_runner.py"
DEFAULT_CACHE = Path(os.environ.get("FACEANALYSIS_ARM_CACHE", Path.home() / ".cache" / "faceanalysis" / "arm64"))
#: Debian arm64 packages of the sysroot (alternatives: names differ between Debian releases); python added later
LIBS = (("libc6",), ("libgcc-s1",), ("libstdc++6",), ("zlib1g",), ("libexpat1",), ("libffi8",),
        ("libssl3t64", "libssl3"), ("libbz2-1.0",), ("liblzma5",), ("libuuid1",), ("libcrypt1",),
        ("libncursesw6",), ("libtinfo6",))
RUNTIMES = ("numpy", "onnxruntime", "ai-edge-litert")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
#: emulated CPU models: /proc/cpuinfo identity (MIDR fields) and the Features line a real core of that kind reports
CPUS = {
    "cortex-a76": ("0x41", "0x4", "0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                               "cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
    "cortex-a72": ("0x41", "0x0", "0xd08", "3", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "neoverse-n1": ("0x41", "0x3", "0xd0c", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                                 "cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
    "max": ("0x00", "0x0", "0x051", "0", "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                                         "jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat "
                                         "ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm "
                                         "svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti mte sme"),
}
#: onnxruntime kernels that compute in int8 / uint8
ORT_INT8 = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "QGemm", "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul",
            "NhwcQLinearConv", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearSoftmax", "QLinearConcat",
            "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearReduceMean",
            "QLinearWhere", "QLinearConvTranspose", "QLinearGelu"}
#: compute ops that the int8 export means to run in int8 (a float one fed by DequantizeLinear fell back)
ORT_COMPUTE = {"MatMul", "Gemm", "Conv", "FusedMatMul", "FusedGemm", "FusedConv", "ConvTranspose"}
TFL_COMPUTE = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV"}
KEYS = (("embedding_cosine_mean", "emb cos", 4), ("embedding_cosine_min", "emb cos min", 4),
        ("landmarks_mean_px", "landmarks px", 3), ("parsing_agreement", "parsing agr.", 4),
        ("expression_top1_agreement", "expr. top-1", 4),
        ("expression_top1_agreement_decided", "expr. top-1, decided faces", 4))
README_START, README_END = "<!-- arm-emulated:start -->", "<!-- arm-emulated:end -->"


class SetupError(RuntimeError):
    """Tooling missing or inputs inconsistent (exit status 2)."""


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise SetupError(f"{what}: {cmd[0]} not found ({err})") from err
    if p.returncode:
        raise SetupError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout


# --------------------------------------------------------------------------------------------- arm64 sysroot
def find_qemu(cache: Path) -> str:
    """qemu-aarch64 on PATH, else Debian's qemu-user-static unpacked into the cache (apt-get download, no root)."""
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if exe := shutil.which(name):
            return exe
    local = cache / "qemu" / "usr" / "bin" / "qemu-aarch64-static"
    if local.is_file():
        return str(local)
    if not shutil.which("apt-get"):
        raise SetupError("qemu-aarch64 not found and no apt-get to fetch it: install qemu-user-static "
                         "(Debian / Ubuntu: apt-get install qemu-user-static)")
    with tempfile.TemporaryDirectory(dir=_mkdir(cache)) as tmp:
        _run(["apt-get", "download", "qemu-user-static"], "apt-get download qemu-user-static (or install it: "
             "apt-get install qemu-user-static)", cwd=Path(tmp))
        deb = next(Path(tmp).glob("qemu-user-static_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), str(cache / "qemu.part")], "dpkg-deb -x qemu-user-static")
        os.replace(cache / "qemu.part", cache / "qemu")
    return str(local)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _apt_has(pkg: str) -> bool:
    p = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True)
    return p.returncode == 0 and re.search(r"Candidate: (?!\(none\))\S+", p.stdout) is not None


def arm_python_version() -> str:
    """Debian's default python3 for arm64 ('3.11' on bookworm); needs the arm64 package lists."""
    if not shutil.which("apt-cache"):
        raise SetupError("apt-cache not found: the arm64 sysroot is built from Debian's arm64 packages "
                         "(run this on Debian / Ubuntu, or on a real ARM machine use export/arm/latency.py)")
    out = subprocess.run(["apt-cache", "depends", "python3-minimal:arm64"], capture_output=True, text=True).stdout
    m = re.search(r"python3\.(\d+)-minimal", out)
    if not m:
        raise SetupError("no arm64 packages in apt's lists: run (as root) `dpkg --add-architecture arm64 && "
                         "apt-get update` once (.ci/run does)")
    return f"3.{m.group(1)}"


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in RUNTIMES:
        try:
            out[name] = version(name)
        except PackageNotFoundError as err:
            raise SetupError(f"{name} is not installed here; the arm64 side uses the same version as this "
                             f"environment (pip install -c .ci/constraints.txt -e '.[export]')") from err
    return out


def ensure_sysroot(cache: Path) -> tuple[Path, str, dict[str, str], float]:
    """The cached arm64 sysroot (built when missing); returns (path, python version, runtimes, setup seconds)."""
    pyver = arm_python_version()
    vers = runtime_versions()
    key = f"py{pyver}-" + "-".join(f"{k}{v}" for k, v in vers.items())
    root = cache / key
    if (root / "ready.json").is_file():
        return root, pyver, vers, 0.0
    t0 = time.time()
    part = cache / (key + ".part")
    shutil.rmtree(part, ignore_errors=True)
    debs = _mkdir(part / "debs")
    pkgs = [f"python{pyver}-minimal", f"libpython{pyver}-minimal", f"libpython{pyver}-stdlib"]
    for alts in LIBS:
        name = next((a for a in alts if _apt_has(f"{a}:arm64")), None)
        if name is None:
            raise SetupError(f"none of {alts} (arm64) is in apt's lists; run apt-get update")
        pkgs.append(name)
    print(f"arm64 sysroot: apt-get download {len(pkgs)} Debian arm64 packages ...", flush=True)
    _run(["apt-get", "download", *[f"{p}:arm64" for p in pkgs]], "apt-get download (arm64 packages)", cwd=debs)
    sysroot = part / "sysroot"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")
    shutil.rmtree(debs)
    print(f"arm64 sysroot: pip install the aarch64 wheels of {', '.join(f'{k}=={v}' for k, v in vers.items())} ...",
          flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--no-compile",
           "--target", str(part / "site"), "--python-version", pyver, "--implementation", "cp",
           "--abi", "cp" + pyver.replace(".", "")]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    _run(cmd + [f"{k}=={v}" for k, v in vers.items()], "pip install of the aarch64 wheels (needs PyPI)")
    seconds = time.time() - t0
    (part / "ready.json").write_text(json.dumps({"python": pyver, **vers, "setup_seconds": round(seconds, 1)}))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(part, root)
    return root, pyver, vers, seconds


def write_cpu_files(sysroot: Path, cpu: str, n: int) -> None:
    """qemu-user shows the host's /proc/cpuinfo (x86 on this machine), on which the cpuinfo library that
    onnxruntime and XNNPACK use crashes. qemu resolves absolute paths in the sysroot first (-L), so an ARM
    /proc/cpuinfo and a matching CPU list there describe the emulated core instead."""
    imp, var, part, rev, feats = CPUS[cpu]
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {feats}\nCPU implementer\t: {imp}\n"
              f"CPU architecture: 8\nCPU variant\t: {var}\nCPU part\t: {part}\nCPU revision\t: {rev}\n"
              for i in range(n)]
    _mkdir(sysroot / "proc").joinpath("cpuinfo").write_text("\n".join(blocks) + "\n")
    cpus = _mkdir(sysroot / "sys" / "devices" / "system" / "cpu")
    for name, value in (("possible", f"0-{n - 1}" if n > 1 else "0"), ("present", f"0-{n - 1}" if n > 1 else "0"),
                        ("kernel_max", "255")):
        (cpus / name).write_text(value + "\n")


def host_cpus() -> int:
    """CPUs the host lists in /sys (the emulated CPU list must not name more: cpuinfo reads their topology)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(1, int(text.split("-")[-1].split(",")[-1]) + 1)
    except (OSError, ValueError):
        return 1


# --------------------------------------------------------------------------------------------- the runs
def run_arm(qemu: str, root: Path, pyver: str, cpu: str, crops: Path, artifacts: dict[str, Path], out: Path,
            threads: int) -> dict[str, float]:
    """arm_runner.py under qemu, one process per artifact (in parallel when this process may use >1 CPU)."""
    sysroot = root / "sysroot"
    write_cpu_files(sysroot, cpu, min(4, host_cpus()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LD_"))}
    env.update(PYTHONPATH=str(root / "site"), PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS=str(threads))
    procs = {}
    parallel = len(os.sched_getaffinity(0)) > 1
    walls: dict[str, float] = {}
    for kind, path in artifacts.items():
        cmd = [qemu, "-cpu", cpu, "-L", str(sysroot), str(sysroot / "usr" / "bin" / f"python{pyver}"), str(RUNNER),
               "--crops", str(crops), f"--{kind}", str(path), "--out", str(out / kind), "--threads", str(threads)]
        t0 = time.time()
        procs[kind] = (subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), t0)
        if not parallel:
            _wait(kind, *procs.pop(kind), walls)
    for kind, (p, t0) in procs.items():
        _wait(kind, p, t0, walls)
    return walls


def _wait(kind: str, p: subprocess.Popen, t0: float, walls: dict[str, float]) -> None:
    log, _ = p.communicate()
    walls[kind] = time.time() - t0
    if p.returncode:
        raise SetupError(f"the emulated aarch64 {kind} run failed (exit {p.returncode}):\n{log[-4000:]}")


def run_x86(crops: Path, artifacts: dict[str, Path], out: Path, threads: int) -> None:
    sys.path.insert(0, str(HERE))
    import arm_runner

    for kind, path in artifacts.items():
        _mkdir(out / kind)
        (arm_runner.run_onnx if kind == "onnx" else arm_runner.run_tflite)(str(path), np.load(crops), str(out / kind),
                                                                          threads)


# --------------------------------------------------------------------------------------------- op analysis
def onnx_ops(folder: Path) -> dict:
    """int8 kernels that ran (profile) and compute nodes left in float on dequantized inputs (optimized graph)."""
    import onnx

    prof = json.loads((folder / "onnx_profile.json").read_text())
    ran = Counter(e["args"].get("op_name") for e in prof
                  if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
    g = onnx.load(str(folder / "onnx_optimized.onnx"), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    fallback: Counter = Counter()
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in ORT_INT8:
            continue
        from_dq = any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)
        if from_dq and n.op_type in ORT_COMPUTE:
            fallback[n.op_type] += 1
    int8 = Counter({k: v for k, v in ran.items() if k in ORT_INT8})
    compute_int8 = sum(v for k, v in int8.items() if k in {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger",
                                                               "ConvInteger", "MatMulIntegerToFloat",
                                                               "DynamicQuantizeMatMul", "QAttention"})
    compute_fb = sum(v for k, v in fallback.items() if k in ORT_COMPUTE)
    return {"int8_kernels": dict(int8), "fallback": dict(fallback), "compute_int8": compute_int8,
            "compute_fallback": compute_fb, "qdq": ran.get("QuantizeLinear", 0) + ran.get("DequantizeLinear", 0),
            "nodes": sum(ran.values())}


def tflite_ops(folder: Path) -> dict:
    """Nodes by op, int8 or float operands, and whether XNNPACK took them (else LiteRT's built-in kernels)."""
    d = json.loads((folder / "tflite_nodes.json").read_text())
    rows: Counter = Counter()
    for n in d["nodes"]:
        if n["op"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        kind = "int8" if any(t in ("int8", "uint8", "int16") for t in n["in"] + n["out"]) else "float"
        rows[(n["op"], kind, n["delegated"])] += 1
    builtin_int8 = Counter({op: v for (op, kind, dlg), v in rows.items() if kind == "int8" and not dlg})
    builtin_float = Counter({op: v for (op, kind, dlg), v in rows.items() if kind == "float" and not dlg})
    compute = Counter({(op, kind): v for (op, kind, _), v in rows.items() if op in TFL_COMPUTE})
    return {"nodes": len(d["nodes"]), "delegated": sum(n["delegated"] for n in d["nodes"]),
            "partitions": d["delegate_partitions"], "builtin_int8": dict(builtin_int8),
            "builtin_float": dict(builtin_float), "compute": {f"{op} {k}": v for (op, k), v in sorted(compute.items())}}


def _fmt_counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


# --------------------------------------------------------------------------------------------- main
def reference_weights(sidecars: dict[str, dict], weights: str | None) -> Path:
    from faceanalysis.weights import ASSETS, DEFAULT_WEIGHTS, file_sha256

    if weights:
        path = Path(weights)
    else:
        names = {s["weights"]["file"] for s in sidecars.values()}
        cand = ASSETS / names.pop() if len(names) == 1 else DEFAULT_WEIGHTS
        path = cand if cand.is_file() else DEFAULT_WEIGHTS
    if not path.is_file():
        raise SetupError(f"reference weights {path} not found; pass --weights FILE.safetensors")
    sha = file_sha256(path)
    bad = [f"{name} (exported from {s['weights']['file']} sha256 {s['weights']['sha256'][:12]})"
           for name, s in sidecars.items() if s["weights"]["sha256"] != sha]
    if bad:
        raise SetupError(f"the artifacts were not exported from {path} (sha256 {sha[:12]}): {'; '.join(bad)}. "
                         f"Re-export them (faceanalysis export --format onnx,tflite --precision int8 --weights "
                         f"{path} ...) or pass the weights they came from with --weights")
    return path


def find_artifacts(folder: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    arts, sides = {}, {}
    for kind in ("onnx", "tflite"):
        found = sorted(folder.glob(f"*.int8.{kind}"))
        if len(found) != 1:
            raise SetupError(f"{folder} must hold exactly one *.int8.{kind} artifact (found {len(found)})")
        side = found[0].with_name(found[0].name + ".json")
        if not side.is_file():
            raise SetupError(f"{found[0]} has no sidecar {side.name}; re-export it with faceanalysis export")
        arts[kind], sides[found[0].name] = found[0], json.loads(side.read_text())
    return arts, sides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--artifacts", default=str(REPO / "weights" / "export"),
                   help="folder with one *.int8.onnx and one *.int8.tflite artifact (+ .json sidecars)")
    p.add_argument("--weights", help="reference .safetensors (default: the sidecars' weights file in "
                                     "faceanalysis/assets); its sha256 must match the sidecars")
    p.add_argument("--data-root", help="data pack root (default: $FACEANALYSIS_DATA or ../shared/data)")
    p.add_argument("--n", type=int, default=30, help="held-out crops (the first n of the export parity check's)")
    p.add_argument("--cpu", default="cortex-a76", choices=sorted(CPUS), help="emulated ARM core (qemu -cpu)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads on both sides")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the arm64 sysroot is kept")
    p.add_argument("--report", default=str(HERE / "emulated_parity.md"), help="Markdown report ('' = none)")
    p.add_argument("--update-readme", metavar="MD", help=f"replace the {README_START} block of this file")
    p.add_argument("--keep", metavar="DIR", help="keep the crops and raw outputs in DIR")
    a = p.parse_args(argv)
    try:
        return _main(a)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(a: argparse.Namespace) -> int:
    from faceanalysis.errors import FaceAnalysisError

    t_start = time.time()
    arts, sides = find_artifacts(Path(a.artifacts))
    weights = reference_weights(sides, a.weights)
    cache = _mkdir(Path(a.cache))
    qemu = find_qemu(cache)
    root, pyver, vers, setup_s = ensure_sysroot(cache)
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="fa-arm-"))
    try:
        from faceanalysis.export import parity
        from faceanalysis.export.calibration import PARITY_SOURCES, pack_root, parity_crops
        from faceanalysis.preprocess import normalise_array
        from faceanalysis.weights import load_model

        try:
            data = pack_root(a.data_root, PARITY_SOURCES)
        except FaceAnalysisError as err:
            raise SetupError(str(err)) from err
        if data is None:
            raise SetupError("the held-out crops come from the data pack: pass --data-root (or set FACEANALYSIS_DATA)")
        model, cfg = load_model(weights)
        t0 = time.time()
        x = normalise_array(parity_crops(cfg.preprocess, a.n, data_root=data), cfg.preprocess)
        crops = _mkdir(work) / "crops.npy"
        np.save(crops, x)
        ref = parity.torch_reference(model, x)
        t_ref = time.time() - t0
        t0, cpu0 = time.time(), _child_cpu()
        walls = run_arm(qemu, root, pyver, a.cpu, crops, arts, work / "aarch64", a.threads)
        t_arm, cpu_arm = time.time() - t0, _child_cpu() - cpu0
        run_x86(crops, arts, work / "x86_64", a.threads)
        rows, ops, failed = [], {}, []
        for kind, path in arts.items():
            prec = sides[path.name]["precision"]
            arm_out = dict(np.load(work / "aarch64" / kind / f"{kind}.npz"))
            x86_out = dict(np.load(work / "x86_64" / kind / f"{kind}.npz"))
            for arch, out in (("aarch64 (qemu " + a.cpu + ")", arm_out), ("x86_64 (native)", x86_out)):
                m = parity.compare(ref, out)
                bad = parity.failures(m, prec)
                rows.append((path.name, arch, m, bad))
                if arch.startswith("aarch64") and bad:
                    failed.append(f"{path.name} on aarch64: " + "; ".join(bad))
            rows[-2] = rows[-2] + (parity.compare(x86_out, arm_out),)
            info = json.loads((work / "aarch64" / kind / "info.json").read_text())
            analyse = onnx_ops if kind == "onnx" else tflite_ops
            ops[kind] = {"aarch64": analyse(work / "aarch64" / kind), "x86_64": analyse(work / "x86_64" / kind),
                         "wall": walls[kind], "arm_info": info}
        total = time.time() - t_start
        report = render(a, arts, sides, weights, vers, pyver, rows, ops, len(x),
                        {"setup": setup_s, "reference": t_ref, "emulated": t_arm, "emulated_cpu": cpu_arm,
                         "total": total})
        print(report["console"])
        if a.report:
            Path(a.report).write_text(report["md"])
            print(f"wrote {a.report}")
        if a.update_readme:
            _update_readme(Path(a.update_readme), report["readme"])
            print(f"updated the {README_START} block of {a.update_readme}")
        if failed:
            print("FAIL: " + " | ".join(failed), file=sys.stderr)
            return 1
        print(f"aarch64 parity floors met ({total:.0f} s)")
        return 0
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _update_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise SetupError(f"{path} has no {README_START} ... {README_END} block to update")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + README_START + "\n" + block.strip() + "\n" + README_END + tail)


def _metric_cells(m: dict) -> list[str]:
    return [f"{m[k]:.{d}f}" if k in m else "-" for k, _, d in KEYS]


def render(a, arts, sides, weights, vers, pyver, rows, ops, n, times) -> dict[str, str]:
    from faceanalysis.weights import file_sha256

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sha = file_sha256(weights)[:12]
    head = "| artifact | runs on | " + " | ".join(h for _, h, _ in KEYS) + " | floors | arm vs x86: emb cos / parsing |"
    sep = "|---" * (len(KEYS) + 4) + "|"
    lines = [head, sep]
    for r in rows:
        name, arch, m, bad = r[:4]
        vs = r[4] if len(r) > 4 else None
        cross = (f"{vs['embedding_cosine_min']:.4f} / {vs['parsing_agreement']:.4f}" if vs else "")
        lines.append(f"| {name} | {arch} | " + " | ".join(_metric_cells(m)) + f" | {'**missed**: ' + '; '.join(bad) if bad else 'met'} | {cross} |")
    table = "\n".join(lines)
    floors = "; ".join(f"{k} {'>=' if kind == 'min' else '<='} {v}" for k, (v, kind) in
                       __import__("faceanalysis.export.parity", fromlist=["FLOORS"]).FLOORS["int8"].items())
    o_arm, o_x86 = ops["onnx"]["aarch64"], ops["onnx"]["x86_64"]
    t_arm, t_x86 = ops["tflite"]["aarch64"], ops["tflite"]["x86_64"]
    fb = [
        "| artifact | runs on | int8 kernels that ran | MatMul / Gemm / Conv that fell back to float (DequantizeLinear inputs, float kernel) |",
        "|---|---|---|---|",
        f"| {arts['onnx'].name} | aarch64 | {o_arm['compute_int8']} MatMul/Gemm/Conv in int8; {_fmt_counts(o_arm['int8_kernels'])} "
        f"| {_fmt_counts(o_arm['fallback'])} |",
        f"| {arts['onnx'].name} | x86_64 | {o_x86['compute_int8']} MatMul/Gemm/Conv in int8; {_fmt_counts(o_x86['int8_kernels'])} "
        f"| {_fmt_counts(o_x86['fallback'])} |",
    ]
    tf = [
        "| artifact | runs on | XNNPACK took | int8 nodes left to LiteRT's built-in kernels | float nodes left to built-in kernels | compute nodes (op dtype: count) |",
        "|---|---|---|---|---|---|",
    ]
    for arch, t in (("aarch64", t_arm), ("x86_64", t_x86)):
        tf.append(f"| {arts['tflite'].name} | {arch} | {t['delegated']} of {t['nodes']} nodes, {t['partitions']} partitions "
                  f"| {_fmt_counts(t['builtin_int8'])} | {_fmt_counts(t['builtin_float'])} | {_fmt_counts(t['compute'])} |")
    same_onnx = o_arm["int8_kernels"] == o_x86["int8_kernels"] and o_arm["fallback"] == o_x86["fallback"]
    same_tfl = t_arm == t_x86
    notes = [
        f"- ONNX (onnxruntime {vers['onnxruntime']}): " + (
            "the same kernels run on both architectures." if same_onnx else
            f"the kernels differ by architecture: on aarch64 {o_arm['compute_int8']} MatMul/Gemm/Conv run as int8 "
            f"kernels and {o_arm['compute_fallback']} fall back to float; on x86_64 {o_x86['compute_int8']} run as "
            f"int8 and {o_x86['compute_fallback']} fall back (onnxruntime's QDQ fusion rules for int8 activations "
            f"differ by architecture; an unfused group dequantizes and runs the float kernel). The x86 parity "
            f"numbers therefore partly measure float compute on int8-rounded tensors; the aarch64 numbers measure "
            f"the int8 kernels."),
        f"- TFLite (ai-edge-litert {vers['ai-edge-litert']}, default XNNPACK delegate): " + (
            "the same partition on both architectures" if same_tfl else "the partition differs by architecture") +
        f"; int8 nodes XNNPACK does not take run on LiteRT's built-in kernels (ruy / reference code on ARM): "
        f"{_fmt_counts(t_arm['builtin_int8'])}. Float by design (export/README.md): softmax, LayerNorm, the "
        f"attention BATCH_MATMULs, the stem conv and the task-token layers.",
    ]
    meta = (f"Weights `{weights.name}` (sha256 {sha}, matching the sidecars); {n} held-out crops (the first {n} of "
            f"the export parity check's: celebamask_mini / utkface / celeba_attr test splits); aarch64 = Debian arm64 "
            f"Python {pyver} with numpy {vers['numpy']}, onnxruntime {vers['onnxruntime']}, ai-edge-litert "
            f"{vers['ai-edge-litert']} under qemu-user (`-cpu {a.cpu}`), {a.threads} thread(s). Int8 floors: {floors}. "
            f"Generated {now} by `python export/arm/emulated_parity.py`.")
    cost = (f"CI cost: {times['total']:.0f} s wall in all ({times['emulated']:.0f} s wall / "
            f"{times['emulated_cpu']:.0f} s CPU for the emulated runs, "
            f"{times['reference']:.0f} s crops + PyTorch reference"
            + (f", {times['setup']:.0f} s first-time sysroot setup" if times["setup"] else ", sysroot cached") +
            "). Emulated wall times are not latencies.")
    body = ("### Parity on aarch64 (emulated) and x86_64, same crops\n\n" + meta + "\n\n" + table +
            "\n\n### Ops that leave the int8 path\n\n" + "\n".join(fb) + "\n\n" + "\n".join(tf) + "\n\n" +
            "\n".join(notes) + "\n\n" + cost + "\n")
    md = "# int8 artifacts on aarch64 (emulated): parity and fallback ops\n\n" + body
    readme = body.replace("### ", "#### ")
    console = "\n".join([table, "", *fb, "", *tf, "", *notes, "", cost])
    return {"md": md, "readme": readme, "console": console}


if __name__ == "__main__":
    raise SystemExit(main())
