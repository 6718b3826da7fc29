"""Nothing a user hands edgekit can run code or destroy data (issue 10, part 5).

Crafted ``.pt2`` files, ``--force`` on things that are not bundles, two builds into one folder, a
build killed by SIGKILL, read-only and full disks, a factory that exits.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import torch

from edgekit import outdir
from edgekit.errors import ModelSpecError, OutputBusyError
from edgekit.pt2 import load_exported_program


def edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, capture_output=True, text=True, timeout=1800)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, no traceback, exactly one ``edgekit: error:`` line holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]

BUILD = ["--target", "rpi4", "--latency-runs", "0"]
EXITS = '''
import sys
from tiny import factory as _factory

def exits():
    sys.exit(3)
'''


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile archive would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _leftovers(folder: Path, name: str = "out") -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


# ----------------------------------------------------------------------------- .pt2 archives
@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory) -> Path:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    path = tmp_path_factory.mktemp("pt2") / "plain.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.rand(1, 1, 8, 8),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> Path:
    """Copy the archive, replacing members by their name after the root folder."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        root = archive.namelist()[0].split("/", 1)[0]
        for info in archive.infolist():
            name = info.filename.split("/", 1)[1]
            out.writestr(info, replace.get(name, archive.read(info)))
        for name, data in (add or {}).items():
            out.writestr(f"{root}/{name}", data)
    return dst


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_plain_pt2_loads_with_its_sample_inputs(plain_pt2):
    program, example = load_exported_program(plain_pt2)
    assert [tuple(t.shape) for t in example] == [(1, 1, 8, 8)]
    assert tuple(program.module()(*example).shape) == (1, 10)


def test_pt2_without_sample_inputs_gets_inputs_from_its_specs(plain_pt2, tmp_path):
    bare = _rewrite(plain_pt2, tmp_path / "bare.pt2", {"data/sample_inputs/model.pt": b""})
    program, example = load_exported_program(bare)
    assert [(tuple(t.shape), t.dtype) for t in example] == [((1, 1, 8, 8), torch.float32)]
    assert tuple(program.module()(*example).shape) == (1, 10)


def test_crafted_pt2_sample_inputs_never_run(plain_pt2, tmp_path):
    marker = tmp_path / "MARKER"
    crafted = _rewrite(plain_pt2, tmp_path / "crafted.pt2", {"data/sample_inputs/model.pt": _pickled(((_Payload(marker),), {}))})
    # the payload is live: torch's own loader runs it (on a copy, with another marker)
    live = tmp_path / "LIVE"
    with contextlib.suppress(Exception):  # it runs the command, then fails on what os.system returned
        torch.export.load(str(_rewrite(plain_pt2, tmp_path / "live.pt2",
                                       {"data/sample_inputs/model.pt": _pickled(((_Payload(live),), {}))})))
    assert live.exists()
    result = edgekit("build", str(crafted), *BUILD, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "crafted.pt2", "sample inputs are not plain tensors", "posix.system")
    assert not marker.exists(), "the pickle in the archive ran"
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_pickled_weight_is_refused_before_torch_sees_it(plain_pt2, tmp_path):
    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(plain_pt2) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        config = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    crafted = _rewrite(plain_pt2, tmp_path / "weights.pt2", {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{first['path_name']}": _pickled(_Payload(marker))})
    with pytest.raises(ModelSpecError, match="stored as a pickle"):
        load_exported_program(crafted)
    assert not marker.exists()


@pytest.mark.parametrize("member, message", [
    ("data/aotinductor/model/model.so", "unexpected member 'data/aotinductor/model/model.so'"),
    ("data/weights/model.pt", "is a pickle (legacy format)"),
])
def test_archive_members_outside_a_plain_program_are_refused(plain_pt2, tmp_path, member, message):
    crafted = _rewrite(plain_pt2, tmp_path / "extra.pt2", {}, add={member: b"\x7fELF"})
    with pytest.raises(ModelSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_exported_program(crafted)


def _drop(src: Path, dst: Path, member: str) -> Path:
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for info in archive.infolist():
            if not info.filename.endswith(f"/{member}"):
                out.writestr(info, archive.read(info))
    return dst


def test_pt2_without_a_sample_inputs_member_loads(plain_pt2, tmp_path):
    program, example = load_exported_program(_drop(plain_pt2, tmp_path / "nosample.pt2", "data/sample_inputs/model.pt"))
    assert tuple(program.module()(*example).shape) == (1, 10)


@pytest.mark.parametrize("content", [b"not a zip at all", "broken json", "missing weight"])
def test_bad_pt2_is_one_line_without_torch_log(plain_pt2, tmp_path, content):
    bad = tmp_path / "bad.pt2"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content == "broken json":
        _rewrite(plain_pt2, bad, {"models/model.json": b"{\"graph_module\": 1}"})
    else:  # torch.export.load logs "Ran into the following error" with a traceback for this one
        _drop(plain_pt2, bad, "data/weights/weight_0")
    result = edgekit("build", str(bad), *BUILD, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "bad.pt2", "not a loadable exported program")
    assert "Ran into the following error" not in result.stderr and "WARNING" not in result.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- --force, --out
@pytest.mark.parametrize("kind", ["sources", "bad manifest", "file", "symlink"])
def test_force_replaces_only_a_bundle(kind, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep me")
    elif kind == "symlink":
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    else:
        out.mkdir()
        (out / "main.py").write_text("print('my code')\n")
        if kind == "bad manifest":
            (out / "manifest.json").write_text('{"artifacts": []}')  # no "schema"
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() and not out.is_symlink() else None
    result = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", str(out), "--force", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, str(out))
    assert "loading the model" not in result.stderr, "refused only after work started"
    if kind == "file":
        assert out.read_text() == "keep me"
    elif kind == "symlink":
        assert out.is_symlink() and list((tmp_path / "real").iterdir()) == []
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("out", [".", "..", "../.."])
def test_force_into_the_current_folder_or_a_parent_is_refused(out, tmp_path, tiny_model_file):
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    for folder in (cwd, cwd.parent, cwd.parent.parent):  # even when they look like bundles
        (folder / "manifest.json").write_text('{"schema": 1, "artifacts": []}')
    result = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", out, "--force", cwd=cwd)
    assert result.returncode == 2
    assert_one_line_error(result, "current folder or one of its parents")
    assert all((f / "manifest.json").is_file() for f in (cwd, cwd.parent, cwd.parent.parent))
    assert sorted(p.name for p in cwd.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("where", ["import", "factory"])
def test_model_that_calls_sys_exit_is_one_line(where, tmp_path, tiny_model_file):
    shutil.copy(tiny_model_file, tmp_path / "tiny.py")
    model = tmp_path / "exits.py"
    model.write_text(EXITS if where == "factory" else "import sys\nsys.exit(3)\n")
    result = edgekit("build", f"{model}:exits", *BUILD, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "sys.exit(3)")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- lock and staging
def test_lock_is_exclusive_and_removed_after(tmp_path):
    out = tmp_path / "out"
    with outdir.locked(out):
        assert (tmp_path / ".out.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            with outdir.locked(out):
                pass
    assert not (tmp_path / ".out.lock").exists()
    with outdir.locked(out):  # free again
        pass


def test_stale_staging_is_removed_only_when_its_owner_is_gone(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = outdir.make_staging(out)
    gone = tmp_path / ".out.tmp-gone"
    (gone / "bundle").mkdir(parents=True)
    (gone / outdir.OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "started": None}))
    other = tmp_path / ".other.tmp-x"  # another --out's staging is none of our business
    other.mkdir()
    assert outdir.remove_stale(out) == [gone]
    assert mine.is_dir() and other.is_dir() and not gone.exists()
    assert json.loads((mine / outdir.OWNER_FILE).read_text())["pid"] == os.getpid()
    assert {p.name for p in mine.iterdir()} == {"bundle", "scratch", outdir.OWNER_FILE}


def _start_build(model: str, out: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgekit", "build", model, *BUILD, "--out", str(out), *extra],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, limit_s: float = 900.0):
    """Poll until ``condition()`` is truthy; the build must still be running meanwhile."""
    waited = 0.0
    while not (value := condition()):
        assert proc.poll() is None, f"the build ended before {what}: {proc.communicate()}"
        assert waited < limit_s, f"no {what} after {limit_s} s"
        time.sleep(0.2)
        waited += 0.2
    return value


def _wait_until(condition, message: str, limit_s: float = 120.0) -> None:
    """Poll ``condition``; a converter gets SIGKILL from the kernel when the build dies, so the
    limit is only there to end a failing test."""
    waited = 0.0
    while not condition():
        assert waited < limit_s, message
        time.sleep(0.2)
        waited += 0.2


def _staging(folder: Path) -> list[Path]:
    return sorted(folder.glob(".out.tmp-*"))


@pytest.mark.slow
def test_second_concurrent_build_is_refused_and_the_first_finishes(tmp_path, tiny_model_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"schema": 1, "artifacts": []}')  # an earlier bundle: --force replaces it
    first = _start_build(f"{tiny_model_file}:factory", out, tmp_path, "--force")
    (staging,) = _wait_for(lambda: _staging(tmp_path), first, "staging folder")
    second = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", str(out), "--force", cwd=tmp_path)
    assert second.returncode == 2
    assert_one_line_error(second, "another edgekit build", f"pid {first.pid}", str(out))
    assert staging.is_dir() and json.loads((out / "manifest.json").read_text())["artifacts"] == []
    stdout, stderr = first.communicate(timeout=1800)
    assert first.returncode == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == 4 and manifest["golden"]["sha256"]
    assert _leftovers(tmp_path) == []


def _converters(build: psutil.Process) -> list[psutil.Process]:
    """The build's converter children (isolated.run_tool starts ``python -c ...``)."""
    try:
        return [p for p in build.children(recursive=True) if "-c" in p.cmdline()[1:3]]
    except psutil.Error:
        return []


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_sigkilled_build_leaves_only_staging_and_its_converters_die(tmp_path, tiny_model_file):
    out = tmp_path / "out"
    victim = _start_build(f"{tiny_model_file}:factory", out, tmp_path)
    converters = _wait_for(lambda: _converters(psutil.Process(victim.pid)), victim, "converter child")
    (staging,) = _staging(tmp_path)
    assert json.loads((staging / outdir.OWNER_FILE).read_text())["pid"] == victim.pid
    assert (staging / "scratch" / "onnx2tf").is_dir(), "scratch lives inside staging"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    _wait_until(lambda: all(_gone(p) for p in converters), "a converter outlived the killed build")
    assert not out.exists()
    assert set(_leftovers(tmp_path)) <= {staging.name, ".out.lock"} and staging.is_dir()
    again = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(json.loads((out / "manifest.json").read_text())["artifacts"]) == 4
    assert _leftovers(tmp_path) == [], "the dead build's staging folder was not removed"


# ----------------------------------------------------------------------------- read-only and full disks
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root); skipped elsewhere, but CI must be able to run it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs ({done.stderr.strip()}): run as root to test read-only and full disks"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("out", ["out", "dist/out"])  # the parent exists / must be created
def test_read_only_out_parent_is_refused_before_any_work(out, small_disk, tmp_path, tiny_model_file):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", str(small_disk / out), cwd=tmp_path)
    assert_one_line_error(result, str(small_disk), "read-only file system")
    assert "loading the model" not in result.stderr
    assert list(small_disk.iterdir()) == []


def _fill(disk: Path, leave: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    assert shutil.disk_usage(disk).free <= leave


@pytest.mark.parametrize("free_kib", [0, pytest.param(40, marks=pytest.mark.slow), pytest.param(250, marks=pytest.mark.slow),
                                      pytest.param(310, marks=pytest.mark.slow)])
def test_full_disk_is_one_line_and_keeps_the_earlier_bundle(free_kib, small_disk, tmp_path, tiny_model_file):
    out = small_disk / "out"
    out.mkdir()
    earlier = {"manifest.json": b'{"schema": 1, "artifacts": []}', "model_fp32.tflite": b"earlier bytes"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    _fill(small_disk, free_kib * 1024)
    result = edgekit("build", f"{tiny_model_file}:factory", *BUILD, "--out", str(out), "--force", cwd=tmp_path)
    assert_one_line_error(result, f"the disk holding {small_disk}", "is full", "no earlier bundle was touched")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "out"], "half-written files left behind"
    stages = [line for line in result.stderr.splitlines() if line.startswith("[")]
    print(f"free {free_kib} KiB: failed after {stages[-1] if stages else 'no stage'}")
