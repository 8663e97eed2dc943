"""`cnnkit bench`: the torch backends need the `train` extra; `--backends onnx` on an .onnx file does not."""

from __future__ import annotations

import sys

import click

from cnnkit.bench.options import BACKENDS, BenchConfig, OptimizeOptions
from cnnkit.cli.common import (
    Finite,
    check_destinations,
    gate_from,
    gate_options,
    int_list,
    progress_for,
    require,
    show_report,
    shown,
    trust_arch,
)
from cnnkit.spec import BENCH_DEVICES

BENCH, OPT = BenchConfig(), OptimizeOptions()  # every default below is the library's: one source


def _sizes(sizes: tuple[int, ...]) -> str:
    return ",".join(map(str, sizes))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--device", type=click.Choice(BENCH_DEVICES), default=BENCH.device, show_default=True)
@click.option(
    "--backends",
    default=None,
    help=f"Comma-separated: {', '.join(BACKENDS)}. Default: eager,torchscript,onnx, and openvino on the CPU where it "
    "is installed.",
)
@click.option(
    "--streams",
    default=_sizes(BENCH.streams),
    show_default=True,
    callback=int_list,
    help="onnx/openvino rows for each count of parallel single-threaded streams, e.g. 1,2.",
)
@click.option(
    "--requests",
    default=_sizes(BENCH.requests),
    show_default=True,
    callback=int_list,
    help="openvino rows in OpenVINO's THROUGHPUT mode for each count of requests in flight beyond 1 (e.g. 1,2), "
    "each step timing that many batches run at once, as concurrent callers (serve) send them.",
)
@click.option("--batch-sizes", default=_sizes(BENCH.batch_sizes), show_default=True, callback=int_list)
@click.option(
    "--warmup", type=click.IntRange(1, 1_000_000), default=BENCH.warmup, show_default=True, help="Untimed iterations."
)
@click.option(
    "--iters", type=click.IntRange(1, 10_000_000), default=None, help="Timed iterations per backend and batch."
)
@shown(
    "--min-time", Finite(min=0.01), BENCH.min_time, "Timed seconds per backend and batch (when --iters is not given)."
)
@click.option(
    "--threads", type=click.IntRange(1, 512), default=None, help="CPU threads for every backend (default: all cores)."
)
@click.option(
    "--tf32/--no-tf32",
    default=BENCH.tf32,
    show_default=True,
    help="CUDA: allow TF32 math in every backend (torch and ONNX Runtime alike).",
)
@click.option(
    "--trust-torchscript",
    is_flag=True,
    help="Load a run folder's model.ts (TorchScript runs code when loaded); by default one is exported afresh.",
)
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Write results as JSON ('-': stdout)."
)
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), default=None, help="Write results as CSV.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot.")
@trust_arch
def bench(
    paths,
    device,
    backends,
    streams,
    requests,
    batch_sizes,
    warmup,
    iters,
    min_time,
    threads,
    tf32,
    trust_torchscript,
    json_file,
    csv_file,
    plot_file,
):
    """Benchmark eager vs TorchScript vs ONNX Runtime (latency percentiles, images/s).

    A TorchScript (.ts) file runs code when loaded: one found in a run folder is never loaded (a fresh one is
    exported from the checkpoint) unless --trust-torchscript; a .ts file named here is trusted because you named it.
    """
    from cnnkit.bench import report
    from cnnkit.bench.run import bench as run_bench
    from cnnkit.cli.render import render_bench

    names = () if backends is None else tuple(b.strip() for b in backends.split(",") if b.strip())
    if backends is not None and not names:
        raise click.BadParameter(f"no backend named in {backends!r}", param_hint="--backends")
    config = BenchConfig(
        device=device,
        backends=names,
        batch_sizes=batch_sizes,
        warmup=warmup,
        iters=iters,
        min_time=min_time,
        threads=threads,
        streams=streams,
        requests=requests,
        tf32=tf32,
        trust_torchscript=trust_torchscript,
    )
    check_destinations(json_file, csv_file, plot_file)  # before the minutes of measuring
    result = run_bench(list(paths), config, progress_for(json_file))
    show_report(result, json_file, render_bench)
    if csv_file:
        report.write_csv(result, csv_file)
    if plot_file:
        report.plot(result.to_dict(), plot_file)
    fell_back = sorted({r.backend for r in result.rows if r.fell_back})
    if fell_back:  # cuda asked for and not given: an error, as in every command (the rows say why)
        click.echo(f"Error: {', '.join(fell_back)} ran on the CPU, not CUDA: they are not CUDA results", err=True)
        sys.exit(1)
    failed = sorted({r.backend for r in result.failed})
    if failed:  # the other backends' results are written above; the exit code still says something broke
        click.echo(f"Error: backend(s) {', '.join(failed)} failed (see the FAILED rows)", err=True)
        sys.exit(1)


@click.command()
@click.argument("run", type=click.Path())
@click.option("--device", type=click.Choice(BENCH_DEVICES), default=OPT.device, show_default=True)
@click.option("--batch-sizes", default=_sizes(OPT.batch_sizes), show_default=True, callback=int_list)
@shown("--min-time", Finite(min=0.01), OPT.min_time, "Timed seconds per variant and batch.")
@click.option("--select", is_flag=True, help="Copy the fastest passing ONNX variant at --target-batch to model.onnx.")
@click.option("--target-batch", type=click.IntRange(1, 65_536), default=OPT.target_batch, show_default=True)
@click.option(
    "--aoti/--no-aoti",
    default=OPT.aoti,
    show_default=True,
    help="Also an AOTInductor package among the torch-side candidates (compiled here: about a minute).",
)
@gate_options
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON ('-': stdout)."
)
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot.")
@trust_arch
def optimize(run, device, batch_sizes, min_time, select, target_batch, aoti, json_file, plot_file, **gates):
    """Export every variant (ONNX fp32, folded, INT8, fp16 on CUDA; torch-side TorchScript, torch.export and, with
    --aoti, AOTInductor), verify, benchmark side by side, name the fastest per batch size. --select places the
    fastest ONNX variant (the torch-free runtime's) as model.onnx."""
    require("torch", "onnx")
    from cnnkit.bench import report
    from cnnkit.bench.optimize import optimize as run_optimize
    from cnnkit.cli.render import render_optimize

    options = OptimizeOptions(
        batch_sizes=batch_sizes,
        min_time=min_time,
        select=select,
        target_batch=target_batch,
        aoti=aoti,
        gate=gate_from(device=device, **gates),
    )
    check_destinations(json_file, plot_file)  # before the minutes of exporting and measuring
    result = run_optimize(run, options, progress_for(json_file))
    show_report(result, json_file, render_optimize)
    if plot_file and result.bench is not None:
        report.plot(result.bench.to_dict(), plot_file)
    if result.bench is None:
        click.echo("Error: no candidate passed its check; nothing was benchmarked", err=True)
        sys.exit(1)
