"""Human-readable rendering of result dataclasses. Computing lives elsewhere; `--json` bypasses this."""

from __future__ import annotations

from typing import Any


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain aligned text table. `align` is one char per column, 'l' or 'r' (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def weights_line(fitted: dict) -> str:
    """`model.pth: 60 tensors loaded; fresh: fc.weight, fc.bias` (train.nets.weights.Fitted, as a dict)."""
    line = f"{fitted['source']}: {fitted['loaded']} tensors loaded"
    if fitted["adapted"]:
        line += f", {len(fitted['adapted'])} adapted to the input's channels ({', '.join(fitted['adapted'])})"
    if fitted["fresh"]:
        fresh = fitted["fresh"]
        line += f"; fresh: {', '.join(fresh[:4])}" + (f" and {len(fresh) - 4} more" if len(fresh) > 4 else "")
    return line


def render_train(r) -> str:
    from cnnkit.train.tune import describe

    lines = []
    if r.epochs:
        rows = [
            [
                e.epoch,
                f"{e.train_loss:.4f}",
                f"{e.train_accuracy:.2%}",
                "-" if e.val_accuracy is None else f"{e.val_accuracy:.2%}",
                f"{e.test_loss:.4f}",
                f"{e.test_accuracy:.2%}",
                f"{e.seconds:.1f}",
                f"{e.images_per_s:,.0f}",
            ]
            for e in r.epochs
        ]
        head = ["epoch", "train loss", "train acc", "val acc", "test loss", "test acc", "s", "img/s"]
        lines.append(table(head, rows))
        lines.append("")
        val = f"; validation {r.val_accuracy:.2%} ({r.val_size:,} held-out training images)" if r.val_size else ""
        kept = f"epoch {r.best_epoch} (best on validation): " if r.best_epoch != r.epochs[-1].epoch else ""
        lines.append(
            f"{kept}test accuracy {r.test_accuracy:.2%} on {r.dataset['name']} ({r.dataset['test_size']:,} images){val}"
        )
        if r.started_from:
            lines.append(f"started from {weights_line(r.started_from)}")
        if r.tuning:
            scores = ", ".join(f"{t['name']} {t['val_accuracy']:.2%}" for t in r.tuning["trials"])
            chosen = describe(r.tuning["settings"])
            lines.append(f"recipe {r.tuning['chosen']!r} ({chosen}), chosen on validation (trials: {scores})")
        if r.stopped_early:
            lines.append(f"stopped early after epoch {r.epochs[-1].epoch}: no better validation accuracy since")
        procs = f", {r.world_size} processes" if r.world_size > 1 else ""
        lines.append(
            f"device {r.device}{procs}, {r.precision} ({r.precision_reason}); {r.elapsed_s:.1f} s total, "
            f"{r.images_per_s:,.0f} train img/s"
        )
    if r.interrupted:
        lines.append(
            "interrupted: " + (f"kept epoch {r.best_epoch}" if r.epochs else "no epoch completed, nothing saved")
        )
    if r.resumed_from_epoch is not None:
        lines.append(f"resumed after epoch {r.resumed_from_epoch}")
    if r.checkpoint:
        lines.append(f"checkpoint {r.checkpoint}")
    if r.curves:
        lines.append(f"curves {r.curves}")
    return "\n".join(lines)


def _num(x: float) -> str:
    return "-" if x != x else f"{x:.2e}"  # NaN -> "-"


def render_parity(r) -> str:
    rows = []
    for b in r.backends:
        if b.gate is not None:
            g = b.gate
            rows.append(
                [
                    f"{b.backend} ({b.variant})",
                    b.ran_on,
                    "real test split (gated)",
                    g.images,
                    _num(g.max_abs),
                    "-",
                    f"{g.agreement:.1%}",
                    "ok" if b.passed else "FAIL",
                ]
            )
            continue
        if b.error and not b.cases:
            rows.append([b.backend, b.ran_on, "-", "-", "-", "-", "-", "FAIL"])
            continue
        for c in b.cases:
            rows.append(
                [
                    b.backend,
                    b.ran_on,
                    c.case,
                    c.batch,
                    _num(c.max_abs),
                    _num(c.max_rel),
                    f"{c.top1_agreement:.1%}",
                    "ok" if c.passed else "FAIL",
                ]
            )
    lines = [
        f"reference: eager PyTorch on {r.device} from {r.reference}",
        f"tolerance: |out - ref| <= {r.atol:g} + {r.rtol:g} * |ref|",
        "",
        table(["backend", "ran on", "input", "batch", "max abs", "max rel", "top-1 agree", "result"], rows, "llllrrrl"),
        "",
    ]
    for b in r.backends:
        status = "PASS" if b.passed else "FAIL"
        detail = f" ({b.error})" if b.error else ""
        failed = [c for c in b.cases if not c.passed]
        if failed and not b.error:
            detail = " (" + "; ".join(f"{c.case}: {c.error or 'outside tolerance'}" for c in failed[:3]) + ")"
        if b.gate is not None:
            g = b.gate
            lines.append(
                f"{status} {b.backend} {b.variant} {b.artefact}: top-1 agreement {g.agreement:.2%} "
                f"(gate >= {g.min_agreement:.2%}), accuracy {g.accuracy:.2%} vs fp32 {g.reference_accuracy:.2%} "
                f"({g.accuracy_change:+.2f} points, gate >= -{g.max_accuracy_drop:g}), max logit error "
                f"{_num(g.max_abs)}{detail}"
            )
        else:
            lines.append(f"{status} {b.backend} {b.artefact}: max abs error {_num(b.max_abs)}{detail}")
        if b.nodes:
            lines.append(
                "  nodes: " + "; ".join(f"{ep} {len(n)} ({', '.join(sorted(set(n)))})" for ep, n in b.nodes.items())
            )
    lines += [f"note: {n}" for n in r.notes]
    lines.append("parity: " + ("PASS" if r else "FAIL"))
    return "\n".join(lines)


def render_export(r) -> str:
    lines = []
    if r.parity is not None:
        lines += [render_parity(r.parity), ""]
    if r.artefacts:
        for fmt, path in r.artefacts.items():
            lines.append(f"wrote {fmt}: {path}")
        lines.append(f"exported in {r.seconds:.1f} s" + (f" (ONNX opset {r.opset})" if r.opset else ""))
    else:
        lines.append("export FAILED parity: no artefact written")
    lines += [f"FAILED {fmt}: {why}" for fmt, why in r.failed.items()]
    return "\n".join(lines)


def render_predict(r) -> str:
    rows = []
    for p in r.results:
        if p.error:
            rows.append([p.file, "ERROR", "-", "-", ""])
            continue
        others = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in p.top_k[1:])
        rows.append([p.file, p.label, f"{p.probability:.1%}", "yes" if p.inverted else "no", others])
    out = table(["file", "label", "prob", "inverted", "next"], rows, "llrll")
    return out + f"\nmodel {r.model} (version {r.model_version}) on {r.engine} ({r.providers[0]}, {r.precision})"


def render_doctor(r) -> str:
    t, g, o, s = r.torch, r.gpu, r.onnxruntime, r.cuda_session
    lines = [
        f"python        {r.python} on {r.platform}",
        f"torch         {t.get('version')} (CUDA build {t.get('cuda_build') or 'none'}, "
        f"cuDNN {t.get('cudnn') or '-'}, cuda available: {t.get('cuda_available')})",
        "gpu           "
        + (f"{g.get('name', 'visible')} (driver {g.get('driver', '?')})" if g["visible"] else "none visible"),
        f"onnxruntime   {o['version']} {o['packages']} device {o['device']}",
        f"providers     {', '.join(o['available_providers'])}",
        *([f"              ({o['note']})"] if o.get("note") else []),
        "cuda session  "
        + (
            "not attempted: " + str(s["error"])
            if not s["attempted"]
            else ("OK, ran on " + s["providers"][0])
            if s["ok"]
            else f"FAILED ({s['error']}); ran on {s['providers'][:1] or 'nothing'}"
        ),
    ]
    e = r.engines
    ov = f"{e['openvino']} (CPU: {', '.join(e['openvino_cpu'])})" if e.get("openvino") else "not installed"

    def routes(plan: list[dict]) -> str:
        def one(a: dict) -> str:
            in_flight = f" {a['requests']} in flight" if a.get("requests") else ""
            return f"{a['engine']} x{a['streams']} {a['precision']}{in_flight} from batch {a['from_batch']}"

        return ", ".join(one(a) for a in plan)

    auto = e.get("auto")
    if isinstance(auto, list):
        auto = routes(auto) + f" ({e['auto_source']})" + (f"; {e['auto_note']}" if e.get("auto_note") else "")
    lines += [f"engines       onnxruntime {e.get('onnxruntime')}, openvino {ov}", f"engine auto   {auto}"]
    if e.get("auto_serving"):
        lines.append(f"serving       {routes(e['auto_serving'])} (batches in flight)")
    if e.get("int8_gate"):
        lines.append(f"int8 gate     {e['int8_gate']}")
    lines += [f"note: {p}" for p in r.problems]
    if r.fix:
        lines.append(f"fix: {r.fix}")
    lines.append("doctor: " + ("OK" if r.ok else "PROBLEM"))
    return "\n".join(lines)


def render_bench(r) -> str:
    rows = []
    for row in r.rows:
        if row.error:
            rows.append([row.backend, row.batch_size, row.ran_on, "FAILED", "", "", "", "", "", "", 0])
            continue
        st = row.latency
        dev = f"{row.device_latency.p50_ms:.3f}" if row.device_latency else "-"
        speed = f"{row.speedup_vs_eager:.2f}x" if row.speedup_vs_eager else "-"
        rows.append(
            [
                row.backend + (" (FELL BACK)" if row.fell_back else ""),
                row.batch_size,
                row.ran_on,
                f"{st.p50_ms:.3f}",
                f"{st.p90_ms:.3f}",
                f"{st.p99_ms:.3f}",
                f"{st.mean_ms:.3f}",
                dev,
                f"{row.images_per_s:,.0f}",
                speed,
                st.n,
            ]
        )
    env = r.environment
    head = f"device {r.device}: " + (f"{env['gpu']} (driver {env.get('gpu_driver')}), " if env.get("gpu") else "")
    torch = env["torch"] or "not installed"
    head += f"{env['cpu']}, {env['threads']} threads; torch {torch}, onnxruntime {env['onnxruntime']}"
    out = [
        head,
        table(
            [
                "backend",
                "batch",
                "ran on",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "mean ms",
                "dev p50",
                "img/s",
                "vs eager",
                "n",
            ],
            rows,
            "lrlrrrrrrrr",
        ),
    ]
    for backend, ops in r.node_assignment.items():
        out.append(
            f"{backend} nodes: " + "; ".join(f"{ep} {len(n)} ({', '.join(sorted(set(n)))})" for ep, n in ops.items())
        )
    out += [f"note: {n}" for n in r.notes]
    failed = {row.backend: row.error for row in r.rows if row.error}
    out += [f"FAILED {b}: {why}" for b, why in failed.items()]
    return "\n".join(out)


def render_evaluate(r) -> str:
    rows = [[c.label, c.images, "-" if c.accuracy is None else f"{c.accuracy:.2%}"] for c in r.per_class]
    width = max(len(c.label) for c in r.per_class)
    head = " " * (width + 2) + " ".join(f"{c.label[:5]:>5}" for c in r.per_class)
    matrix = [head] + [
        f"{c.label:>{width}}  " + " ".join(f"{v:5d}" for v in row) for c, row in zip(r.per_class, r.confusion)
    ]
    return "\n".join(
        [
            table(["class", "images", "accuracy"], rows),
            "",
            "confusion (rows: true class, columns: predicted)",
            *matrix,
            "",
            f"accuracy {r.accuracy:.2%} on {r.images:,} {r.dataset} {r.split} images; model {r.model} "
            f"({r.variant}, version {r.model_version}) on {r.engine} ({r.providers[0]}, {r.precision}), "
            f"{r.seconds:.2f} s",
        ]
    )


def _decisions(what: str, winners: dict[int, str], decisions: dict[int, Any]) -> list[str]:
    """A line per batch size: the route chosen, why (a tie kept the simpler one), on how many rounds."""
    lines = []
    for bs, name in winners.items():
        decision = decisions.get(bs)
        rounds = f" (medians of {decision.rounds} alternated rounds)" if decision is not None else ""
        why = decision.describe().removeprefix(decision.chosen) if decision is not None else ""
        lines.append(f"{what} {bs}: {name}{why}{rounds}")
    return lines


def render_optimize(r) -> str:
    rows = [
        [c.name, "PASS" if c.passed else ("skip" if c.check.startswith("skipped") else "FAIL"), c.check, c.file or "-"]
        for c in r.candidates
    ]
    lines = [
        f"candidates for {r.checkpoint} on {r.device}",
        table(["candidate", "check", "measured", "file"], rows, "llll"),
        "",
    ]
    if r.engine_checks:
        checks = [[c.candidate, c.choice, "PASS" if c.passed else "FAIL", c.check] for c in r.engine_checks]
        lines += [
            "each ONNX candidate as the other engines run it",
            table(["candidate", "engine", "check", "measured"], checks, "llll"),
            "",
        ]
    if r.bench is not None:
        lines += [render_bench(r.bench), ""]
        lines += _decisions("fastest at batch", r.winners, r.decisions)
        differs = {bs: n for bs, n in r.in_flight_winners.items() if n != r.winners.get(bs)}
        lines += _decisions("with batches in flight (serve), fastest at batch", differs, r.in_flight_decisions)
        lines += [f"engine record for {name}: {path} (read by --engine auto)" for name, path in r.records.items()]
    if r.selected:
        lines.append(
            f"selected {r.selected} (fastest passing ONNX variant at batch {r.target_batch}) -> {r.selected_file}"
        )
    return "\n".join(lines)
