"""`cnnkit serve --engine triton`: the model in a real Triton Inference Server, through NVIDIA's PyTriton.

PyTriton (`pip install 'cnnkit[triton]'`) bundles the Triton server binary and its Python backend. The server
takes the requests (HTTP and gRPC: the KServe V2 / Open Inference Protocol), batches them with Triton's dynamic
batcher and hands each batch to cnnkit's runtime `Classifier` in this process; metrics are Triton's own.

Needs: Linux x86-64, `numpy<2` (PyTriton 0.7 requires it), and a Python whose threading internals the Python
backend stub accepts: a venv made from the operating system's Python 3.11 works; a pyenv-built 3.11.7 fails in the
stub (`'_thread.RLock' object has no attribute '_recursion_count'`). docs/DEPLOY.md has the recipe.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, MissingExtraError, first_line
from cnnkit.runtime import Classifier
from cnnkit.serve.config import TritonEngineConfig
from cnnkit.triton_config import LABELS


def check_available() -> None:
    """One line saying why PyTriton cannot run here, or nothing."""
    if importlib.util.find_spec("pytriton") is None:
        raise MissingExtraError(
            "cnnkit serve --engine triton needs the 'triton' extra (nvidia-pytriton is not installed): "
            "pip install 'cnnkit[triton]' in a venv of the system's Python 3.11 (see docs/DEPLOY.md)"
        )
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise MissingExtraError(
            f"cnnkit serve --engine triton: PyTriton 0.7 needs numpy<2, this environment has numpy {np.__version__}; "
            "pip install 'numpy<2' (a separate venv is best, see docs/DEPLOY.md)"
        )


class TritonEngine:
    """Triton with the model bound: `serve()` blocks until a signal; `start()` and `close()` for embedding and tests."""

    def __init__(self, cfg: TritonEngineConfig):
        check_available()
        import numpy as np
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

        self.cfg = cfg
        self.classifier = Classifier(cfg.model, device=cfg.device)
        info = self.classifier.info
        self.model_name = cfg.model_name or info.serving_name
        spec = self.classifier.input_spec
        out_name = info.output_name
        clf = self.classifier

        def infer_batch(**inputs: Any) -> dict[str, Any]:
            return {out_name: clf.logits(inputs[info.input_name]).astype(np.float32, copy=False)}

        infer = batch(infer_batch)  # Triton's batch of requests -> one stacked array per input

        self._workspace = tempfile.TemporaryDirectory(prefix="cnnkit-triton-")
        triton_cfg = TritonConfig(
            http_address=cfg.host,
            http_port=cfg.http_port,
            grpc_address=cfg.host,
            grpc_port=cfg.grpc_port,
            metrics_address=cfg.host,
            metrics_port=cfg.metrics_port,
            log_verbose=cfg.log_verbose,
            log_file=Path(self._workspace.name) / "triton.log",
            strict_readiness=True,  # /v2/health/ready only while every model it knows is ready
        )
        security = _security(cfg.open_statistics, cfg.host)
        #: the token PyTriton requires (header `triton-access-token`) on the endpoints it restricts, or None
        self.access_token: str | None = getattr(security, "access_token", None)
        self.restricted: list[str] = list(getattr(security, "restricted_endpoints", None) or [])
        kwargs = {"security_config": security} if security is not None else {}
        # the model written to Triton's repository folder before the server starts (PyTriton's default loads it
        # through Triton's load API once the server is up): Triton loads it at start-up, so /v2/health/ready
        # (strict readiness) is 200 only once the model is, and the repository index lists it
        policy = TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True)
        workspace = Path(self._workspace.name) / "workspace"
        self._triton = Triton(config=triton_cfg, workspace=workspace, triton_lifecycle_policy=policy, **kwargs)
        with self._labelled():  # the repository's config.pbtxt is written here, at bind
            self._triton.bind(
                model_name=self.model_name,
                infer_func=infer,
                inputs=[Tensor(name=info.input_name, dtype=np.uint8, shape=(spec.channels, spec.height, spec.width))],
                outputs=[Tensor(name=out_name, dtype=np.float32, shape=(info.num_classes,))],
                config=ModelConfig(
                    max_batch_size=cfg.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=int(cfg.max_delay_ms * 1000)),
                ),
                strict=True,
            )

    @property
    def log_file(self) -> Path:
        return Path(self._workspace.name) / "triton.log"

    def start(self) -> None:
        """Start the server and wait until the model is ready (raises CnnkitError with Triton's reason if not)."""
        try:
            with self._labelled():
                self._triton.run()
        except Exception as exc:  # PyTriton raises its own exception types; the log says why
            raise CnnkitError(f"Triton did not start ({_reason(exc, self.log_file)})") from None

    def _labelled(self) -> contextlib.AbstractContextManager[None]:
        info = self.classifier.info
        return with_labels(self.model_name, info.output_name, info.classes)

    def serve(self) -> None:
        """Start and block until SIGINT or SIGTERM; then stop Triton, clean the workspace up and return.

        PyTriton stops cleanly on a KeyboardInterrupt (SIGINT) only; Docker, Kubernetes and systemd stop with
        SIGTERM, so SIGTERM is made to raise the same while serving."""
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            with self._labelled():
                self._triton.serve()
        except Exception as exc:
            raise CnnkitError(f"Triton stopped ({_reason(exc, self.log_file)})") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        try:
            self._triton.stop()
        finally:
            self._workspace.cleanup()


@contextlib.contextmanager
def with_labels(model_name: str, output_name: str, classes: tuple[str, ...]) -> Iterator[None]:
    """While Triton loads the model, its config names a labels file (one class per line, written beside it), so
    Triton's classification extension answers "score:index:label" as `cnnkit serve` and `export --format triton` do.

    PyTriton writes the model's config.pbtxt itself and offers no label option: its config generator and model
    writer are wrapped for this one model (a PyTriton without them serves answers without labels)."""
    try:
        from pytriton.model_config.generator import ModelConfigGenerator
        from pytriton.models.model import Model
    except ImportError:
        yield
        return
    get_config, generate_model = ModelConfigGenerator.get_config, Model.generate_model
    proxy_files = Model.get_proxy_model_files
    labels = "".join(f"{c}\n" for c in classes)

    def labelled_config(self: Any) -> dict[str, Any]:
        config: dict[str, Any] = get_config(self)
        if config.get("name") == model_name:
            for out in config.get("output", []):
                if out.get("name") == output_name:
                    out["label_filename"] = LABELS
        return config

    def generate_with_labels(self: Any, model_repository: Path) -> None:  # a model store on this disk
        generate_model(self, model_repository)
        if self.model_name == model_name:
            (Path(model_repository) / model_name / LABELS).write_text(labels)

    def files_with_labels(self: Any) -> dict[str, bytes]:  # files sent with the load request
        files: dict[str, bytes] = proxy_files(self)
        if self.model_name == model_name:
            files[f"file:{LABELS}"] = labels.encode()
        return files

    patched = (labelled_config, generate_with_labels, files_with_labels)
    ModelConfigGenerator.get_config, Model.generate_model, Model.get_proxy_model_files = patched
    try:
        yield
    finally:
        ModelConfigGenerator.get_config, Model.generate_model, Model.get_proxy_model_files = (
            get_config,
            generate_model,
            proxy_files,
        )


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _security(open_statistics: bool, host: str) -> Any:
    """PyTriton's access restriction (a random token on the statistics, repository, trace, logging and shared-memory
    APIs): none on a loopback address (only this machine's processes reach it, and Triton's own tools, perf_analyzer
    and tritonclient, send no token); elsewhere as PyTriton sets it, or with statistics open; None where this PyTriton
    predates it."""
    try:
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig
    except ImportError:
        return None
    if loopback(host):
        return TritonSecurityConfig(restricted_endpoints=[])  # PyTriton: an empty list restricts nothing
    endpoints = [e for e in DEFAULT_PROTECTED_ENDPOINTS if not (open_statistics and e == "statistics")]
    return TritonSecurityConfig(restricted_endpoints=endpoints)


def _reason(exc: BaseException, log: Path) -> str:
    try:
        errors = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("E")]
    except OSError:
        errors = []
    return (errors[-1] if errors else first_line(exc))[:300]
