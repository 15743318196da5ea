"""Serve the web demo offline: ``python demos/web/serve.py [--port 8000]``, then open the printed URL.

Serves the repository root (the page loads the model and its sidecar from ``faceanalysis/assets/`` and
onnxruntime-web from ``demos/web/node_modules/``) on 127.0.0.1 with the cross-origin isolation headers that let
onnxruntime-web use several threads. Any static server of the repository root works too
(``python -m http.server`` then ``/demos/web/``), with one thread.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream", ".json": "application/json"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt: str, *args) -> None:  # quiet
        pass


def make_server(port: int = 0, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """A server of the repository root (``port=0``: a free port, read it from ``server.server_port``)."""
    return http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(ROOT)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    web = ROOT / "demos" / "web"
    if not (web / "node_modules" / "onnxruntime-web").is_dir() or not (web / "models" / "yunet.onnx").is_file():
        print("first run: (cd demos/web && npm ci) && python demos/web/build.py", file=sys.stderr)
        return 1
    srv = make_server(args.port)
    print(f"http://127.0.0.1:{srv.server_port}/demos/web/   (Ctrl-C stops)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
