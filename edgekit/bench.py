"""``edgekit bench``: run a bundle's own device runner here or on devices over SSH.

Locally the bundle's ``edgekit_runner.py`` runs in a fresh interpreter (``sys.executable``). On a
device (``user@host[:port]``) only the OpenSSH client is used: see :mod:`edgekit.ssh` for the
connections it makes and the SSH options it enforces. Several hosts run in parallel.
Every failure becomes one :class:`~edgekit.errors.BenchError` naming the host and the fix.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgekit.errors import BenchError
from edgekit.report import table
from edgekit.runner_report import RUNNER, annotate, parse_report
from edgekit.ssh import SshOptions, check_ssh_files, parse_host, run_remote

LOCAL = "local"


# ----------------------------------------------------------------------------- public API
def bench(bundle: Path, *, hosts: Sequence[str] = (), runner_args: Sequence[str] = (), identity: Path | None = None,
          known_hosts: Path | None = None, python: str = "python3", timeout: float = 1800) -> list[dict]:
    """Run ``bundle``'s device runner locally (no ``hosts``) or on each host, in parallel.

    Returns one runner report (the runner's JSON) per host, in the order given, each annotated
    with ``host`` (``"local"`` here), ``exit_code`` (the runner's), ``passed`` (every artifact ran
    and met its tolerance), ``started_at`` / ``wall_s`` and, for devices, ``remote_dir`` (removed
    again). ``python`` is the device's interpreter; a local run uses this one (``sys.executable``).
    ``timeout`` bounds each step (copy, run) in seconds.
    A failed correctness check is a result (``passed`` false), not an exception.

    Raises :class:`BenchError` when a run gives no result (bad bundle, SSH, missing python...);
    with several hosts every host still runs, and the error lists each failed host and keeps
    the others' reports in ``error.results``.
    """
    bundle = check_bundle(Path(bundle))
    args = _check_runner_args(runner_args)
    if not hosts:
        return [run_local(bundle, args, timeout=timeout)]
    options = check_ssh_files(SshOptions(identity=identity, known_hosts=known_hosts))
    for host in hosts:
        parse_host(host)  # a typo fails before any connection is made
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = [pool.submit(run_remote, bundle, parse_host(h), args, options=options, python=python, timeout=timeout)
                   for h in hosts]
        outcomes = [_outcome(f) for f in futures]
    results = [o for o in outcomes if isinstance(o, dict)]
    failures = [o for o in outcomes if isinstance(o, BenchError)]
    if failures:
        error = failures[0] if len(hosts) == 1 else BenchError(
            f"{len(failures)} of {len(hosts)} hosts failed: " + "; ".join(str(f) for f in failures))
        error.results = results  # the CLI can still show the hosts that worked
        raise error
    return results


def render_bench(results: Sequence[dict]) -> str:
    """One table across hosts: a row per (host, artifact), then any errors, one line each."""
    rows = [["host", "artifact", "runtime", "threads", "p50 ms", "p99 ms", "peak RSS MB", "max abs err", "cosine", "top1",
             "result"]]
    notes: list[str] = []
    emulated = False
    for report in results:
        for r in report.get("results") or []:
            rows.append(_bench_row(report.get("host", LOCAL), r))
            emulated |= bool(r.get("emulated"))
            if r.get("error"):
                notes.append(f"{report.get('host', LOCAL)} {r.get('file')}: {r['error']}")
    text = table(rows)
    if emulated:
        notes.insert(0, "* emulated: latency not comparable to the real device")
    return "\n".join([text, *notes])


# ----------------------------------------------------------------------------- bundle, local
def check_bundle(bundle: Path) -> Path:
    """The folder must hold a manifest and the runner; say how to get a proper bundle if not."""
    if not bundle.is_dir():
        raise BenchError(f"bundle folder {bundle} does not exist", "build one with `edgekit build --target NAME --out DIR`")
    for name in ("manifest.json", RUNNER):
        if not (bundle / name).is_file():
            raise BenchError(f"{bundle} has no {name}, so it is not a complete edgekit bundle",
                             "pass the folder `edgekit build` wrote, or rebuild it with --force")
    return bundle.resolve()


def _check_runner_args(runner_args: Sequence[str]) -> list[str]:
    args = [str(a) for a in runner_args]
    if any(a == "--json" or a.startswith("--json=") for a in args):
        raise BenchError("--json is set by edgekit bench itself", "drop it from the runner arguments")
    return args


def run_local(bundle: Path, runner_args: Sequence[str], *, timeout: float = 1800) -> dict:
    """Run the bundle's runner with this interpreter in a fresh process; return its report."""
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(bundle / RUNNER), str(bundle), "--json", str(out), *runner_args]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"local: the runner did not finish within {timeout:.0f} s",
                             "raise --timeout, or lower --runs / --max-seconds") from None
        text = out.read_text() if out.is_file() else None
    return annotate(parse_report(LOCAL, proc.returncode, text, proc.stderr), LOCAL, proc.returncode,
                     time.perf_counter() - start)


def _outcome(future) -> dict | BenchError:
    try:
        return future.result()
    except BenchError as exc:
        return exc


# ----------------------------------------------------------------------------- rendering
def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _bench_row(host: str, r: dict) -> list[str]:
    rt, lat = r.get("runtime") or {}, r.get("latency_ms") or {}
    mem, cor = r.get("memory_mb") or {}, r.get("correctness") or {}
    backend = rt.get("delegate") or (rt.get("provider") or "").removesuffix("ExecutionProvider")  # "CPU", not the long name
    runtime = " ".join(str(x) for x in (rt.get("name"), rt.get("version"), backend) if x) or "-"
    verdict = "ERROR" if r.get("error") else ("PASS" if cor.get("passed") else "FAIL")
    return [host, str(r.get("file")), runtime, _num(rt.get("threads"), "d"), _num(lat.get("p50"), ".4g"),
            _num(lat.get("p99"), ".4g"), _num(mem.get("peak_rss"), ".1f"), _num(cor.get("max_abs_err"), ".3g"),
            _num(cor.get("cosine"), ".5f"), _num(cor.get("top1_agreement"), ".3f"), verdict + ("*" if r.get("emulated") else "")]
