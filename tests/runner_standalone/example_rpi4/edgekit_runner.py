#!/usr/bin/env python3
"""edgekit-runner: check, run and measure an edgekit bundle on the device.

    python edgekit_runner.py BUNDLE_DIR [--artifact FILE] [--threads N] [--runs N] [--warmup N]
        [--min-seconds S] [--max-seconds S] [--delegate xnnpack|nnapi|gpu|none]
        [--provider NAME] [--json OUT]
    python edgekit_runner.py LLM_BUNDLE [--prompt TEXT | --prompt-ids 1,2,3]
        [--max-new-tokens N] [--perplexity FILE] [--artifact FILE] [--threads N] [--json OUT]

Self-contained on purpose: it is copied into every bundle and onto devices, so it imports only the
standard library, numpy and ONE runtime, lazily (LiteRT, tflite-runtime or tensorflow.lite for
.tflite; onnxruntime for .onnx/.ort). Python 3.9-3.13: annotations are never evaluated.

Per artifact, as TFLite's `benchmark_model` does: size and sha256 checked against manifest.json
before anything is loaded; init (load) time; first inference; warm-up runs; timed runs until both
--runs and --min-seconds are reached (capped by --max-seconds). Only the inference call is timed:
the input is set once before the loop, so a bare `set_tensor(); [t0; invoke(); t1]...` loop
measures the same thing; for onnxruntime the timed call is `session.run`, which binds its inputs
itself. Then every golden.npz sample is replayed and compared against the artifact's tolerance.

An LLM bundle ("kind": "llm", docs/llm-bundle.md) is run through the KV contract edgekit-kv-2:
without a prompt, each artifact's greedy continuations of golden_llm.npz are judged (token match,
first-step logits cosine) and generation on a fixed prompt is measured (ttft, prefill and decode
tokens/s, peak RSS); with --prompt (needs the optional `tokenizers` package) or --prompt-ids
the generated text (or ids) is printed on stdout; --perplexity FILE scores a text.

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
    dynamic int8) rewritten to float on the exact integer values, and weight-only MatMulNBits as
    a float MatMul on its exactly dequantized weights (needs the ``onnx`` package; without it the
    file runs as is). Returns a path or serialized bytes.

    Why MatMulNBits too: at accuracy_level 4 a CPU with int8 dot products (x86 VNNI, ARMv8.2+)
    quantizes the activations to int8, while a Cortex-A72 (no dot product) computes in float, so
    the build host's kernels are not the target's; the float product is what the A72 computes
    (tests/llm/test_emulated.py) and the same on every CPU."""
    try:
        import onnx
    except ImportError:
        return path
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    if not ops & {"MatMulInteger", "MatMulNBits"}:
        return path
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            nodes += emulate_matmul_integer(node)
        elif node.op_type == "MatMulNBits":
            nodes += float_matmul_nbits(node, inits, model.graph.initializer)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]  # the packed weights are now unused
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model.SerializeToString()


def dequantize_nbits(node: Any, inits: dict[str, Any]) -> np.ndarray:
    """MatMulNBits' weight as float32 [K, N]: (q - zero_point) * scale per block of K, codes packed
    low nibble first for 4 bits; zero points default to 2**(bits-1) (the operator's spec)."""
    from onnx import numpy_helper

    attrs = {a.name: a.i for a in node.attribute}
    bits, block, k, n = attrs.get("bits", 4), attrs["block_size"], attrs["K"], attrs["N"]
    packed = numpy_helper.to_array(inits[node.input[1]]).reshape(n, -1)
    blocks = -(-k // block)
    q = np.stack([packed & 0xF, packed >> 4], -1).reshape(n, -1) if bits == 4 else packed
    q = q[:, :blocks * block].reshape(n, blocks, block).astype(np.float32)
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(n, blocks, 1)
    zp = np.float32(2 ** (bits - 1))
    if len(node.input) > 3 and node.input[3]:
        raw = numpy_helper.to_array(inits[node.input[3]])
        if raw.dtype == np.uint8 and bits == 4:
            raw = np.stack([raw.reshape(n, -1) & 0xF, raw.reshape(n, -1) >> 4], -1).reshape(n, -1)[:, :blocks]
        zp = raw.astype(np.float32).reshape(n, blocks, 1)
    return ((q - zp) * scales).reshape(n, -1)[:, :k].T.copy()


def float_matmul_nbits(node: Any, inits: dict[str, Any], initializers: Any) -> list:
    """MatMulNBits(A, B, scales[, zero_points, g_idx, bias]) as MatMul(A, W) (+ bias)."""
    from onnx import helper, numpy_helper

    name = f"{node.name or node.output[0]}/ref_w"
    initializers.append(numpy_helper.from_array(dequantize_nbits(node, inits), name))
    if len(node.input) > 5 and node.input[5]:
        return [helper.make_node("MatMul", [node.input[0], name], [f"{name}/y"]),
                helper.make_node("Add", [f"{name}/y", node.input[5]], list(node.output))]
    return [helper.make_node("MatMul", [node.input[0], name], list(node.output))]


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
    if is_llm(manifest):
        return run_llm_artifact(args, bundle, manifest, art)
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


# ----------------------------------------------------------------------------- LLM bundles
# A bundle whose manifest says "kind": "llm" holds decoder LLM artifacts in the KV contract
# edgekit-kv-2 (docs/llm-bundle.md). The runner owns the cache, generates greedily and judges
# greedy continuations of golden_llm.npz. The build and `edgekit generate` import these (Decoder,
# OrtDecoder, llm_spec, generate, generation_figures, token_match, golden_metrics,
# perplexity_windows, perplexity, llm_broken_bounds, judge_llm), so device and host agree.
KV_CONTRACT = "edgekit-kv-2"
# the ONNX Runtime form (edgekit.llm.gqa, which takes these names from here): a cache per layer,
# bound as input and output alike; TFLite keeps the stacked form (TFLiteDecoder)
ORT_KV_INPUTS = ("input_ids", "seqlens_k", "total_sequence_length", "logit_positions")
MASKED = -1e9
LLM_SIZES = ("layers", "kv_heads", "head_dim", "vocab", "context", "prefill_chunk")
LLM_GOLDEN = ("prompt_ids", "prompt_lengths", "reference_tokens", "first_logits")
BENCH_PROMPT_TOKENS, BENCH_NEW_TOKENS = 64, 128
NO_TOKENIZERS = "needs the tokenizers package: pip install tokenizers"


def is_llm(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "llm"


def llm_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's "llm" object, checked: the contract this runner speaks, positive sizes."""
    spec = manifest.get("llm")
    if not isinstance(spec, dict):
        raise RunnerError(f"manifest.json: kind 'llm' but no 'llm' object: {FIX}", EXIT_USAGE)
    if spec.get("contract") != KV_CONTRACT:
        raise RunnerError(f"manifest.json: KV contract {spec.get('contract')!r} is not "
                          f"{KV_CONTRACT}, the one this runner speaks: use the bundle's own "
                          f"runner or rebuild", EXIT_USAGE)
    for key in LLM_SIZES:
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunnerError(f"manifest.json: llm.{key} is {value!r}, not a positive integer: "
                              f"{FIX}", EXIT_USAGE)
    eos = spec.get("eos_token_ids") or []
    return dict(spec, eos_token_ids=[int(e) for e in (eos if isinstance(eos, list) else [eos])])


class Decoder:
    """The caller-owned KV cache of edgekit-kv-2 and the one interface generation uses:

    ``step(ids, past_len, logit_rows) -> logits [K, vocab]`` runs the T tokens ``ids`` at
    positions past_len .. past_len+T-1 against cache rows [:past_len], writes their keys and
    values to rows [past_len:past_len+T] and returns logits for the rows ``logit_rows`` of the T.
    Callers keep T <= ``prefill_chunk``; a static-shape runtime (TFLite: fixed T, P = context)
    pads and masks inside its own ``step`` and reuses these buffers as they are."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.context, self.vocab = spec["context"], spec["vocab"]
        self.prefill_chunk = spec["prefill_chunk"]
        shape = self.cache_shape(spec)
        # np.zeros maps untouched pages lazily: rows never written cost no resident memory
        self.key = np.zeros(shape, np.float32)
        self.value = np.zeros(shape, np.float32)
        self.rows_written = 0  # rows at and past this one are still zero

    def cache_shape(self, spec: dict[str, Any]) -> tuple[int, ...]:
        """The stacked layout [context, layers, kv_heads, head_dim] (static-shape runtimes)."""
        return (self.context, spec["layers"], spec["kv_heads"], spec["head_dim"])

    @property
    def kv_cache_bytes(self) -> int:
        return int(self.key.nbytes + self.value.nbytes)

    def reset(self) -> None:
        """Forget the sequence. Zeroed rather than left: a static graph reads every row and
        masks the unused ones, and 0 * NaN from stale garbage would still be NaN. Only the
        rows written so far: filling the whole buffer would make all of it resident (47 MB of
        RSS for SmolLM2 at a context of 1,024)."""
        self.key[:self.rows_written] = 0.0
        self.value[:self.rows_written] = 0.0
        self.rows_written = 0

    def claim_span(self, tokens: int, past_len: int) -> None:
        """Check that ``tokens`` after ``past_len`` fit, and record their rows as written (every
        ``step`` calls this before it writes them)."""
        if tokens < 1 or past_len < 0 or past_len + tokens > self.context:
            raise RunnerError(f"{tokens} tokens after {past_len} do not fit the context of "
                              f"{self.context}", EXIT_USAGE)
        self.rows_written = max(self.rows_written, past_len + tokens)

    def step(self, ids: list[int], past_len: int, logit_rows: list[int]) -> np.ndarray:
        raise NotImplementedError


def ort_cache_names(layers: int) -> list[tuple[str, str]]:
    """(past input, present output) of every layer's key and value (edgekit.llm.gqa)."""
    return [(f"past_{kind}_{i}", f"present_{kind}_{i}") for i in range(layers)
            for kind in ("key", "value")]


class OrtDecoder(Decoder):
    """An ONNX Runtime artifact (.onnx or .ort; T and K dynamic) in the per-layer form: each
    layer's key and value buffer [1, kv_heads, context, head_dim] is bound as both its past input
    and its present output, so GroupQueryAttention appends the new rows in place and the cache is
    never copied (past_present_share_buffer). Nothing needs zeroing on reset: the op reads rows
    up to seqlens_k only."""

    def __init__(self, ort: Any, sess: Any, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        names = ort_cache_names(spec["layers"])
        inputs = {i.name for i in sess.get_inputs()}
        outputs = {o.name for o in sess.get_outputs()}
        if inputs != set(ORT_KV_INPUTS) | {p for p, _ in names} or \
                outputs != {"logits"} | {q for _, q in names}:
            raise RunnerError(f"the artifact's inputs {sorted(inputs)[:6]} and outputs "
                              f"{sorted(outputs)[:4]} are not those of {KV_CONTRACT} for "
                              f"{spec['layers']} layers: {FIX}", EXIT_USAGE)
        self.ort, self.sess = ort, sess
        wrap = ort.OrtValue.ortvalue_from_numpy
        # bound once: re-binding 2 x layers buffers and the feeds every step cost ~0.2 ms of
        # Python per token (4 % of a 2-thread SmolLM2 decode step on the Xeon)
        self.binding = sess.io_binding()
        self.bound_shape: tuple[int, int] | None = None
        self.feeds: dict[str, np.ndarray] = {}
        self.values: dict[str, Any] = {}
        for i, (past, present) in enumerate(names):
            value = wrap(self.key[i // 2] if i % 2 == 0 else self.value[i // 2])
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)

    def cache_shape(self, spec: dict[str, Any]) -> tuple[int, ...]:
        # [layers, 1, kv_heads, context, head_dim]: buffer[i] is layer i's contiguous cache
        return (spec["layers"], 1, spec["kv_heads"], self.context, spec["head_dim"])

    def reset(self) -> None:
        self.rows_written = 0

    @classmethod
    def from_file(cls, path: Path, spec: dict[str, Any], threads: int = 1,
                  provider: str = "CPUExecutionProvider") -> OrtDecoder:
        """For callers without the runner's CLI (the build, `edgekit generate`)."""
        ort, _, _ = import_ort()
        return cls(ort, OrtBackend(ort, path, threads, provider).sess, spec)

    def step(self, ids: list[int], past_len: int, logit_rows: list[int]) -> np.ndarray:
        self.claim_span(len(ids), past_len)
        feeds = self.feeds_for(len(ids), len(logit_rows))
        end = past_len + len(ids)
        feeds["input_ids"][0] = ids
        feeds["seqlens_k"][0] = end - 1
        feeds["total_sequence_length"][()] = end
        feeds["logit_positions"][:] = logit_rows
        self.sess.run_with_iobinding(self.binding)
        return feeds["logits"].copy()  # the bound buffer is rewritten by the next step

    def feeds_for(self, tokens: int, rows: int) -> dict[str, np.ndarray]:
        """The small inputs and the logits of a (T, K) step, bound once per shape and then filled
        in place (the OrtValues share the arrays' memory): a decode loop binds nothing per token."""
        if self.bound_shape != (tokens, rows):
            self.feeds = {"input_ids": np.zeros((1, tokens), np.int64), "seqlens_k": np.zeros(1, np.int32),
                          "total_sequence_length": np.zeros((), np.int32),
                          "logit_positions": np.zeros(rows, np.int64),
                          "logits": np.zeros((rows, self.vocab), np.float32)}
            self.values = {name: self.ort.OrtValue.ortvalue_from_numpy(a) for name, a in self.feeds.items()}
            for name, value in self.values.items():
                bind = self.binding.bind_ortvalue_output if name == "logits" else self.binding.bind_ortvalue_input
                bind(name, value)
            self.bound_shape = (tokens, rows)
        return self.feeds


class TFLiteDecoder(Decoder):
    """A KV-contract ``.tflite`` (edgekit.llm.tflite) with static signatures: ``prefill`` takes
    T = prefill_chunk tokens, ``decode`` T = 1; both read the whole cache buffer (P = context)
    with an ``attention_bias`` masking the rows not yet written. A short chunk is padded at its
    end: padded queries come after the real ones, so the causal mask keeps them out of the real
    rows, and their keys are never written to the cache."""

    def __init__(self, interp: Any, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.runners = {name: interp.get_signature_runner(name) for name in ("prefill", "decode")}

    @classmethod
    def from_file(cls, path: Path, spec: dict[str, Any], threads: int = 1,
                  delegate: str = "xnnpack") -> TFLiteDecoder:
        mod, _, _ = import_tflite()
        return cls(TFLiteBackend(mod, path, threads, delegate).interp, spec)

    def step(self, ids: list[int], past_len: int, logit_rows: list[int]) -> np.ndarray:
        self.claim_span(len(ids), past_len)
        parts = []
        for start in range(0, len(ids), self.prefill_chunk):
            piece = [int(i) for i in ids[start:start + self.prefill_chunk]]
            wanted = [int(r) - start for r in logit_rows if start <= int(r) < start + len(piece)]
            logits = self.run_signature(piece, past_len + start, wanted)
            if wanted:
                parts.append(logits)
        return np.concatenate(parts) if parts else np.zeros((0, self.vocab), np.float32)

    def run_signature(self, ids: list[int], past_len: int, rows: list[int]) -> np.ndarray:
        """One signature call on at most one chunk; writes its real rows into the cache."""
        n = len(ids)
        t = 1 if n == 1 else self.prefill_chunk
        bias = np.full((t, self.context + t), MASKED, np.float32)
        bias[:, :past_len] = 0.0
        bias[:, self.context:] = np.triu(np.full((t, t), MASKED, np.float32), 1)
        # padded rows sit past the real ones; their positions are clamped into the RoPE table
        positions = np.minimum(np.arange(past_len, past_len + t), self.context - 1)
        out = self.runners["decode" if t == 1 else "prefill"](
            input_ids=np.asarray([ids + [0] * (t - n)], np.int64), position_ids=positions[None].astype(np.int64),
            attention_bias=bias, past_key=self.key, past_value=self.value,
            logit_positions=np.asarray((rows + [rows[-1] if rows else 0] * t)[:t], np.int64))
        self.key[past_len:past_len + n] = out["key"][:n]
        self.value[past_len:past_len + n] = out["value"][:n]
        return np.asarray(out["logits"][:len(rows)], np.float32)


def open_decoder(args: argparse.Namespace, manifest: dict[str, Any], art: dict[str, Any],
                 path: Path, spec: dict[str, Any]) -> tuple[Decoder, dict[str, Any], float]:
    """(decoder, runtime info, init ms), threads, provider and delegate chosen as for tensor
    artifacts."""
    backend, info, init_ms = open_backend(args, manifest, art, path)
    if isinstance(backend, TFLiteBackend):
        return TFLiteDecoder(backend.interp, spec), info, init_ms
    ort, _, _ = import_ort()
    return OrtDecoder(ort, backend.sess, spec), info, init_ms


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


def prefill(decoder: Decoder, ids: list[int]) -> np.ndarray:
    """The prompt in chunks of at most prefill_chunk tokens from an empty cache: the logits
    [vocab] of its last row only (no LM-head rows are computed for the other chunks)."""
    parts = chunks(ids, decoder.prefill_chunk)
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        logits = decoder.step(part, k * decoder.prefill_chunk, [len(part) - 1] if last else [])
    return logits[0]


def room(context: int, prompt_len: int) -> int:
    """New tokens a prompt leaves room for: the last one is never fed back, so it needs no row."""
    return context - prompt_len + 1


class Generation:
    """One greedy generation: the new tokens, the logits that chose the first, and timings.
    (A plain class: a dataclass needs its module in sys.modules, which a runner loaded from its
    file by path, as the tests and tools do, is not.)"""

    def __init__(self, tokens: list[int], first_logits: np.ndarray, prompt_tokens: int,
                 ttft_ms: float, decode_ms: list[float]) -> None:
        self.tokens, self.first_logits, self.prompt_tokens = tokens, first_logits, prompt_tokens
        self.ttft_ms, self.decode_ms = ttft_ms, decode_ms


def generate(decoder: Decoder, prompt_ids: list[int], max_new_tokens: int,
             eos_ids: Any = (), on_token: Callable[[int], None] | None = None) -> Generation:
    """Greedy (argmax) continuation of ``prompt_ids``: up to ``max_new_tokens``, stopping after
    an EOS id (kept). ttft_ms covers the prefill through the first token's argmax; decode_ms
    has one entry per later token (one step of one token plus its argmax)."""
    n = len(prompt_ids)
    if n < 1 or max_new_tokens < 1 or max_new_tokens > room(decoder.context, n):
        raise RunnerError(f"a prompt of {n} tokens and {max_new_tokens} new ones do not fit the "
                          f"context of {decoder.context}", EXIT_USAGE)
    clock, stop = time.perf_counter, {int(e) for e in eos_ids}
    decoder.reset()
    t0 = clock()
    first = prefill(decoder, prompt_ids)
    tokens = [int(np.argmax(first))]
    ttft_ms = (clock() - t0) * 1e3
    emit = on_token or (lambda _token: None)  # streaming (edgekit generate); outside the timings
    emit(tokens[-1])
    decode_ms: list[float] = []
    while len(tokens) < max_new_tokens and tokens[-1] not in stop:
        t0 = clock()
        logits = decoder.step(tokens[-1:], n + len(tokens) - 1, [0])
        tokens.append(int(np.argmax(logits[0])))
        decode_ms.append((clock() - t0) * 1e3)
        emit(tokens[-1])
    return Generation(tokens, first.copy(), n, ttft_ms, decode_ms)


def generation_figures(gen: Generation, decoder: Decoder, peak_mb: float | None,
                       text: str | None) -> dict[str, Any]:
    """The report's ``generation`` object (docs/llm-bundle.md, "Runner report")."""
    p50 = p90 = None
    if gen.decode_ms:  # a single new token (or an EOS first) has no decode step
        p50, p90 = (round(float(v), 4) for v in np.percentile(gen.decode_ms, [50, 90]))
    prefill_s = gen.ttft_ms / 1e3
    return {"ttft_ms": round(gen.ttft_ms, 3),
            "prefill_tok_s": round(gen.prompt_tokens / prefill_s, 2) if prefill_s else None,
            "decode_tok_s": round(1e3 / p50, 2) if p50 else None,
            "decode_ms_p50": p50, "decode_ms_p90": p90,
            "peak_rss_mb": None if peak_mb is None else round(peak_mb, 2),
            "kv_cache_bytes": decoder.kv_cache_bytes, "tokens": list(gen.tokens), "text": text}


def token_match(generated: Any, reference: Any) -> float:
    """Over prompts, the fraction of the reference's tokens matched, each prompt counted up to
    its first difference: after it the two continuations condition on different text."""
    matched = total = 0
    for got, ref in zip(generated, reference):
        ref = [int(t) for t in ref]
        total += len(ref)
        for a, b in zip(got, ref):
            if int(a) != b:
                break
            matched += 1
    return matched / total if total else 1.0


def llm_broken_bounds(metrics: dict[str, Any], tol: dict[str, Any]) -> list[str]:
    """The LLM tolerance rule, in one place (the build imports it): every bound that is set
    must hold (min_token_match, min_logits_cosine), and NaN/Inf logits never pass."""
    match, cos = metrics["token_match"], metrics["logits_cosine"]
    if not all(np.isfinite(v) for v in (match, cos)):
        return ["logits contain NaN or Inf"]
    broken = []
    if tol.get("min_token_match") is not None and match < tol["min_token_match"]:
        broken.append(f"token match {match:.4f} < {tol['min_token_match']}")
    if tol.get("min_logits_cosine") is not None and cos < tol["min_logits_cosine"]:
        broken.append(f"logits cosine {cos:.6f} < {tol['min_logits_cosine']}")
    return broken


def judge_llm(metrics: dict[str, Any], tol: dict[str, Any]) -> bool:
    return not llm_broken_bounds(metrics, tol)


def golden_metrics(decoder: Decoder, golden: dict[str, np.ndarray]) -> dict[str, Any]:
    """Greedy continuation of every golden prompt (no EOS stop, as the reference was made):
    token_match against reference_tokens, and the worst first-step logits cosine."""
    reference = golden["reference_tokens"]
    generated, cosines = [], []
    for row, length in enumerate(golden["prompt_lengths"]):
        gen = generate(decoder, golden["prompt_ids"][row, :int(length)].tolist(), reference.shape[1])
        generated.append(gen.tokens)
        cosines.append(cosine(gen.first_logits.astype(np.float64),
                              golden["first_logits"][row].astype(np.float64)))
    return {"token_match": token_match(generated, reference), "logits_cosine": min(cosines),
            "prompts": len(generated), "new_tokens": int(reference.shape[1])}


def perplexity_windows(tokens: list[int], context: int) -> list[list[int]]:
    """Consecutive windows of ``context`` tokens (the last may be shorter); each is scored from
    an empty cache, so a window's first token is only context, never scored."""
    return chunks(tokens, context)


def window_scores(decoder: Decoder, window: list[int]) -> tuple[float, list[int]]:
    """Teacher-forced negative log-likelihood (nats) of window[1:] and the argmax prediction of
    each scored row, in prefill chunks with logits for every row; log-softmax per chunk in
    float64 (a whole window's would be context x vocab)."""
    decoder.reset()
    nll, size, predictions = 0.0, decoder.prefill_chunk, []
    for k, part in enumerate(chunks(window, size)):
        logits = decoder.step(part, k * size, list(range(len(part)))).astype(np.float64)
        targets = window[k * size + 1:k * size + 1 + len(part)]  # the next token of each row
        logits = logits[:len(targets)]
        top = logits.max(axis=1, keepdims=True)
        logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        nll += float(np.sum(logz - logits[np.arange(len(targets)), targets]))
        predictions += [int(t) for t in logits.argmax(axis=1)]
    return nll, predictions


def teacher_forced(decoder: Decoder, tokens: list[int]) -> dict[str, Any]:
    """Perplexity exp(mean NLL) over every scored token of the windows, the number scored, and
    each scored row's argmax (next-token agreement between artifacts is computed from these)."""
    nll, scored, predictions = 0.0, 0, []
    for window in perplexity_windows(tokens, decoder.context):
        if len(window) > 1:
            window_nll, window_predictions = window_scores(decoder, window)
            nll += window_nll
            predictions += window_predictions
            scored += len(window) - 1
    if not scored:
        raise RunnerError("--perplexity: the text has fewer than 2 tokens", EXIT_USAGE)
    return {"value": float(np.exp(nll / scored)), "tokens": scored, "predictions": predictions}


def perplexity(decoder: Decoder, tokens: list[int]) -> dict[str, Any]:
    """The report's ``perplexity``: {value, tokens} (tokens scored)."""
    scored = teacher_forced(decoder, tokens)
    return {"value": scored["value"], "tokens": scored["tokens"]}


# ----------------------------------------------------------------------------- LLM: one artifact
def load_tokenizer(bundle: Path, spec: dict[str, Any], needed_by: str | None) -> Any:
    """The bundle's tokenizer through the optional `tokenizers` package, or None when it or the
    file is absent; a one-line error instead when ``needed_by`` (a flag) cannot do without it."""
    name = spec.get("tokenizer") or "tokenizer.json"
    path = bundle_member(bundle, name)
    try:
        from tokenizers import Tokenizer
    except Exception:  # ImportError, or a broken wheel
        if needed_by is None:
            return None
        hint = " (or pass token ids: --prompt-ids 1,2,3)" if needed_by == "--prompt" else ""
        raise RunnerError(f"{needed_by} {NO_TOKENIZERS}{hint}", EXIT_RUNTIME) from None
    if not path.is_file():
        if needed_by is None:
            return None
        raise RunnerError(f"{name}: missing from the bundle: {FIX}", EXIT_INTEGRITY)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise RunnerError(f"{name}: cannot read the tokenizer "
                          f"({(str(exc).splitlines() or [''])[0]}): {FIX}", EXIT_INTEGRITY) from None


def tokenizer_need(args: argparse.Namespace) -> str | None:
    return "--prompt" if args.prompt is not None else "--perplexity" if args.perplexity else None


def check_prompt(ids: list[int], spec: dict[str, Any]) -> list[int]:
    if not ids:
        raise RunnerError("the prompt is empty (no tokens)", EXIT_USAGE)
    bad = [i for i in ids if not 0 <= i < spec["vocab"]]
    if bad:
        raise RunnerError(f"token id {bad[0]} is outside the vocabulary (0 .. {spec['vocab'] - 1})",
                          EXIT_USAGE)
    if len(ids) > spec["context"]:
        raise RunnerError(f"the prompt has {len(ids)} tokens but the context holds "
                          f"{spec['context']}: shorten it", EXIT_USAGE)
    return ids


def prompt_tokens(args: argparse.Namespace, spec: dict[str, Any], tokenizer: Any) -> list[int] | None:
    """The user's prompt as checked token ids (--prompt-ids, or --prompt through the
    tokenizer, special tokens such as BOS added as the tokenizer defines); None without one."""
    if args.prompt_ids is not None:
        return check_prompt(list(args.prompt_ids), spec)
    if args.prompt is None:
        return None
    return check_prompt(list(tokenizer.encode(args.prompt).ids), spec)


def text_tokens(path: str, tokenizer: Any) -> list[int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise RunnerError(f"--perplexity: cannot read {path}: {exc}", EXIT_USAGE) from None
    return list(tokenizer.encode(text).ids)


def load_llm_golden(bundle: Path, manifest: dict[str, Any], spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """golden_llm.npz, checked against the manifest's sizes before any generation."""
    golden = load_golden(bundle, manifest)
    missing = [k for k in LLM_GOLDEN if k not in golden]
    if missing:
        raise RunnerError(f"golden data has no {missing}: {FIX}", EXIT_USAGE)
    ids, lengths, ref = golden["prompt_ids"], golden["prompt_lengths"], golden["reference_tokens"]
    n = len(lengths)
    fits = (n >= 1 and ids.ndim == 2 and ref.ndim == 2 and len(ids) == len(ref) == n
            and golden["first_logits"].shape == (n, spec["vocab"]) and ref.shape[1] >= 1
            and int(lengths.min()) >= 1 and int(lengths.max()) <= ids.shape[1]
            and ref.shape[1] <= room(spec["context"], int(lengths.max())))
    if not fits or int(ids.min()) < 0 or int(ids.max()) >= spec["vocab"]:
        raise RunnerError(f"golden data does not fit the manifest's llm sizes: {FIX}", EXIT_USAGE)
    return golden


def bench_prompt(golden: dict[str, np.ndarray], spec: dict[str, Any],
                 requested: int | None) -> tuple[list[int], int]:
    """The fixed benchmark workload: the first golden prompt repeated or cut to 64 tokens (half
    the context when that is smaller), then up to 128 (or --max-new-tokens) new tokens."""
    first = golden["prompt_ids"][0, :int(golden["prompt_lengths"][0])].tolist()
    n = min(BENCH_PROMPT_TOKENS, max(1, spec["context"] // 2))
    ids = (first * (n // len(first) + 1))[:n]
    return ids, min(requested or BENCH_NEW_TOKENS, room(spec["context"], n))


def measured_generation(decoder: Decoder, ids: list[int], max_new: int,
                        eos: Any) -> tuple[Generation, float | None]:
    """generate() with the runner's peak-RSS probes around it: (generation, peak MB)."""
    sampler = PeakSampler().start()
    gen = generate(decoder, ids, max_new, eos)
    sampled = sampler.stop()
    peaks = [p for p in (sampled, maxrss_mb()) if p is not None]
    return gen, max(peaks) if peaks else None


def llm_correctness(decoder: Decoder, golden: dict[str, np.ndarray],
                    tol: dict[str, Any]) -> dict[str, Any]:
    metrics = golden_metrics(decoder, golden)
    broken = llm_broken_bounds(metrics, tol)
    return dict(metrics, passed=not broken, broken=broken, tolerance=tol, semantics="kernels")


def llm_workload(args: argparse.Namespace, decoder: Decoder, spec: dict[str, Any],
                 prompt: list[int]) -> tuple[int, list[int]]:
    """The user's prompt: (new tokens, EOS ids), capped by the context; one short warm-up
    generation first (unless --warmup 0), so the first call's allocations are not in ttft."""
    max_new = min(args.max_new_tokens or BENCH_NEW_TOKENS, room(spec["context"], len(prompt)))
    if args.warmup:
        warm = prompt[:decoder.prefill_chunk]
        generate(decoder, warm, min(2, room(decoder.context, len(warm))))
    return max_new, spec["eos_token_ids"]


def run_llm_artifact(args: argparse.Namespace, bundle: Path, manifest: dict[str, Any],
                     art: dict[str, Any]) -> Result:
    """Integrity, load; then the golden verdict and the benchmark generation (EOS ignored: a
    fixed workload), or the user's prompt; then --perplexity. One result with `generation`."""
    path = check_artifact(bundle, art)
    spec = llm_spec(manifest)
    tokenizer = load_tokenizer(bundle, spec, tokenizer_need(args))
    prompt = prompt_tokens(args, spec, tokenizer)
    golden = load_llm_golden(bundle, manifest, spec) if prompt is None else None
    latency_stats([0.0])  # numpy's lazy percentile import: not the model's RSS
    rss_before = rss_mb()
    decoder, runtime, init_ms = open_decoder(args, manifest, art, path, spec)
    rss_loaded = rss_mb()
    correctness = None
    if golden is not None:
        correctness = llm_correctness(decoder, golden, art.get("tolerance") or {})
        prompt, max_new = bench_prompt(golden, spec, args.max_new_tokens)
        eos: list[int] = []
    else:
        max_new, eos = llm_workload(args, decoder, spec, prompt)
    gen, peak = measured_generation(decoder, prompt, max_new, eos)
    text = None if tokenizer is None else tokenizer.decode(gen.tokens)
    result = empty_result(art)
    result.update(bytes=path.stat().st_size, runtime=runtime, init_ms=round(init_ms, 3),
                  memory_mb=memory_figures(rss_before, rss_loaded, None, peak, None, 0),
                  generation=generation_figures(gen, decoder, peak, text), correctness=correctness)
    if args.perplexity:
        result["perplexity"] = perplexity(decoder, text_tokens(args.perplexity, tokenizer))
    return result


def check_llm_args(args: argparse.Namespace, bundle: Path, manifest: dict[str, Any]) -> None:
    """Before any artifact runs: LLM flags only on an LLM bundle, and the prompt, tokenizer and
    text checked once here rather than once per artifact subprocess."""
    flags = [f for f, v in (("--prompt", args.prompt), ("--prompt-ids", args.prompt_ids),
                            ("--max-new-tokens", args.max_new_tokens),
                            ("--perplexity", args.perplexity)) if v is not None]
    if not is_llm(manifest):
        if flags:
            raise RunnerError(f"{flags[0]} applies to LLM bundles (manifest \"kind\": \"llm\") "
                              f"only", EXIT_USAGE)
        return
    spec = llm_spec(manifest)
    tokenizer = load_tokenizer(bundle, spec, tokenizer_need(args))
    prompt_tokens(args, spec, tokenizer)
    if args.perplexity:
        text_tokens(args.perplexity, tokenizer)

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
    passed = result["correctness"] is None or result["correctness"]["passed"]  # None: --prompt
    return result, EXIT_OK if passed else EXIT_FAILED


def child_command(args: argparse.Namespace, bundle: Path, file: str, out: Path) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), str(bundle), "--artifact", file,
           "--json", str(out), "--quiet", "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--min-seconds", str(args.min_seconds), "--max-seconds", str(args.max_seconds)]
    for flag, value in (("--threads", args.threads), ("--delegate", args.delegate),
                        ("--provider", args.provider)):
        if value is not None:
            cmd += [flag, str(value)]
    # "--flag=value": a prompt may start with "-"
    for flag, value in (("--prompt", args.prompt), ("--max-new-tokens", args.max_new_tokens),
                        ("--perplexity", args.perplexity and os.path.abspath(args.perplexity))):
        if value is not None:
            cmd.append(f"{flag}={value}")
    if args.prompt_ids is not None:
        cmd.append("--prompt-ids=" + ",".join(map(str, args.prompt_ids)))
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


def report_header(report: dict[str, Any]) -> list[str]:
    d = report["device"]
    return [f"{PROG} {RUNNER_VERSION}  bundle {report['bundle']}  target {report['target']}",
            f"device: {d['machine']}, {d['cpu_model']}, {d['cores']} cores, governor "
            f"{d['cpufreq_governor'] or '-'}, SoC {fmt(d['soc_temp_c_before'], '.1f')} -> "
            f"{fmt(d['soc_temp_c_after'], '.1f')} C, Python {d['python']}", ""]


def format_table(report: dict[str, Any]) -> str:
    lines = report_header(report)
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


def format_llm_table(report: dict[str, Any]) -> str:
    """The LLM bundle's table: load, generation speed, memory and the golden verdict."""
    head = (f"{'artifact':<24} {'runtime':<20} {'thr':>3} {'init ms':>8} {'ttft ms':>8} "
            f"{'pre t/s':>8} {'dec t/s':>8} {'p90 ms':>7} {'peak MB':>8} {'match':>6} "
            f"{'cosine':>8}  result")
    lines = report_header(report) + [head, "-" * len(head)]
    notes = []
    for r in report["results"]:
        rt, gen, cor = r["runtime"] or {}, r.get("generation") or {}, r["correctness"] or {}
        runtime = f"{rt.get('name', '-')} {rt.get('version') or ''}".strip()
        verdict = "ERROR" if r["error"] else ("PASS" if cor.get("passed") else "FAIL")
        lines.append(
            f"{r['file']:<24} {runtime:<20} {fmt(rt.get('threads'), 'd'):>3} "
            f"{fmt(r['init_ms'], '.1f'):>8} {fmt(gen.get('ttft_ms'), '.1f'):>8} "
            f"{fmt(gen.get('prefill_tok_s'), '.1f'):>8} {fmt(gen.get('decode_tok_s'), '.1f'):>8} "
            f"{fmt(gen.get('decode_ms_p90'), '.2f'):>7} {fmt(gen.get('peak_rss_mb'), '.1f'):>8} "
            f"{fmt(cor.get('token_match'), '.3f'):>6} {fmt(cor.get('logits_cosine'), '.5f'):>8}  "
            f"{verdict}")
        notes += [f"  {r['file']}: {r['error']}"] if r["error"] else []
        notes += [f"  {r['file']}: {b}" for b in cor.get("broken") or []]
        if r.get("perplexity"):
            notes.append(f"  {r['file']}: perplexity {r['perplexity']['value']:.4f} over "
                         f"{r['perplexity']['tokens']} tokens")
    return "\n".join(lines + notes)


def format_generations(report: dict[str, Any]) -> str:
    """--prompt / --prompt-ids: the generated text (token ids without a tokenizer) per artifact,
    each under a `== file` line when there are several."""
    out, results = [], report["results"]
    for r in results:
        gen = r.get("generation")
        if len(results) > 1:
            out.append(f"== {r['file']}")
        if gen:
            out.append(gen["text"] if gen["text"] is not None else ",".join(map(str, gen["tokens"])))
    return "\n".join(out)


def generation_summary(report: dict[str, Any]) -> list[str]:
    """One stderr line per artifact, so stdout stays only the text."""
    lines = []
    for r in report["results"]:
        gen = r.get("generation") or {}
        if gen:
            lines.append(f"{r['file']}: {len(gen['tokens'])} tokens, ttft {fmt(gen['ttft_ms'], '.1f')} "
                         f"ms, prefill {fmt(gen['prefill_tok_s'], '.1f')} tok/s, decode "
                         f"{fmt(gen['decode_tok_s'], '.1f')} tok/s, peak {fmt(gen['peak_rss_mb'], '.1f')} MB")
    return lines


def show_report(report: dict[str, Any], args: argparse.Namespace, manifest: dict[str, Any]) -> None:
    if not is_llm(manifest):
        print(format_table(report), flush=True)
    elif args.prompt is None and args.prompt_ids is None:
        print(format_llm_table(report), flush=True)
    else:
        print(format_generations(report), flush=True)
        for line in generation_summary(report):
            eprint(line)


def to_json(report: dict[str, Any]) -> str:
    """Indented JSON, but number lists (samples_ms: thousands) kept on one line each."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def token_ids(text: str) -> list[int]:
    """--prompt-ids: comma-separated non-negative integers (the vocabulary is checked later)."""
    parts = [t.strip() for t in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", t) for t in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated token ids like 1,2,3")
    return [int(t) for t in parts]


def add_llm_arguments(p: argparse.ArgumentParser) -> None:
    llm = p.add_argument_group("LLM bundles")
    prompt = llm.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="generate from this text and print it (needs tokenizers)")
    prompt.add_argument("--prompt-ids", type=token_ids, metavar="1,2,3",
                        help="generate from these token ids (no tokenizer needed)")
    llm.add_argument("--max-new-tokens", type=int, help=f"new tokens (default {BENCH_NEW_TOKENS}, "
                     "capped by the context)")
    llm.add_argument("--perplexity", metavar="FILE", help="also score this text (teacher-forced, "
                     "windows of the context; needs tokenizers)")


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
    add_llm_arguments(p)
    p.add_argument("--json", dest="json_out", help="also write the full report as JSON here")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # used by children

    def one_line(message: str) -> None:  # argparse's default prints the whole usage block
        eprint(f"error: {message} (see {PROG} --help)")
        sys.exit(EXIT_USAGE)

    p.error = one_line  # type: ignore[method-assign]
    args = p.parse_args(argv)
    bounds = (("--runs", args.runs, 1), ("--threads", args.threads, 1), ("--warmup", args.warmup, 0),
              ("--min-seconds", args.min_seconds, 0), ("--max-seconds", args.max_seconds, None),
              ("--max-new-tokens", args.max_new_tokens, 1))
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
        check_llm_args(args, bundle, manifest)
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
        show_report(report, args, manifest)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(to_json(report), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
