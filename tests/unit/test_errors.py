"""The error taxonomy: one line from any exception, and errors about a parameter that a caller can reword."""

import pytest

from cnnkit.errors import CnnkitError, DeviceError, first_line, option_error


@pytest.mark.parametrize(
    "exc,line",
    [
        (RuntimeError(""), "RuntimeError"),
        (RuntimeError("   \n\n  "), "RuntimeError"),
        (ValueError("\n  first  \nsecond"), "first"),
        (OSError(2, "No such file"), "[Errno 2] No such file"),
    ],
)
def test_first_line_of_any_exception(exc, line):
    assert first_line(exc) == line


def test_an_option_error_names_the_parameter_and_keeps_its_parts():
    exc = option_error(DeviceError, "device", "cuda", "no GPU here")
    assert isinstance(exc, DeviceError) and isinstance(exc, CnnkitError)
    assert str(exc) == "device='cuda': no GPU here"
    assert (exc.param, exc.value, exc.reason) == ("device", "cuda", "no GPU here")
    assert CnnkitError("plain").param is None
