"""The project's one exception type, and how its messages name options (API arguments or CLI flags)."""


import contextvars
import os
import sys
from typing import Callable

#: "api" (Python keyword arguments) or "cli" (command-line flags); set by :func:`run_command`
_HINT_STYLE: contextvars.ContextVar[str] = contextvars.ContextVar("faceanalysis_hint_style", default="api")


class FaceAnalysisError(Exception):
    """Raised for every user-facing problem: bad images, bad weights, bad arguments, missing data.

    The message always says what was wrong and what to do about it.
    """


def option(api: str, cli: str) -> str:
    """How a hint names an option: ``api`` (e.g. ``device='cpu'``) from Python, ``cli`` (e.g. ``--device cpu``)
    when raised inside a command (:func:`run_command`)."""
    return cli if _HINT_STYLE.get() == "cli" else api


def run_command(prog: str, fn: Callable[[], "int | None"]) -> int:
    """Run a command body: a :class:`FaceAnalysisError` prints one line (``prog: error: ...``) and gives exit
    status 2, Ctrl-C gives 130, a reader that closed standard output early (``... --jsonl - | head -n 1``) ends
    the command quietly with status 141 (128 + SIGPIPE, what the shell reports for other tools); no traceback for
    user mistakes. Hints inside name command-line flags."""
    token = _HINT_STYLE.set("cli")
    try:
        return int(fn() or 0)
    except FaceAnalysisError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the interpreter's exit flush cannot fail again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
            pass
        return 141
    finally:
        _HINT_STYLE.reset(token)
