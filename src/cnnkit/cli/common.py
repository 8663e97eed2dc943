"""What every command module shares: the device choices, JSON output, and a runtime Classifier whose CUDA
fall-back is one `Warning:` line."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from typing import Any

import click


class Finite(click.FloatRange):
    """A FloatRange that also refuses NaN and infinities (NaN slips through a range's comparisons)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return out


def shown(flag: str, kind: Any, default: Any, help: str | None = None) -> Callable[[Any], Any]:
    """A click option whose default, an options dataclass's, is shown in `--help`."""
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


def int_list(ctx: click.Context | None, param: click.Parameter | None, value: str) -> tuple[int, ...]:
    """A click callback: "1,8,64" -> (1, 8, 64), each 1..65536."""
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1 or max(out) > 65_536:
        raise click.BadParameter(f"expected integers 1..65536, got {value!r}")
    return out


def check_destinations(*paths: str | None) -> None:
    """Fail now, in one line, on an output file that could not be written later ('-' is stdout)."""
    from cnnkit import atomic

    for path in paths:
        if path and path != "-":
            atomic.check_writable(path)


def require(*modules: str) -> None:
    """Import `modules` now, so a command whose install extra is missing stops before it says or writes anything
    (the CLI turns the ModuleNotFoundError into the one-line `pip install 'cnnkit[extra]'` message)."""
    for name in modules:
        importlib.import_module(name)


def progress_for(json_file: str | None) -> Callable[[str], None] | None:
    """Progress lines on stderr, unless the JSON report goes to stdout (`--json -`)."""
    return None if json_file == "-" else (lambda msg: click.echo(msg, err=True))


def show_report(result: Any, json_file: str | None, render: Callable[[Any], str]) -> None:
    """`--json -`: the JSON on stdout only; else the rendered text, and the JSON written to `json_file` if named."""
    from cnnkit import atomic

    if json_file == "-":
        emit_json(result.to_dict())
        return
    click.echo(render(result))
    if json_file:
        atomic.write_text(json_file, dumps(result.to_dict()) + "\n")


def _gate_defaults() -> Any:
    from cnnkit.export.compare import Gate  # numpy only

    return Gate()


def gate_options(f):
    """The reduced-precision gates and where the real test split is, shared by export, verify and optimize (their
    defaults are `Gate`'s)."""
    g = _gate_defaults()
    f = shown(
        "--max-accuracy-drop",
        Finite(0, 100),
        g.max_accuracy_drop,
        "INT8/fp16: most accuracy (points) the variant may lose against fp32.",
    )(f)
    f = shown(
        "--min-agreement",
        Finite(0, 1),
        g.min_agreement,
        "INT8/fp16: least top-1 agreement with the fp32 reference on the real test split.",
    )(f)
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=g.data_dir,
        help="Where the checkpoint's dataset is, if not where training found it.",
    )(f)
    return f


def tolerance_options(f):
    """fp32 parity tolerances, `|out - ref| <= atol + rtol·|ref|` (export and verify; defaults are `Gate`'s)."""
    g = _gate_defaults()
    f = click.option("--rtol", type=Finite(0, 1), default=g.rtol, show_default=True)(f)
    return click.option("--atol", type=Finite(0, 1), default=g.atol, show_default=True)(f)


def gate_engine_options(f):
    """Which engine the gate runs an .onnx file in, and its float precision: the numbers judged are the ones that
    engine will produce when it serves the file (export and verify)."""
    from cnnkit.spec import ENGINES, INFERENCE_PRECISIONS

    g = _gate_defaults()
    f = shown(
        "--engine-precision",
        click.Choice(INFERENCE_PRECISIONS),
        g.engine_precision,
        "The engine's float arithmetic; bf16 (OpenVINO, on CPUs with AVX512-BF16 or AMX) is gated like fp16.",
    )(f)
    return shown(
        "--engine",
        click.Choice(ENGINES),
        g.engine,
        "Check the .onnx file as this engine runs it (openvino: the 'openvino' extra, CPU).",
    )(f)


def gate_from(**settings: Any) -> Any:
    """The one `Gate` of a command, from its options (atol, rtol, device, data_dir, min_agreement, ...)."""
    from cnnkit.export.compare import Gate

    return Gate(**settings)


def strict_json(data: Any) -> Any:
    """`data` with NaN and infinities as null, so what cnnkit prints or writes is always valid (RFC 8259) JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def dumps(data: Any) -> str:
    return json.dumps(strict_json(data), indent=2, default=str, allow_nan=False)


def emit_json(data: Any) -> None:
    click.echo(dumps(data))


ENGINE_HELP = (
    "What runs the model: onnxruntime, openvino (the 'openvino' extra; CPU), or auto: what `cnnkit optimize` "
    "measured fastest for this file on this CPU (runtime.json beside it), else onnxruntime."
)


def engine_options(extra: tuple[str, ...] = (), more_help: str = "") -> Callable[[Any], Any]:
    """--engine (with `extra` choices, e.g. serve's triton) and --streams, shared by predict, evaluate and serve."""
    from cnnkit.spec import ENGINES

    def decorate(f: Any) -> Any:
        f = click.option(
            "--streams",
            type=click.IntRange(1, 64),
            default=None,
            help="Split each batch over N parallel single-threaded executors (with --engine onnxruntime/openvino).",
        )(f)
        choices = click.Choice(("auto", *ENGINES, *extra))
        return click.option("--engine", type=choices, default="auto", show_default=True, help=ENGINE_HELP + more_help)(
            f
        )

    return decorate


TRUST_INT8 = click.option(
    "--trust-int8",
    is_flag=True,
    help="Run an INT8 file whose accuracy gate was recorded only on CPUs with other instruction-set flags, without "
    "re-checking it here (cnnkit verify FILE re-checks it and records this CPU).",
)


def engine_arg(engine: str, streams: int | None, requests: int | None = None) -> Any:
    """The runtime's `engine=` argument from --engine, --streams and (serve's) --requests."""
    if streams is None and requests is None:
        return engine
    if requests is not None and engine != "openvino":
        raise click.BadParameter(
            "--requests is OpenVINO's THROUGHPUT mode: give --engine openvino", param_hint="--requests"
        )
    if engine == "auto":
        raise click.BadParameter("--streams needs --engine onnxruntime or openvino", param_hint="--streams")
    if streams is not None and requests is not None:
        raise click.BadParameter("give --streams (one batch split) or --requests (batches in flight), not both")
    from cnnkit.runtime import EngineChoice

    return EngineChoice(engine=engine, streams=streams or 1, requests=requests or 1)


def make_classifier(model: str, device: str, **kwargs: Any) -> Any:
    """A runtime Classifier. The one rule for `--device`: cuda asked for and not given is an error (every command
    alike, with the reason and the fix); auto runs on the CPU where CUDA cannot. An engine record beside the model
    that does not apply is one `Warning:` line on stderr."""
    from cnnkit.runtime import Classifier
    from cnnkit.runtime.classifier import strict_fallback

    clf = Classifier(model, device=device, fallback=strict_fallback(device), **kwargs)
    if clf.plan.note:
        click.echo(f"Warning: {clf.plan.note}; engine auto runs onnxruntime", err=True)
    return clf


def runs_on_text(clf: Any) -> str:
    """'CPUExecutionProvider', or the engine plan: 'openvino (OpenVINO CPU, fp32)', 'onnx from batch 1, ...'."""
    plan = clf.runs_on()
    if len(plan) == 1 and plan[0]["engine"] == "onnxruntime" and plan[0]["streams"] == 1:
        return str(clf.providers[0])
    return ", ".join(f"{p['label']} ({p['precision_run']}) from batch {p['from_batch']}" for p in plan)


def arch_option(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """A click callback for `--arch`: the name checked by the one rule (`spec.arch_problem`); a user's
    `package.module:factory` named here is the one code cnnkit may import for this command (`train.nets.trust`)."""
    if value is None:
        return None
    from cnnkit.spec import arch_problem, is_user_arch

    problem = arch_problem(value)
    if problem:
        raise click.BadParameter(problem)
    if is_user_arch(value):
        from cnnkit.train import nets

        nets.trust(value)
    return value


#: `--arch` on the commands that rebuild a checkpoint's network (export, verify, bench, optimize): only to name the
#: user's own module the checkpoint records, since a path found in a file is never imported by itself
trust_arch = click.option(
    "--arch",
    "trusted_arch",
    default=None,
    expose_value=False,
    is_eager=True,
    callback=arch_option,
    metavar="PACKAGE.MODULE:FACTORY",
    help="The user's own network the checkpoint names: cnnkit imports that code only when it is given here.",
)
