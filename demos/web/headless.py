"""Drive Debian's headless Chromium over the DevTools protocol on a pipe (stdlib only; no browser download).

Used by ``tests/test_web_demo.py`` and to take screenshots of the page::

    python demos/web/headless.py "demos/web/?image=../../examples/astronaut.jpg" --screenshot out.png

(the path is served from the repository root by :mod:`serve`; ``--chromium`` names the browser, default
``$CHROMIUM`` or ``chromium``).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser to use: ``$CHROMIUM`` or the first of chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless Chromium with one page, spoken to by the DevTools protocol on ``--remote-debugging-pipe``
    (fd 3: commands in, fd 4: replies out, each a JSON text ended by a NUL byte)."""

    def __init__(self, executable: str, width: int = 1000, height: int = 800, extra_args: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="fa-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends become fds 3 and 4
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                *extra_args, "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._next = 0
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable", session=True)

    def _drain(self) -> None:
        for line in self.proc.stderr:  # keep the last lines for error messages
            self._stderr = (self._stderr + [line.decode(errors="replace")])[-30:]

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "browser closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def send(self, method: str, session: bool = False, timeout: float = 60.0, **params: Any) -> dict:
        """One DevTools command (``session=True``: to the page); returns its result or raises RuntimeError."""
        self._next += 1
        mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} in {timeout:.0f} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            err = "".join(self._stderr)[-2000:]
            raise RuntimeError(f"{method}: {reply['error'].get('message')}; chromium stderr: {err}")
        return reply["result"]

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str, await_promise: bool = False, timeout: float = 60.0) -> Any:
        """Value of a JavaScript expression in the page (JSON-safe values)."""
        r = self.send("Runtime.evaluate", session=True, timeout=timeout, expression=expression,
                      returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page exception: {json.dumps(r['exceptionDetails'])[:2000]}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0, poll: float = 0.2) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        end = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > end:
                raise TimeoutError(f"{expression} still false after {timeout:.0f} s; console: {self.console()[-10:]}")
            time.sleep(poll)

    def console(self) -> list[str]:
        """Console messages and uncaught exceptions of the page so far."""
        out = []
        for e in self.events:
            if e.get("method") == "Runtime.consoleAPICalled":
                out.append(e["params"]["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                 for a in e["params"]["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(e["params"]["exceptionDetails"])[:500])
        return out

    def screenshot(self, path: str | Path, clip: dict | None = None) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import make_server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="page path below the repository root, e.g. 'demos/web/?image=...'")
    ap.add_argument("--screenshot", help="PNG of the page's canvas")
    ap.add_argument("--page", action="store_true", help="--screenshot takes the whole page, not only the canvas")
    ap.add_argument("--size", default="1000x800", help="window size WxH")
    ap.add_argument("--chromium", default=None)
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args(argv)
    exe = args.chromium or find_chromium()
    if not exe:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 1
    srv = make_server(0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        w, h = (int(v) for v in args.size.split("x"))
        with Browser(exe, w, h) as b:
            b.navigate(f"http://127.0.0.1:{srv.server_port}/{args.path.lstrip('/')}")
            state = b.wait_for("window.faceanalysisState && window.faceanalysisState !== 'loading' "
                               "&& window.faceanalysisState !== 'ready' && window.faceanalysisState", args.timeout)
            print(state)
            print(b.evaluate("document.getElementById('summary').textContent"))
            if args.screenshot:
                rect = None if args.page else b.evaluate(
                    "(() => { const r = document.getElementById('view').getBoundingClientRect(); "
                    "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
                b.screenshot(args.screenshot, rect)
                print("wrote", args.screenshot)
    finally:
        srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
