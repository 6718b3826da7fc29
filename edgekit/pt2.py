"""Load a ``.pt2`` exported program without unpickling anything.

``torch.export.load`` unpickles in several places: sample inputs (``weights_only=True`` first, then
a silent fallback to ``weights_only=False``, which runs whatever the pickle says), weights and
constants saved "with pickle", custom and opaque objects, the 2.7-era legacy format, and AOTInductor
packages (shared libraries). So the archive is checked member by member first: only the graph
(JSON), raw tensor payloads described by JSON configs, and metadata are accepted. The sample inputs
are taken out before torch sees the archive and read here with ``weights_only=True`` only; an
archive without them gets example inputs made from the program's own input specs.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from edgekit.errors import ModelSpecError

_HINT = "save it with torch.export.save(torch.export.export(model, args), path)"
_UNSAFE_HINT = "edgekit loads only plain exported programs; re-save it with torch.export.save from a trusted model"
# members of a plain torch.export.save archive, relative to its root folder
_METADATA = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_FOLDERS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")


def _refuse(path: Path, why: str, hint: str = _UNSAFE_HINT) -> ModelSpecError:
    return ModelSpecError(f"{path} is not a plain exported program: {why}", hint)


def _read_records(path: Path) -> dict[str, bytes]:
    """The archive's members by name relative to its root, each allowed by :data:`_METADATA` or
    :data:`_FOLDERS`; anything else (AOTInductor, ExecuTorch, legacy files) is refused."""
    if not zipfile.is_zipfile(path):
        raise ModelSpecError(f"{path} is not a loadable exported program: not a zip archive", _HINT)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            roots = {i.filename.split("/", 1)[0] for i in infos}
            if len(roots) != 1 or any("/" not in i.filename for i in infos):
                raise _refuse(path, "its members are not in one root folder", _HINT)
            records = {i.filename.split("/", 1)[1]: archive.read(i) for i in infos}
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise ModelSpecError(f"{path} is not a loadable exported program: {type(exc).__name__}: {exc}", _HINT) from None
    if records.get("archive_format") != b"pt2" or "models/model.json" not in records:
        raise ModelSpecError(f"{path} is not a loadable exported program: no archive_format 'pt2' or models/model.json "
                             "(an older or different format)", _HINT)
    for name in records:
        if name not in _METADATA and not name.startswith(_FOLDERS):
            raise _refuse(path, f"unexpected member {name!r}")
        if name.endswith(".pt") and not name.startswith("data/sample_inputs/"):
            raise _refuse(path, f"{name} is a pickle (legacy format)")
    return records


def _check_payloads(path: Path, records: dict[str, bytes]) -> None:
    """Every weight and constant must be a raw tensor payload, never a pickle or an object."""
    for name, data in records.items():
        if not (name.startswith(("data/weights/", "data/constants/")) and name.endswith("_config.json")):
            continue
        try:
            config = json.loads(data)["config"]
            entries = list(config.items())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _refuse(path, f"{name} is not a payload config") from None
        for fqn, meta in entries:
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                raise _refuse(path, f"{fqn!r} in {name} is stored as a pickle")
            if name.startswith("data/constants/") and not str(meta.get("path_name", "")).startswith("tensor_"):
                raise _refuse(path, f"constant {fqn!r} is a Python object, not a tensor")


def _sample_inputs(path: Path, data: bytes) -> tuple | None:
    """The archive's example args, read with ``weights_only=True``: tensors only, or refused."""
    import torch

    if not data:
        return None
    try:
        args, kwargs = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # the restricted unpickler names the global it refused
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0])[:160]
        raise _refuse(path, f"its sample inputs are not plain tensors ({reason})") from None
    if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        return None  # keyword or non-tensor inputs: example inputs come from the input specs
    return tuple(args)


def _specs_example(program: Any) -> tuple:
    """Example inputs made from the program's own placeholders (static shapes only)."""
    import torch

    names = set(program.graph_signature.user_inputs)
    example = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            value = node.meta.get("val")
            try:
                shape = tuple(int(d) for d in value.shape)
            except (AttributeError, TypeError, ValueError):
                return ()  # dynamic or non-tensor input: the user gives --input
            example.append(torch.rand(shape).to(value.dtype) if value.dtype.is_floating_point
                           else torch.zeros(shape, dtype=value.dtype))
    return tuple(example)


def _repack(records: dict[str, bytes]) -> io.BytesIO:
    """The checked archive without its sample inputs, in memory, for ``torch.export.load``."""
    buffer = io.BytesIO()
    records = {**records, "data/sample_inputs/model.pt": b""}  # torch needs the member, empty is "none"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(f"archive/{name}", b"" if name.startswith("data/sample_inputs/") else data)
    buffer.seek(0)
    return buffer


def load_exported_program(path: Path) -> tuple[Any, tuple]:
    """``(program, example_args)`` from ``path``; raises ModelSpecError for anything unsafe or broken."""
    import torch

    from edgekit.isolated import captured

    records = _read_records(path)
    _check_payloads(path, records)
    sample = _sample_inputs(path, records.get("data/sample_inputs/model.pt", b""))
    try:
        with captured():  # torch logs its own tracebacks for bad archives: not for the user's terminal
            program = torch.export.load(_repack(records))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ModelSpecError(f"{path} is not a loadable exported program: {type(exc).__name__}: {reason}", _HINT) from None
    return program, sample if sample is not None else _specs_example(program)
