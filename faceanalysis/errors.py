"""The project's one exception type."""


import sys
from typing import Callable


class FaceAnalysisError(Exception):
    """Raised for every user-facing problem: bad images, bad weights, bad arguments, missing data.

    The message always says what was wrong and what to do about it.
    """


def run_command(prog: str, fn: Callable[[], "int | None"]) -> int:
    """Run a command body: a :class:`FaceAnalysisError` prints one line (``prog: error: ...``) and gives exit
    status 2, Ctrl-C gives 130; no traceback for user mistakes."""
    try:
        return int(fn() or 0)
    except FaceAnalysisError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
