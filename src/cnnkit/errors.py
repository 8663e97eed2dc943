"""The small taxonomy of errors cnnkit raises for user-facing problems.

The CLI turns any `CnnkitError` into a one-line `Error: ...` and a non-zero exit. This module imports
nothing heavy, so `cnnkit.runtime` can use it.
"""

from typing import Any


class CnnkitError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, unavailable device).

    One made by `option_error` is about one parameter's value: `param` names it as the library does (the message
    reads `param='value': reason`), so a caller with other words for it, the CLI's flags, can say it its own way.
    """

    param: str | None = None
    value: Any = None
    reason: str = ""


class DataError(CnnkitError):
    """A dataset file is missing, corrupt or inconsistent."""


class CheckpointError(CnnkitError):
    """A checkpoint is missing, corrupt or incompatible."""


class ModelFileError(CnnkitError):
    """An exported model file (ONNX, TorchScript) is missing, corrupt or not a cnnkit model."""


class InputError(CnnkitError, ValueError):
    """Input images have the wrong rank, size, dtype or values."""


class DeviceError(CnnkitError):
    """The requested device or execution provider is not available."""


class InferenceError(CnnkitError):
    """The model itself failed on a batch (an engine's error while running it), said in one line."""


class TrainingError(CnnkitError):
    """Training cannot go on (it diverged)."""


class RequestError(CnnkitError):
    """An HTTP request the server refuses: answered with `{"error": message}` and `status` (a 4xx, or 503 when the
    server is too busy to read it)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class MissingExtraError(CnnkitError):
    """A command needs an optional part of cnnkit (an install extra) that is not installed."""


def option_error(cls: type[CnnkitError], param: str, value: Any, reason: str) -> CnnkitError:
    """A `cls` error about parameter `param` holding `value`; `reason` says why it cannot be, in words that name
    no flag (`param='value': reason`)."""
    exc = cls(f"{param}={value!r}: {reason}")
    exc.param, exc.value, exc.reason = param, value, reason
    return exc


def first_line(exc: BaseException) -> str:
    """An exception as one line: the first non-empty line of its message, else its type's name.

    Library errors (torch, onnxruntime, protobuf) often carry multi-line C++ messages, or none at all.
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
