"""``edgekit bench``: run a bundle's own device runner here, on devices over SSH, or emulated.

Locally the bundle's ``edgekit_runner.py`` runs in a fresh interpreter (``sys.executable``). On a
device (``user@host[:port]``) only the OpenSSH client is used: see :mod:`edgekit.device.ssh` for
the connections it makes and the SSH options it enforces. Several hosts run in parallel. With
``emulate`` the runner runs in an aarch64 userland under qemu (:mod:`edgekit.device.emulate`).
All three get the same :class:`~edgekit.device.settings.RunnerSettings` and are judged by one
rule (:func:`~edgekit.device.runner_report.passed`).
Every failure becomes one :class:`~edgekit.errors.BenchError` naming the host and the fix.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgekit.device.runner_report import RUNNER, annotate, parse_report
from edgekit.device.settings import DEFAULTS, RunnerSettings
from edgekit.device.ssh import SshOptions, check_ssh_files, parse_host, run_remote
from edgekit.errors import BenchError
from edgekit.report import table

LOCAL = "local"


# ----------------------------------------------------------------------------- public API
def bench(bundle: Path, settings: RunnerSettings = DEFAULTS, *, hosts: Sequence[str] = (), emulate: str | None = None,
          identity: Path | None = None, known_hosts: Path | None = None, python: str = "python3",
          progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``bundle``'s device runner locally (no ``hosts``), on each host in parallel, or in the
    emulated userland of ``emulate`` (an architecture, e.g. ``"aarch64"``), with ``settings``.

    Returns one runner report (the runner's JSON) per host, in the order given, each annotated
    with ``host`` (``"local"`` here, ``"emulated-<arch>"`` emulated), ``exit_code`` (the
    runner's), ``passed`` (every artifact ran and met its tolerance), ``started_at`` / ``wall_s``
    and, for devices, ``remote_dir`` (removed again). ``python`` is the device's interpreter; a
    local run uses this one (``sys.executable``). ``settings.timeout`` bounds each step (copy,
    run) in seconds. Emulated, timing fields left at their defaults shrink to a few runs
    (:meth:`RunnerSettings.for_emulation`); ``progress`` gets the emulation's progress lines.
    A failed correctness check is a result (``passed`` false), not an exception.

    Raises :class:`BenchError` when a run gives no result (bad bundle, SSH, missing python...);
    with several hosts every host still runs, and the error lists each failed host and keeps
    the others' reports in ``error.results``. Emulation problems raise EmulationError.
    """
    bundle = check_bundle(Path(bundle))
    if emulate is not None:
        if hosts:
            raise BenchError("--emulate runs here, not on --host devices", "drop one of --emulate and --host")
        return [run_emulated(bundle, settings, emulate, progress)]
    if not hosts:
        return [run_local(bundle, settings)]
    return _run_hosts(bundle, settings, hosts, SshOptions(identity=identity, known_hosts=known_hosts), python)


def _run_hosts(bundle: Path, settings: RunnerSettings, hosts: Sequence[str], options: SshOptions, python: str) -> list[dict]:
    options = check_ssh_files(options)
    for host in hosts:
        parse_host(host)  # a typo fails before any connection is made
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = [pool.submit(run_remote, bundle, parse_host(h), settings, options=options, python=python) for h in hosts]
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
    llm = any(r.get("generation") for report in results for r in report.get("results") or [])
    rows = [LLM_HEADER if llm else ["host", "artifact", "runtime", "threads", "p50 ms", "p99 ms", "peak RSS MB", "max abs err",
                                    "cosine", "top1", "result"]]
    notes: list[str] = []
    emulated = False
    for report in results:
        for r in report.get("results") or []:
            rows.append((_llm_row if llm else _bench_row)(report.get("host", LOCAL), r))
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


def run_local(bundle: Path, settings: RunnerSettings) -> dict:
    """Run the bundle's runner with this interpreter in a fresh process; return its report."""
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(bundle / RUNNER), str(bundle), *settings.argv(str(out))]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=settings.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"local: the runner did not finish within {settings.timeout:.0f} s",
                             "raise --timeout, or lower --runs / --max-seconds") from None
        text = out.read_text() if out.is_file() else None
    return annotate(parse_report(LOCAL, proc.returncode, text, proc.stderr), LOCAL, proc.returncode,
                     time.perf_counter() - start)


def run_emulated(bundle: Path, settings: RunnerSettings, arch: str, progress: Callable[[str], None] | None = None) -> dict:
    """Prepare (once; cached after) the emulated userland with every runtime flavour, run the
    bundle there, and judge the report like any other host's."""
    from edgekit.device.emulate import prepare, run

    start = time.perf_counter()
    report = run(bundle, settings.for_emulation(), env=prepare(arch, runtime="all", progress=progress), progress=progress)
    return annotate(report, f"emulated-{report['emulation']['arch']}", report["exit_code"], time.perf_counter() - start)


def _outcome(future) -> dict | BenchError:
    try:
        return future.result()
    except BenchError as exc:
        return exc


# ----------------------------------------------------------------------------- rendering
def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _runtime(rt: dict) -> str:
    backend = rt.get("delegate") or (rt.get("provider") or "").removesuffix("ExecutionProvider")  # "CPU", not the long name
    return " ".join(str(x) for x in (rt.get("name"), rt.get("version"), backend) if x) or "-"


def _verdict(r: dict, cor: dict) -> str:
    verdict = "RAN" if r.get("correctness") is None else ("PASS" if cor.get("passed") else "FAIL")  # RAN: a prompt, no golden
    return ("ERROR" if r.get("error") else verdict) + ("*" if r.get("emulated") else "")


LLM_HEADER = ["host", "artifact", "runtime", "threads", "TTFT ms", "prefill tok/s", "decode tok/s", "decode p50 ms",
              "decode p90 ms", "peak RSS MB", "KV cache MB", "token match", "logits cos", "result"]


def _llm_row(host: str, r: dict) -> list[str]:
    """An LLM artifact's generation figures (docs/llm-bundle.md, "Runner report")."""
    rt, gen, cor = r.get("runtime") or {}, r.get("generation") or {}, r.get("correctness") or {}
    kv = gen.get("kv_cache_bytes")
    return [host, str(r.get("file")), _runtime(rt), _num(rt.get("threads"), "d"), _num(gen.get("ttft_ms"), ".1f"),
            _num(gen.get("prefill_tok_s"), ".1f"), _num(gen.get("decode_tok_s"), ".1f"), _num(gen.get("decode_ms_p50"), ".2f"),
            _num(gen.get("decode_ms_p90"), ".2f"), _num(gen.get("peak_rss_mb"), ".1f"), _num(kv / 2**20 if kv else None, ".1f"),
            _num(cor.get("token_match"), ".3f"), _num(cor.get("logits_cosine"), ".5f"), _verdict(r, cor)]


def _bench_row(host: str, r: dict) -> list[str]:
    rt, lat = r.get("runtime") or {}, r.get("latency_ms") or {}
    mem, cor = r.get("memory_mb") or {}, r.get("correctness") or {}
    runtime, verdict = _runtime(rt), _verdict(r, cor)
    return [host, str(r.get("file")), runtime, _num(rt.get("threads"), "d"), _num(lat.get("p50"), ".4g"),
            _num(lat.get("p99"), ".4g"), _num(mem.get("peak_rss"), ".1f"), _num(cor.get("max_abs_err"), ".3g"),
            _num(cor.get("cosine"), ".5f"), _num(cor.get("top1_agreement"), ".3f"), verdict]
