"""The click layer: parse options, call one library function, render, set the exit code.

Commands live in one module per group and are imported only when used; heavy modules (torch, onnx,
onnxruntime) are imported inside the commands, so `cnnkit --help` stays fast and never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import click

from cnnkit import __version__
from cnnkit.errors import CnnkitError

# command -> the module defining it, in the order `--help` lists them
COMMANDS = {
    "train": "cnnkit.cli.train",
    "export": "cnnkit.cli.export",
    "verify": "cnnkit.cli.export",
    "predict": "cnnkit.cli.runtime",
    "evaluate": "cnnkit.cli.runtime",
    "serve": "cnnkit.cli.serve",
    "bench": "cnnkit.cli.bench",
    "optimize": "cnnkit.cli.bench",
    "doctor": "cnnkit.cli.runtime",
}
# a missing top-level module -> the install extra that brings it
EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "onnx": "train",
    "onnxscript": "train",
    "safetensors": "train",
    "tqdm": "train",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "matplotlib": "plot",
    "pytriton": "triton",
    "grpc": "grpc",
    "tritonclient": "grpc",
}


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The one-line message for a command whose install extra is missing, or None if `exc` is something else."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    what = f"cnnkit {command}" if command else "this command"
    return f"{what} needs the '{extra}' extra ({top} is not installed): pip install 'cnnkit[{extra}]'"


# commands that run torch (or TorchScript code) for long: a second Ctrl-C ends them even inside a C++ call
HARD_STOP = {"train", "export", "verify", "bench", "optimize"}


@contextlib.contextmanager
def second_interrupt_exits() -> Iterator[None]:
    """The first Ctrl-C raises KeyboardInterrupt as usual (when Python next runs); the second ends the process at
    once with 130, even while the main thread is stuck in native code (a TorchScript forward that never returns).

    Python's C-level signal handler writes each signal's number to the wakeup fd from whatever thread the OS picks;
    a watcher thread reads it there, so no Python code in the main thread has to run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:
        reader.close()
        writer.close()
        yield
        return

    def watch() -> None:
        seen = 0
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            count = data.count(bytes([signal.SIGINT]))
            if seen == 0 and count == 1:
                os.write(2, b"\nInterrupted: stopping (Ctrl-C again to stop at once).\n")
            seen += count
            if seen >= 2:
                os.write(2, b"\nInterrupted again: stopping now.\n")
                os._exit(130)

    thread = threading.Thread(target=watch, name="cnnkit-ctrl-c", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()
        thread.join(timeout=1)
        reader.close()


class Group(click.Group):
    """Loads commands lazily; turns cnnkit errors, OS errors and missing extras (user-fixable) into
    `Error: ...` and exit 1, without a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        command: click.Command = getattr(importlib.import_module(module), name)
        if name in HARD_STOP and not getattr(command, "_hard_stop", False):
            run = command.invoke

            def invoke(sub_ctx: click.Context) -> Any:
                with second_interrupt_exits():
                    return run(sub_ctx)

            command.invoke = invoke  # type: ignore[method-assign,assignment]
            command._hard_stop = True  # type: ignore[attr-defined]
        return command

    def in_flags(self, ctx: click.Context, exc: CnnkitError) -> str:
        """The error in the command line's words: a library parameter the command has as a flag is said as that
        flag (`--precision int8: ...` for `precision='int8': ...`)."""
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if name else None
        if exc.param is None or command is None:
            return str(exc)
        for p in command.params:
            if p.name == exc.param and isinstance(p, click.Option):
                value = ",".join(map(str, exc.value)) if isinstance(exc.value, (list, tuple)) else exc.value
                return f"{p.opts[0]} {value}: {exc.reason}" if value not in ("", None) else f"{p.opts[0]}: {exc.reason}"
        return str(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CnnkitError as exc:
            click.echo(f"Error: {self.in_flags(ctx, exc)}", err=True)
            ctx.exit(1)
        except ModuleNotFoundError as exc:
            message = missing_extra(exc, ctx.invoked_subcommand)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)
        except OSError as exc:  # unwritable --out, full disk, ...: the OS message names the file
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnkit")
def main() -> None:
    """Train, export, verify, benchmark and serve a small image CNN."""
