#!/usr/bin/env python3
"""edgekit-runner: check, run and measure an edgekit bundle on the device.

    python edgekit_runner.py BUNDLE_DIR [--artifact FILE] [--threads N] [--runs N] [--warmup N]
        [--min-seconds S] [--max-seconds S] [--delegate xnnpack|nnapi|gpu|none]
        [--provider NAME] [--json OUT]

Self-contained on purpose: it is copied into every bundle and onto devices, so it imports only the
standard library, numpy and ONE runtime, lazily (LiteRT, tflite-runtime or tensorflow.lite for
.tflite; onnxruntime for .onnx/.ort). Python 3.9-3.13: annotations are never evaluated.

Per artifact, as TFLite's `benchmark_model` does: size and sha256 checked against manifest.json
before anything is loaded; init (load) time; first inference; warm-up runs; timed runs until both
--runs and --min-seconds are reached (capped by --max-seconds). Only the inference call is timed:
the input is set once before the loop, so a bare `set_tensor(); [t0; invoke(); t1]...` loop
measures the same thing; for onnxruntime the timed call is `session.run`, which binds its inputs
itself. Then every golden.npz sample is replayed and compared against the artifact's tolerance.

Without --artifact each artifact runs in a fresh subprocess, so memory figures are not shared.
Exit codes: 0 all ran and passed, 1 failed correctness or errored, 2 bad bundle or usage,
3 integrity (missing/truncated/modified file), 4 runtime or delegate not available.
Memory is in MB = 2**20 bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import importlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RUNNER_VERSION = "0.1.0"
PROG = "edgekit-runner"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTEGRITY, EXIT_RUNTIME = 0, 1, 2, 3, 4
MB = float(1 << 20)
FIX = "rebuild or re-copy the bundle"
STATM = "/proc/self/statm"
CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq/"
# (module, pip package) in lookup order; tensorflow last because it is by far the heaviest.
TFLITE_CANDIDATES = (("ai_edge_litert.interpreter", "ai-edge-litert"),
                     ("tflite_runtime.interpreter", "tflite-runtime"), ("tensorflow", "tensorflow"))
NO_TFLITE = ("no TFLite runtime found: pip install ai-edge-litert "
             "(or tflite-runtime on Python 3.9-3.11 with numpy<2)")
NO_ORT = "no ONNX Runtime found: pip install onnxruntime"
DELEGATE_LIBS = {"nnapi": ("libnnapi_delegate.so",),
                 "gpu": ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so")}
Result = dict  # one entry of the report's "results" list


class RunnerError(Exception):
    """A one-line, user-facing failure with the exit code it maps to (no traceback shown)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def eprint(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- bundle, integrity
def load_manifest(bundle: Path) -> dict[str, Any]:
    """Read manifest.json; a missing or unreadable one is a usage error, not a traceback.
    Every file it names is checked to stay inside the bundle before any of them is opened."""
    path = bundle / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read {path}: {exc}", EXIT_USAGE) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise RunnerError(f"{path}: no 'artifacts' list (not an edgekit bundle?)", EXIT_USAGE)
    if not all(isinstance(art, dict) for art in manifest["artifacts"]):
        raise RunnerError(f"{path}: an 'artifacts' entry is not an object: {FIX}", EXIT_USAGE)
    for art in manifest["artifacts"]:
        bundle_member(bundle, art.get("file"))
    golden = manifest.get("golden")
    if not isinstance(golden, dict):
        raise RunnerError(f"{path}: no 'golden' entry: {FIX}", EXIT_INTEGRITY)
    bundle_member(bundle, golden.get("file"))
    return manifest


def bundle_member(bundle: Path, name: Any) -> Path:
    """The path of a file the manifest names, refused unless it is a relative path that stays
    inside the bundle, symlinks resolved: a manifest must not make the runner read other files."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise RunnerError(f"manifest file entry {name!r} is not a file name: {FIX}", EXIT_INTEGRITY)
    parts = name.split("/")
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise RunnerError(f"manifest file entry {name!r} leaves the bundle: {FIX}", EXIT_INTEGRITY)
    root = bundle.resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise RunnerError(f"manifest file entry {name!r} resolves outside the bundle ({path}): {FIX}",
                          EXIT_INTEGRITY)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(name: str, path: Path, expected: Any) -> None:
    """Fail closed: a file whose manifest entry has no sha256 is refused like a modified one."""
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise RunnerError(f"{name}: the manifest gives no sha256 for it, so it cannot be checked: {FIX}",
                          EXIT_INTEGRITY)
    if sha256_file(path) != expected.lower():
        raise RunnerError(f"{name}: sha256 does not match the manifest (corrupted or modified): "
                          f"{FIX}", EXIT_INTEGRITY)


def check_artifact(bundle: Path, art: dict[str, Any]) -> Path:
    """Refuse a missing, truncated or modified artifact BEFORE any runtime sees it: a corrupt
    model can crash a native runtime, and a wrong one gives silently meaningless numbers."""
    name = art.get("file")
    path = bundle_member(bundle, name)
    if not path.is_file():
        raise RunnerError(f"{name}: missing from the bundle: {FIX}", EXIT_INTEGRITY)
    size = path.stat().st_size
    if art.get("bytes") is not None and size != int(art["bytes"]):
        raise RunnerError(f"{name}: {size} bytes but the manifest says {art['bytes']} "
                          f"(truncated or replaced): {FIX}", EXIT_INTEGRITY)
    check_digest(name, path, art.get("sha256"))
    return path


def load_golden(bundle: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    entry = manifest.get("golden") or {}
    name = entry.get("file", "golden.npz")
    path = bundle_member(bundle, name)
    if not path.is_file():
        raise RunnerError(f"{name}: missing from the bundle: {FIX}", EXIT_INTEGRITY)
    check_digest(name, path, entry.get("sha256"))
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{name}: cannot read golden data ({exc}): {FIX}", EXIT_INTEGRITY) from None


# ----------------------------------------------------------------------------- memory
def rss_mb() -> float | None:
    """Current RSS: /proc on Linux, `ps` elsewhere (macOS), None when neither works."""
    try:
        with open(STATM, "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True,
                             text=True, timeout=5).stdout
        return int(out.strip()) * 1024 / MB
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def maxrss_mb() -> float | None:
    """Lifetime peak RSS, the kernel's own high-water mark (so it also sees spikes during load).

    Linux: VmHWM from /proc/self/status, which starts afresh in each exec'd program;
    ru_maxrss can carry a large parent's peak over into the child (measured: 411 MB reported
    for a 50 MB runner started from a 400 MB process)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB  # bytes vs KiB


class PeakSampler:
    """Samples /proc/self/statm every ~2 ms in a daemon thread, a cross-check of ru_maxrss;
    pread() on one open fd keeps a sample at ~2 us.

    The thread runs under SCHED_IDLE (Linux): at normal priority its wake-ups preempted the
    inference threads and slowed 2-thread runs by 5-300 % on a busy 2-core host. Idle-class, it
    only takes spare CPU, so it samples less often when every core is busy; ru_maxrss still
    bounds the peak then."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, fd: int, page: int) -> None:
        with contextlib.suppress(AttributeError, OSError):  # not Linux: normal priority
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        peak = 0
        try:
            while True:
                peak = max(peak, int(os.pread(fd, 128, 0).split()[1]))
                self.samples += 1
                if self._stop.wait(self.interval_s):
                    break
        finally:
            os.close(fd)
            self.peak_mb = peak * page / MB

    def start(self) -> PeakSampler:
        try:  # no /proc (macOS) or no pread (Windows): ru_maxrss alone gives the peak
            fd, page = os.open(STATM, os.O_RDONLY), os.sysconf("SC_PAGE_SIZE")
            os.pread(fd, 128, 0)
        except (OSError, AttributeError, ValueError):
            return self
        self._thread = threading.Thread(target=self._loop, args=(fd, page), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak_mb


# ----------------------------------------------------------------------------- device
def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def cpu_model() -> str | None:
    """x86 has "model name"; Raspberry Pi OS has "Model" (board) and/or "Hardware" (SoC)."""
    fields: dict[str, str] = {}
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        if key in fields:
            return fields[key]
    return platform.processor() or None


def soc_temp_c() -> float | None:
    raw = read_text("/sys/class/thermal/thermal_zone0/temp")  # millidegrees
    return round(int(raw) / 1000.0, 1) if raw and raw.lstrip("-").isdigit() else None


def throttled() -> str | None:
    """Raspberry Pi firmware throttling flags (0x0 = never throttled), when vcgencmd exists."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=3)
        return out.stdout.strip().partition("=")[2] or None
    except (OSError, subprocess.SubprocessError):  # includes the timeout
        return None


def device_info() -> dict[str, Any]:
    """The device as seen before the runs; every optional field is None where absent."""
    freq = read_text(CPUFREQ + "scaling_cur_freq")  # kHz
    return {"machine": platform.machine(), "system": platform.system(),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "cpufreq_governor": read_text(CPUFREQ + "scaling_governor"),
            "cpu_cur_freq_mhz": int(freq) / 1000.0 if freq and freq.isdigit() else None,
            "soc_temp_c_before": soc_temp_c(), "soc_temp_c_after": None,
            "throttled_before": throttled(), "throttled_after": None}


# ----------------------------------------------------------------------------- arithmetic
# Why this section exists: int8 kernels differ per CPU. On x86-64 without VNNI, ONNX Runtime's
# u8s8 GEMM adds pairs of products in int16 with saturation (VPMADDUBSW), so an rpi4 QDQ model
# gave max abs err 0.606 there and 0.345 on ARM and VNNI CPUs. An artifact is judged by the
# arithmetic of its target: this CPU's kernels when it computes like the target, else ONNX
# Runtime's reference semantics (QDQ executed as float, integer ops emulated exactly in float).
ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}
#: numpy's CPUID names -> the Linux /proc/cpuinfo names used in profiles and manifests
NUMPY_FLAGS = {"AVX": "avx", "AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f",
               "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16",
               "AVX512FP16": "avx512_fp16", "NEON": "neon", "ASIMD": "asimd",
               "ASIMDHP": "asimdhp", "ASIMDDP": "asimddp", "ASIMDFHM": "asimdfhm", "SVE": "sve"}
#: int8-relevant ISAs, most capable first (x86, then ARM)
INT8_ISAS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "asimddp", "neon")


def host_arch() -> str:
    """``x86_64`` or ``aarch64`` (``arm64``/``AMD64`` spelled the Linux way)."""
    machine = platform.machine().lower()
    return ARCH_ALIASES.get(machine, machine)


def proc_flags() -> set[str]:
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """This CPU's feature flags in Linux's names.

    CPUID (read by numpy's dispatcher) is authoritative: under ``qemu-x86_64 -cpu Haswell``
    /proc/cpuinfo still describes the real host while CPUID, which the runtimes follow, describes
    the emulated CPU. /proc/cpuinfo adds what numpy does not name (avx_vnni, amx_int8) only when
    it agrees with CPUID on the features both name, i.e. when it describes this CPU."""
    proc = proc_flags()
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features  # numpy 1.x
        except ImportError:
            return frozenset(proc)
    cpuid = {NUMPY_FLAGS[k] for k, on in features.items() if on and k in NUMPY_FLAGS}
    agree = (proc & set(NUMPY_FLAGS.values())) == cpuid
    return frozenset(proc | cpuid) if agree else frozenset(cpuid)


def int8_isa() -> str:
    """The most capable int8-relevant ISA of this CPU (e.g. ``avx2``, ``avx512_vnni``, ``neon``)."""
    return next((f for f in INT8_ISAS if f in cpu_flags()), host_arch())


def target_arch(manifest: dict[str, Any]) -> str | None:
    device = manifest.get("device") or {}
    if device.get("arch"):
        return str(device["arch"])
    isa = str(device.get("isa") or "")
    return "aarch64" if isa.startswith("armv") else ("x86_64" if isa.startswith("x86") else None)


def on_target(manifest: dict[str, Any]) -> bool:
    """Whether this CPU computes like the bundle's target: same architecture and every CPU
    feature the profile names (a bundle without device facts is taken as built for here)."""
    arch = target_arch(manifest)
    features = set((manifest.get("device") or {}).get("features") or ())
    return arch is None or (arch == host_arch() and features <= cpu_flags())


def semantics(manifest: dict[str, Any], art: dict[str, Any]) -> str:
    """``kernels`` (this CPU's own, the verdict of a device) or ``reference`` (ONNX Runtime
    artifacts judged off-target). TFLite's int8 kernels gave bit-identical outputs on x86 and
    emulated ARM (GUIDE.md section 2), so TFLite artifacts are always judged by the kernels."""
    if art.get("format") == "tflite" or on_target(manifest):
        return "kernels"
    return "reference"


def reference_file(manifest: dict[str, Any], art: dict[str, Any]) -> str:
    """The file whose reference run judges ``art``: an ``.ort`` holds ops fused at conversion
    (QLinearConv), so it is judged through the ``.onnx`` it was converted from."""
    via = art.get("reference_via")
    if via:
        return str(via)
    if art.get("format") == "ort":
        twin = str(Path(art["file"]).with_suffix(".onnx"))
        if any(a.get("file") == twin for a in manifest["artifacts"]):
            return twin
    return art["file"]


def reference_model(path: Path) -> Any:
    """The model as ONNX Runtime's reference semantics run it: integer ops (MatMulInteger of
    dynamic int8) rewritten to float on the exact integer values, weight-only MatMulNBits at
    float compute (accuracy_level 0) (needs the ``onnx`` package;
    without it the file runs as is). Returns a path or serialized bytes."""
    try:
        import onnx
    except ImportError:
        return path
    model = onnx.load(str(path))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    if not nbits and not any(n.op_type == "MatMulInteger" for n in model.graph.node):
        return path
    for node in nbits:
        float_compute(node)
    nodes = []
    for node in model.graph.node:
        nodes += emulate_matmul_integer(node) if node.op_type == "MatMulInteger" else [node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


def float_compute(node: Any) -> None:
    """MatMulNBits computes in float on the dequantized weights at accuracy_level 0; higher
    levels quantize the activations to int8 with CPU-specific kernels, so the reference drops
    them (weights dequantize exactly: a block's scale times an integer)."""
    for attr in node.attribute:
        if attr.name == "accuracy_level":
            attr.i = 0


def emulate_matmul_integer(node: Any) -> list:
    """MatMulInteger(A, B, a_zp, b_zp) as (float(A) - a_zp) @ (float(B) - b_zp), cast to int32.
    Exact while every partial sum stays below 2**24 (|a-zp| <= 255, |b-zp| <= 255)."""
    from onnx import TensorProto, helper

    tag = (node.name or node.output[0]) + "/ref"
    out, nodes = [], []
    for k, (value, zp) in enumerate(((node.input[0], node.input[2:3]), (node.input[1], node.input[3:4]))):
        nodes.append(helper.make_node("Cast", [value], [f"{tag}/f{k}"], to=TensorProto.FLOAT))
        name = f"{tag}/f{k}"
        if zp and zp[0]:
            nodes.append(helper.make_node("Cast", [zp[0]], [f"{tag}/z{k}"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Sub", [name, f"{tag}/z{k}"], [f"{tag}/c{k}"]))
            name = f"{tag}/c{k}"
        out.append(name)
    nodes.append(helper.make_node("MatMul", out, [f"{tag}/y"]))
    nodes.append(helper.make_node("Cast", [f"{tag}/y"], list(node.output), to=TensorProto.INT32))
    return nodes


# ----------------------------------------------------------------------------- runtimes
def import_tflite() -> tuple[Any, str, str | None]:
    """First TFLite interpreter that imports: (module-like namespace, pip name, version)."""
    for modname, pip_name in TFLITE_CANDIDATES:
        try:  # an old tflite-runtime under numpy 2 prints a long warning: keep it off the screen
            with contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(modname)
        except Exception:  # ImportError, or AttributeError/RuntimeError from a broken wheel
            continue
        top = sys.modules[modname.split(".")[0]]
        if modname == "tensorflow":
            lite = module.lite
            module = argparse.Namespace(Interpreter=lite.Interpreter,
                                        load_delegate=lite.experimental.load_delegate,
                                        OpResolverType=lite.experimental.OpResolverType)
        try:
            from importlib.metadata import version
            return module, pip_name, version(pip_name)
        except Exception:  # not pip-installed (a Debian package, tensorflow-cpu...)
            return module, pip_name, getattr(top, "__version__", None)
    raise RunnerError(NO_TFLITE, EXIT_RUNTIME)


def import_ort() -> tuple[Any, str, str | None]:
    try:
        import onnxruntime
    except Exception:
        raise RunnerError(NO_ORT, EXIT_RUNTIME) from None
    return onnxruntime, "onnxruntime", onnxruntime.__version__


class TFLiteBackend:
    """LiteRT / tflite-runtime interpreter. `delegate`: xnnpack (the interpreter's own default),
    none (builtin kernels only) or an external NNAPI / GPU delegate library."""

    def __init__(self, mod: Any, path: Path, threads: int, delegate: str) -> None:
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}  # default is 1
        if delegate == "none":
            kwargs["experimental_op_resolver_type"] = \
                mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif delegate in DELEGATE_LIBS:
            kwargs["experimental_delegates"] = [load_delegate(mod, delegate)]
        self.interp = mod.Interpreter(**kwargs)
        self.interp.allocate_tensors()
        self.in_details = self.interp.get_input_details()
        self.out_details = self.interp.get_output_details()
        self.input_names = [d["name"] for d in self.in_details]
        self.output_names = [d["name"] for d in self.out_details]

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        for detail, array in zip(self.in_details, arrays):
            self.interp.set_tensor(detail["index"], array)

    def invoker(self) -> Callable[[], Any]:
        return self.interp.invoke  # a bound C method: nothing else inside the timed call

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.set_inputs(arrays)
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.out_details]


def load_delegate(mod: Any, delegate: str) -> Any:
    """An external delegate, or a one-line error naming what could not be loaded."""
    errors, hook = [], sys.unraisablehook
    # LiteRT's Delegate.__del__ raises on a library that failed to load, which Python prints as
    # "Exception ignored ... Traceback": silenced, the error below says it all.
    sys.unraisablehook = lambda _unraisable: None
    try:
        for lib in DELEGATE_LIBS[delegate]:
            try:
                return mod.load_delegate(lib)
            except Exception as exc:  # ValueError/OSError: library absent or not loadable
                errors.append(f"{lib}: {(str(exc).splitlines() or [repr(exc)])[0]}")
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise RunnerError(f"delegate '{delegate}' is not available on this device "
                      f"({'; '.join(errors)}): use --delegate xnnpack", EXIT_RUNTIME)


class OrtBackend:
    """onnxruntime session (.onnx and .ort alike) with intra-op threads set explicitly."""

    def __init__(self, ort: Any, path: Path | bytes, threads: int, provider: str,
                 reference: bool = False) -> None:
        available = ort.get_available_providers()
        if provider not in available:
            raise RunnerError(f"provider {provider} is not available here (available: "
                              f"{', '.join(available)})", EXIT_RUNTIME)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        if reference:  # BASIC keeps QuantizeLinear/DequantizeLinear as float ops: no fusion
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        fallback = [] if provider == "CPUExecutionProvider" else ["CPUExecutionProvider"]
        model = path if isinstance(path, bytes) else str(path)
        self.sess = ort.InferenceSession(model, opts, providers=[provider] + fallback)
        self.input_names = [i.name for i in self.sess.get_inputs()]
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.feed: dict[str, np.ndarray] = {}

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        self.feed = dict(zip(self.input_names, arrays))

    def invoker(self) -> Callable[[], Any]:
        return functools.partial(self.sess.run, None, self.feed)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.set_inputs(arrays)
        return self.sess.run(None, self.feed)


def open_backend(args: argparse.Namespace, manifest: dict[str, Any], art: dict[str, Any],
                 path: Path) -> tuple[Any, dict[str, Any], float]:
    """Import the runtime (not timed), then load the model (timed): (backend, runtime, init ms)."""
    tflite = art.get("format") == "tflite" or path.suffix == ".tflite"
    defaults = (manifest.get("runtime_defaults") or {}).get("tflite" if tflite else "ort") or {}
    threads = int(args.threads or defaults.get("threads") or os.cpu_count() or 1)
    mod, name, version = import_tflite() if tflite else import_ort()
    info: dict[str, Any] = {"name": name, "version": version, "threads": threads}
    t0 = time.perf_counter()
    if tflite:
        info["delegate"] = args.delegate or defaults.get("delegate") or "xnnpack"
        backend: Any = TFLiteBackend(mod, path, threads, info["delegate"])
    else:
        provider = args.provider or defaults.get("provider") or "CPUExecutionProvider"
        backend = OrtBackend(mod, path, threads, provider)
    init_ms = (time.perf_counter() - t0) * 1e3
    if not tflite:  # what the session really uses, fallbacks included
        info["providers"] = backend.sess.get_providers()
        info["provider"] = info["providers"][0]
    return backend, info, init_ms


# ----------------------------------------------------------------------------- I/O conversion
def order_entries(entries: list[dict[str, Any]], names: list[str], what: str) -> list[dict]:
    """Manifest entries in the runtime's tensor order: by name, else by position."""
    if len(entries) != len(names):
        raise RunnerError(f"the manifest lists {len(entries)} {what}s, the artifact has "
                          f"{len(names)}: {FIX}", EXIT_USAGE)
    by_name = {e.get("name"): e for e in entries}
    return [by_name[n] for n in names] if all(n in by_name for n in names) else list(entries)


def golden_key(entry: dict[str, Any]) -> str:
    return entry.get("model_name") or entry["name"]


def to_artifact(x: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Model-layout golden tensor -> artifact input: transpose by perm, then quantize."""
    if entry.get("perm"):
        x = np.transpose(x, entry["perm"])
    dtype = np.dtype(entry.get("dtype") or x.dtype)
    quant = entry.get("quantization")
    if quant:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x.astype(np.float64) / quant["scale"]) + quant["zero_point"],
                    info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def from_artifact(y: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Artifact output -> model layout, float64: dequantize, then undo perm."""
    y = np.asarray(y, dtype=np.float64)
    quant = entry.get("quantization")
    if quant:
        y = (y - quant["zero_point"]) * quant["scale"]
    return np.transpose(y, np.argsort(entry["perm"])) if entry.get("perm") else y


# ----------------------------------------------------------------------------- measurement
def timed_loop(call: Callable[[], Any], runs: int, min_s: float,
               max_s: float) -> tuple[list[float], float]:
    """Until BOTH `runs` and `min_s` are reached, or `max_s`: (latencies ms, loop wall seconds)."""
    clock, samples = time.perf_counter, []
    start = clock()
    while True:
        t0 = clock()
        call()
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        elapsed = t1 - start
        if elapsed >= max_s or (len(samples) >= runs and elapsed >= min_s):
            return samples, elapsed


def latency_stats(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    stats = {"mean": arr.mean(), "std": arr.std(), "min": arr.min(), "p50": p50, "p90": p90,
             "p95": p95, "p99": p99, "max": arr.max()}
    return {k: round(float(v), 4) for k, v in stats.items()}


def measure(call: Callable[[], Any], args: argparse.Namespace) -> tuple[dict[str, Any], tuple]:
    """First inference, warm-up, timed runs: (timing fields of the result,
    (RSS after the first inference, peak RSS, sampled peak, number of samples))."""
    t0 = time.perf_counter()
    call()
    first_ms = (time.perf_counter() - t0) * 1e3
    rss_first = rss_mb()
    sampler = PeakSampler().start()
    for _ in range(args.warmup):
        call()
    samples, wall = timed_loop(call, args.runs, args.min_seconds, args.max_seconds)
    sampled = sampler.stop()
    peaks = [p for p in (sampled, maxrss_mb()) if p is not None]
    return {"first_inference_ms": round(first_ms, 3), "warmup": args.warmup,
            "runs": len(samples), "duration_s": round(wall, 4),
            "latency_ms": latency_stats(samples),
            "throughput_per_s": round(len(samples) / wall, 2) if wall else None,
            "samples_ms": [round(s, 4) for s in samples]}, \
        (rss_first, max(peaks) if peaks else None, sampled, sampler.samples)


def compare(got: dict[str, np.ndarray], golden: dict[str, np.ndarray],
            classification: bool) -> dict[str, float | None]:
    """Worst case over outputs: max |err|, cosine over the whole flattened batch, per-sample
    cosine mean/min, top-1 agreement. The build verifies with this same function."""
    errs, cosines, means, mins, top1s, ref_max = [], [], [], [], [], 0.0
    for name, y in got.items():
        ref = golden[name].astype(np.float64)
        y = np.asarray(y, dtype=np.float64)
        y = y.reshape(ref.shape) if y.size == ref.size else y
        if y.shape != ref.shape:
            raise RunnerError(f"output {name}: shape {y.shape} vs golden {ref.shape}: {FIX}")
        errs.append(float(np.max(np.abs(y - ref))) if y.size else 0.0)
        cosines.append(cosine(y, ref))
        per = [cosine(a, b) for a, b in zip(y.reshape(len(y), -1), ref.reshape(len(ref), -1))]
        means.append(float(np.mean(per)))
        mins.append(float(np.min(per)))
        ref_max = max(ref_max, float(np.max(np.abs(ref))) if ref.size else 0.0)
        if classification:
            top1s.append(float(np.mean(y.argmax(-1) == ref.argmax(-1))))
    return {"max_abs_err": max(errs), "cosine": min(cosines), "cosine_mean": min(means),
            "cosine_min": min(mins), "max_abs_ref": ref_max,
            "top1_agreement": min(top1s) if top1s else None}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two flattened arrays; two all-zero arrays agree (1.0)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / norm) if norm else float(np.array_equal(a, b))


def broken_bounds(metrics: dict[str, Any], tol: dict[str, Any]) -> list[str]:
    """The tolerance rule, in one place (the build imports it): every bound that is set must
    hold, and NaN/Inf outputs never pass. Returns the broken bounds, readable."""
    err, cos, top1 = metrics["max_abs_err"], metrics["cosine"], metrics.get("top1_agreement")
    if not all(np.isfinite(v) for v in (err, cos) if v is not None):
        return ["outputs contain NaN or Inf"]
    broken = []
    if tol.get("max_abs_err") is not None and err > tol["max_abs_err"]:
        broken.append(f"max abs err {err:.4g} > {tol['max_abs_err']:.4g}")
    if tol.get("min_cosine") is not None and cos < tol["min_cosine"]:
        broken.append(f"cosine {cos:.6f} < {tol['min_cosine']}")
    bound = tol.get("min_top1_agreement")
    if bound is not None and top1 is not None and top1 < bound:
        broken.append(f"top-1 agreement {top1:.3f} < {bound}")
    return broken


def judge(metrics: dict[str, float | None], tol: dict[str, Any]) -> bool:
    """Pass when every tolerance that is set holds; NaN/inf outputs never pass."""
    return not broken_bounds(metrics, tol)


# ----------------------------------------------------------------------------- one artifact
def empty_result(art: dict[str, Any], error: str | None = None) -> Result:
    keys = ("runtime", "init_ms", "first_inference_ms", "warmup", "runs", "duration_s",
            "latency_ms", "throughput_per_s", "samples_ms", "memory_mb", "correctness")
    return dict({k: art.get(k) for k in ("file", "format", "precision", "bytes")},
                **dict.fromkeys(keys), emulated=os.environ.get("EDGEKIT_EMULATED") == "1",
                error=error)


def memory_figures(before: float | None, loaded: float | None, first: float | None,
                   peak: float | None, sampled: float | None, n: int) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)
    model = None if before is None or loaded is None else loaded - before
    return {"before_load_rss": r(before), "after_load_rss": r(loaded),
            "after_first_inference_rss": r(first), "peak_rss": r(peak), "model_mb": r(model),
            "peak_rss_sampled": r(sampled), "rss_samples": n}


def run_artifact(args: argparse.Namespace, bundle: Path, manifest: dict[str, Any],
                 art: dict[str, Any]) -> Result:
    """Integrity, load, measure, replay golden.npz: one result."""
    path = check_artifact(bundle, art)
    golden = load_golden(bundle, manifest)
    latency_stats([0.0])  # numpy imports its percentile code lazily (~2 MB): not the model's RSS
    rss_before = rss_mb()
    backend, runtime, init_ms = open_backend(args, manifest, art, path)
    rss_loaded = rss_mb()
    ins = order_entries(art.get("inputs") or [], backend.input_names, "input")
    outs = order_entries(art.get("outputs") or [], backend.output_names, "output")
    missing = sorted({golden_key(e) for e in ins + outs} - set(golden))
    if missing:
        raise RunnerError(f"golden.npz has no {missing}: {FIX}", EXIT_USAGE)
    n = len(golden[golden_key(ins[0])])
    feeds = [[to_artifact(golden[golden_key(e)][i], e) for e in ins] for i in range(n)]
    backend.set_inputs(feeds[0])  # the timed calls all reuse this input
    timing, (rss_first, peak, sampled, n_samples) = measure(backend.invoker(), args)

    classification = manifest.get("task") == "classification"
    metrics = compare(replay(backend, feeds, outs), golden, classification)
    tol = art.get("tolerance") or {}
    correctness = dict(metrics, passed=judge(metrics, tol), tolerance=tol, semantics="kernels",
                       isa=int8_isa())
    if semantics(manifest, art) == "reference":
        correctness = reference_verdict(bundle, manifest, art, (feeds, golden, ins, outs),
                                        correctness)
    result = empty_result(art)
    result.update(timing, bytes=path.stat().st_size, runtime=runtime, init_ms=round(init_ms, 3),
                  memory_mb=memory_figures(rss_before, rss_loaded, rss_first, peak, sampled,
                                           n_samples),
                  correctness=correctness)
    return result


def replay(backend: Any, feeds: list, outs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every golden input through ``backend``: outputs in model layout, keyed by golden name."""
    got: dict[str, list[np.ndarray]] = {golden_key(e): [] for e in outs}
    for feed in feeds:
        for entry, y in zip(outs, backend.run(feed)):
            got[golden_key(entry)].append(from_artifact(y, entry))
    return {k: np.stack(v) for k, v in got.items()}


def reference_verdict(bundle: Path, manifest: dict[str, Any], art: dict[str, Any], data: tuple,
                      host: dict[str, Any]) -> dict[str, Any]:
    """Off-target ONNX Runtime artifact: the verdict from the reference semantics of its
    (source) model; this CPU's kernel figures are kept beside it, labelled and not judged."""
    feeds, golden, ins, outs = data
    source = find_artifact(manifest, reference_file(manifest, art))
    path = check_artifact(bundle, source)
    ort, _, _ = import_ort()
    backend = OrtBackend(ort, reference_model(path), 1, "CPUExecutionProvider", reference=True)
    if order_entries(ins, backend.input_names, "input") != ins:
        raise RunnerError(f"{source['file']} takes other inputs than {art['file']}: {FIX}")
    metrics = compare(replay(backend, feeds, outs), golden, manifest.get("task") == "classification")
    host_kernels = {k: host[k] for k in ("max_abs_err", "cosine", "top1_agreement", "isa")}
    return dict(metrics, passed=judge(metrics, host["tolerance"]), tolerance=host["tolerance"],
                semantics="reference", reference_file=source["file"],
                host_kernels=dict(host_kernels, judged=False))


# ----------------------------------------------------------------------------- orchestration
def find_artifact(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for art in manifest["artifacts"]:
        if art.get("file") in (name, os.path.basename(name)):
            return art
    have = ", ".join(a.get("file", "?") for a in manifest["artifacts"])
    raise RunnerError(f"{name} is not an artifact of this bundle (have: {have})", EXIT_USAGE)


def run_one(args: argparse.Namespace, bundle: Path, manifest: dict[str, Any],
            art: dict[str, Any]) -> tuple[Result, int]:
    """In-process run of one artifact; a failure becomes a result with `error` set."""
    try:
        result = run_artifact(args, bundle, manifest, art)
    except RunnerError as exc:
        eprint(str(exc))
        return empty_result(art, str(exc)), exc.code
    except Exception as exc:  # a runtime failure: one line, no traceback
        message = f"{art.get('file')}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        eprint(message)
        return empty_result(art, message), EXIT_FAILED
    return result, EXIT_OK if result["correctness"]["passed"] else EXIT_FAILED


def child_command(args: argparse.Namespace, bundle: Path, file: str, out: Path) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), str(bundle), "--artifact", file,
           "--json", str(out), "--quiet", "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--min-seconds", str(args.min_seconds), "--max-seconds", str(args.max_seconds)]
    for flag, value in (("--threads", args.threads), ("--delegate", args.delegate),
                        ("--provider", args.provider)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_child(args: argparse.Namespace, bundle: Path, art: dict[str, Any]) -> tuple[Result, int]:
    """One artifact in a fresh interpreter, so its RSS figures belong to it alone."""
    with tempfile.TemporaryDirectory(prefix="edgekit_runner_") as tmp:
        out = Path(tmp) / "result.json"
        try:
            proc = subprocess.run(child_command(args, bundle, art["file"], out),
                                  capture_output=True, text=True,
                                  timeout=args.max_seconds + args.warmup * 60 + 900)
        except subprocess.TimeoutExpired:
            eprint(f"{art['file']}: timed out")
            return empty_result(art, f"{art['file']}: timed out"), EXIT_FAILED
        except OSError as exc:  # e.g. an emulated interpreter the host cannot exec (no binfmt)
            eprint(f"{art['file']}: cannot start a child interpreter: {exc}; pass --artifact to run in-process")
            return empty_result(art, f"{art['file']}: cannot start child: {exc}"), EXIT_FAILED
        # relay the child's own one-line messages, not the runtimes' log chatter
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(PROG + ":")]
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        if out.is_file():
            return json.loads(out.read_text(encoding="utf-8"))["results"][0], proc.returncode
    tail = (lines or proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return empty_result(art, f"{art['file']}: crashed: {tail}"), proc.returncode or EXIT_FAILED


def run_bundle(args: argparse.Namespace, bundle: Path,
               manifest: dict[str, Any]) -> tuple[list[Result], int]:
    """Every artifact: integrity of all checked first, then each in its own subprocess."""
    refused: dict[str, Result] = {}
    for art in manifest["artifacts"]:
        try:
            check_artifact(bundle, art)
        except RunnerError as exc:
            eprint(str(exc))
            refused[art["file"]] = empty_result(art, str(exc))
    results, code = [], EXIT_OK
    for art in manifest["artifacts"]:
        result, rc = ((refused[art["file"]], EXIT_INTEGRITY) if art["file"] in refused
                      else run_child(args, bundle, art))
        results.append(result)
        code = max(code, rc)
    return results, code


# ----------------------------------------------------------------------------- output, CLI
def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    d = report["device"]
    lines = [f"{PROG} {RUNNER_VERSION}  bundle {report['bundle']}  target {report['target']}",
             f"device: {d['machine']}, {d['cpu_model']}, {d['cores']} cores, governor "
             f"{d['cpufreq_governor'] or '-'}, SoC {fmt(d['soc_temp_c_before'], '.1f')} -> "
             f"{fmt(d['soc_temp_c_after'], '.1f')} C, Python {d['python']}", ""]
    head = (f"{'artifact':<28} {'runtime':<22} {'thr':>3} {'init ms':>8} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'peak MB':>8} {'max err':>9} {'cosine':>7} {'top1':>5}  result")
    lines += [head, "-" * len(head)]
    for r in report["results"]:
        rt, lat = r["runtime"] or {}, r["latency_ms"] or {}
        mem, cor = r["memory_mb"] or {}, r["correctness"] or {}
        runtime = f"{rt.get('name', '-')} {rt.get('version') or ''}".strip()
        verdict = "ERROR" if r["error"] else ("PASS" if cor.get("passed") else "FAIL")
        lines.append(
            f"{r['file']:<28} {runtime:<22} {fmt(rt.get('threads'), 'd'):>3} "
            f"{fmt(r['init_ms'], '.1f'):>8} {fmt(lat.get('p50'), '.3f'):>8} "
            f"{fmt(lat.get('p99'), '.3f'):>8} {fmt(mem.get('peak_rss'), '.1f'):>8} "
            f"{fmt(cor.get('max_abs_err'), '.2e'):>9} {fmt(cor.get('cosine'), '.4f'):>7} "
            f"{fmt(cor.get('top1_agreement'), '.2f'):>5}  {verdict}")
    notes = [f"  {r['file']}: {r['error']}" for r in report["results"] if r["error"]]
    for r in report["results"]:
        cor = r["correctness"] or {}
        if cor.get("semantics") == "reference":
            host = cor["host_kernels"]
            notes.append(f"  {r['file']}: judged by ONNX Runtime's reference semantics of "
                         f"{cor['reference_file']} (this CPU is not the target's); this CPU's "
                         f"kernels ({host['isa']}): max err {fmt(host['max_abs_err'], '.3g')}, "
                         f"cosine {fmt(host['cosine'], '.4f')}, not judged")
    return "\n".join(lines + notes)


def to_json(report: dict[str, Any]) -> str:
    """Indented JSON, but number lists (samples_ms: thousands) kept on one line each."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Check, run and measure an edgekit "
                                "bundle on this device (numpy + one runtime).")
    p.add_argument("bundle", help="bundle folder (holds manifest.json)")
    p.add_argument("--artifact", help="run only this artifact, in this process")
    p.add_argument("--threads", type=int, help="default: manifest runtime_defaults, else all cores")
    p.add_argument("--runs", type=int, default=50, help="minimum timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds (1.0)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap on timed seconds (60)")
    p.add_argument("--delegate", choices=["xnnpack", "nnapi", "gpu", "none"],
                   help="TFLite delegate (default: manifest, else xnnpack)")
    p.add_argument("--provider", help="onnxruntime execution provider (default: manifest, "
                   "else CPUExecutionProvider)")
    p.add_argument("--json", dest="json_out", help="also write the full report as JSON here")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # used by children

    def one_line(message: str) -> None:  # argparse's default prints the whole usage block
        eprint(f"error: {message} (see {PROG} --help)")
        sys.exit(EXIT_USAGE)

    p.error = one_line  # type: ignore[method-assign]
    args = p.parse_args(argv)
    bounds = (("--runs", args.runs, 1), ("--threads", args.threads, 1), ("--warmup", args.warmup, 0),
              ("--min-seconds", args.min_seconds, 0), ("--max-seconds", args.max_seconds, None))
    for flag, value, least in bounds:
        if value is None:
            continue
        finite = float("-inf") < value < float("inf")  # False for NaN too: "--max-seconds nan" parses
        if not finite or (value < least if least is not None else value <= 0):
            bound = f">= {least}" if least is not None else "> 0"
            p.error(f"{flag} {value} must be {bound if finite else 'a finite number ' + bound}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`edgekit-runner`); returns the process exit code."""
    args = parse_args(argv)
    bundle = Path(args.bundle).resolve()
    try:
        manifest = load_manifest(bundle)
        device = device_info()
        if args.artifact:
            result, code = run_one(args, bundle, manifest, find_artifact(manifest, args.artifact))
            results = [result]
        else:
            results, code = run_bundle(args, bundle, manifest)
        device.update(soc_temp_c_after=soc_temp_c(), throttled_after=throttled())
    except RunnerError as exc:
        eprint(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    report = {"runner_version": RUNNER_VERSION, "bundle": str(bundle),
              "target": manifest.get("target"), "device": device, "results": results}
    if not args.quiet:
        print(format_table(report), flush=True)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(to_json(report), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
