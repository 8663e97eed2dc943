"""PyTorch's current deployment formats, beside ONNX and TorchScript: `torch.export`'s ExportedProgram (`model.pt2`,
dynamic batch, the metadata as its extra file `cnnkit.json`) and an AOTInductor package (`model.aoti.pt2`: the
program compiled ahead of time to a shared library for this machine's CPU or GPU, the metadata in the package's
`aot_inductor.metadata`, read back without loading the library).

An AOTInductor package runs only where its library was built for: the same operating system and machine, a CPU
with the instruction set it was compiled for (recorded as AOTI_CPU_ISA, checked before loading), libtorch of the
same version. Loading one loads native code: like TorchScript, a package is run only when named on the command
line.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from cnnkit import atomic, contract
from cnnkit.errors import CnnkitError, ModelFileError, first_line
from cnnkit.export.formats import quiet

EXTRA_FILE = contract.TS_EXTRA_FILE  # "cnnkit.json", the same name TorchScript files use
MAX_METADATA = 1 << 20
ISA_FLAGS = {"AVX512": "avx512f", "AVX2": "avx2"}  # AOTI_CPU_ISA -> the /proc/cpuinfo flag it needs


def exported_program(module: Any, example: Any) -> Any:
    """`torch.export.export` of the deployable wrapper with a dynamic batch dimension, or one line naming why not."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with quiet():
            return torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})
    except Exception as exc:  # torch.export's errors are long; the first line names the construct
        raise CnnkitError(f"torch.export failed: {first_line(exc)}") from None


def to_exported(module: Any, example: Any, meta: dict, path: Path) -> None:
    import torch

    program = exported_program(module, example)
    extra = {EXTRA_FILE: json.dumps(meta, sort_keys=True)}
    buffer = io.BytesIO()  # torch.export warns about a file whose name does not end in .pt2 (the atomic temp's)
    torch.export.save(program, buffer, extra_files=extra)
    atomic.write_bytes(path, buffer.getvalue())


def to_aoti(module: Any, example: Any, meta: dict, path: Path) -> None:
    """Compile with AOTInductor into a package at `path` (the compiler runs for a minute or so on a CPU)."""
    import torch

    program = exported_program(module, example)
    configs = {"aot_inductor.metadata": {contract.KEY: json.dumps(meta, sort_keys=True)}}
    try:
        with quiet():
            torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    except Exception as exc:
        raise CnnkitError(f"AOTInductor compilation failed: {first_line(exc)}") from None


def kind_of(path: Path) -> str:
    """'aoti' for an AOTInductor package, 'exported' for an ExportedProgram (both .pt2 zip archives)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "aoti" if any("/data/aotinductor/" in n for n in z.namelist()) else "exported"
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable .pt2 archive ({first_line(exc)})") from None


def metadata(path: Path) -> tuple[contract.ModelInfo, dict[str, Any]]:
    """The cnnkit metadata of a .pt2 file and (for a package) AOTInductor's own record, read without loading it."""
    try:
        with zipfile.ZipFile(path) as z:
            if kind_of(path) == "exported":
                name = next((n for n in z.namelist() if n.endswith("/extra/" + EXTRA_FILE)), None)
                return contract.ModelInfo.from_json(_read(z, name, path), str(path)), {}
            name = next((n for n in z.namelist() if n.endswith("wrapper_metadata.json")), None)
            record = json.loads(_read(z, name, path))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable .pt2 archive ({first_line(exc)})") from None
    if not isinstance(record, dict) or contract.KEY not in record:
        raise ModelFileError(f"{path}: AOTInductor package carries no cnnkit metadata")
    return contract.ModelInfo.from_json(record[contract.KEY], str(path)), record


def _read(z: zipfile.ZipFile, name: str | None, path: Path) -> bytes:
    if name is None:
        raise ModelFileError(f"{path}: .pt2 archive carries no cnnkit metadata")
    if z.getinfo(name).file_size > MAX_METADATA:
        raise ModelFileError(f"{path}: cnnkit metadata is implausibly large")
    return z.read(name)


def load(path: Path, device: Any) -> tuple[Any, contract.ModelInfo]:
    """A callable (uint8 images -> logits) for a .pt2 file on `device`, and its metadata."""
    import torch

    info, record = metadata(path)
    if not record:
        program = torch.export.load(str(path))
        return program.module().to(device), info
    check_package(path, record, device)
    try:
        with quiet():
            runner = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path}: the AOTInductor package does not load here: {first_line(exc)}") from None
    return runner, info


def check_package(path: Path, record: dict[str, Any], device: Any) -> None:
    """ModelFileError, before its library is loaded, when the package was built for another device or CPU."""
    from cnnkit.runtime.cpu import cpu_flags

    built_for = str(record.get("AOTI_DEVICE_KEY", "cpu"))
    if built_for != device.type:
        raise ModelFileError(f"{path}: an AOTInductor package built for {built_for}, not {device.type}")
    isa = str(record.get("AOTI_CPU_ISA", ""))
    need = ISA_FLAGS.get(isa.upper())
    if device.type == "cpu" and need and need not in cpu_flags():
        raise ModelFileError(f"{path}: compiled for {isa} CPUs; this CPU lacks {need} (export it again on this one)")
