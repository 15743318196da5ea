"""Task registry: the model, trainer, evaluator, exporter and demo loop over ``TASKS``."""
from __future__ import annotations

from .attributes import AttributesTask
from .base import Geometry, HeadInputs, Task
from .expression import ExpressionTask
from .identity import IdentityTask
from .landmarks import LandmarksTask
from .parsing import ParsingTask
from .pose import PoseTask

TASKS: dict[str, Task] = {
    t.name: t
    for t in (ParsingTask(), LandmarksTask(), PoseTask(), AttributesTask(), ExpressionTask(), IdentityTask())
}


def get_tasks(names=None) -> list[Task]:
    """Tasks by name, in registry order; ``None`` = all."""
    from ..errors import FaceAnalysisError

    if names is None:
        return list(TASKS.values())
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise FaceAnalysisError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    return [t for n, t in TASKS.items() if n in names]


__all__ = ["TASKS", "Task", "HeadInputs", "Geometry", "get_tasks"]
