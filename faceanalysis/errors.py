"""The project's one exception type."""


class FaceAnalysisError(Exception):
    """Raised for every user-facing problem: bad images, bad weights, bad arguments, missing data.

    The message always says what was wrong and what to do about it.
    """
