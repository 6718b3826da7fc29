"""One LLM engine at one thread count, in its own process: the child side of llm_benchmark.py.

Standalone (stdlib + numpy + the engine's own runtime; edgekit's engine is the device runner,
loaded from its file) so llama.cpp can run from its own venv and each child's peak RSS is that
engine's alone. Every engine is driven the same way: ``feed(ids)``
runs the model on new tokens after the cache and returns logits, and the greedy token is numpy's
argmax here, for every engine, so no engine's sampler or EOS handling decides the token count.

    python benchmarks/_llm_engines.py JOB.json OUT.json
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RUNNER = Path(__file__).resolve().parents[1] / "edgekit" / "runner" / "edgekit_runner.py"


class OrtGenAI:
    """ONNX Runtime GenAI's model (a builder output folder): ``append_tokens`` runs the decoder on
    the new tokens; ``get_logits`` is the last row, ``get_output("logits")`` every row fed."""

    def __init__(self, folder: str, threads: int, context: int) -> None:
        import onnxruntime_genai as og

        config = og.Config(folder)
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.og, self.model, self.context, self.generator = og, og.Model(config), context, None
        self.version = {"onnxruntime-genai": og.__version__}

    def reset(self) -> None:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.context, do_sample=False)
        self.generator = None  # free the old KV buffers first
        self.generator = self.og.Generator(self.model, params)

    def feed(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        self.generator.append_tokens(np.asarray(ids, np.int32))
        if all_logits:
            return np.asarray(self.generator.get_output("logits"))[0]
        return np.asarray(self.generator.get_logits()).reshape(1, -1)


class LlamaCpp:
    """llama.cpp through llama-cpp-python's ``Llama.eval`` (the low-level decode loop, no sampler).
    The last row's logits are read from the context (``llama_get_logits_ith(ctx, -1)``: ``eval``
    keeps no logits without ``logits_all``); with ``logits_all`` every row is in ``Llama.scores``.
    ``extra_buffers=False`` loads with ``use_extra_bufts = false`` (llama.cpp's --no-repack): no
    weight repacking and no AMX buffer, whose tile kernels die with SIGILL on some VMs."""

    def __init__(self, gguf: str, threads: int, context: int, all_logits: bool = False,
                 extra_buffers: bool = True) -> None:
        import llama_cpp
        import llama_cpp.llama_cpp as lib

        if not extra_buffers:  # Llama() takes its model params from this function; no keyword for it
            default = lib.llama_model_default_params

            def params():
                out = default()
                out.use_extra_bufts = False
                return out

            lib.llama_model_default_params = params
        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=gguf, n_ctx=context, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=all_logits, verbose=False)
        self.vocab = self.llm.n_vocab()
        self.version = {"llama-cpp-python": llama_cpp.__version__,
                        "llama.cpp system info": llama_cpp.llama_print_system_info().decode().strip(),
                        "use_extra_bufts": extra_buffers}

    def reset(self) -> None:
        self.llm.reset()

    def feed(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        start = self.llm.n_tokens
        self.llm.eval(list(ids))
        if all_logits:
            return np.array(self.llm.scores[start:self.llm.n_tokens])
        last = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(last, shape=(1, self.vocab)).copy()


def load_runner(file: Path | None = None):
    """The device runner, loaded from its file as a device does (a bundle's own copy, else the repo's)."""
    import importlib.util

    file = file if file and file.is_file() else RUNNER
    spec = importlib.util.spec_from_file_location("edgekit_runner", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("edgekit_runner", module)
    spec.loader.exec_module(module)
    return module


class RunnerEngine:
    """edgekit's device runner (edgekit_runner.py): its OrtDecoder (I/O binding straight into
    the caller-owned KV cache of the contract), prompts in chunks of ``prefill_chunk``, and its
    ``generate`` for the generation figures."""

    def __init__(self, runner, onnx: Path, spec: dict | None, threads: int, context: int, prefill_chunk: int) -> None:
        ort, _, version = runner.import_ort()
        session = runner.OrtBackend(ort, onnx, threads, "CPUExecutionProvider").sess
        if spec is None:  # a bare contract ONNX: the sizes from its signature
            shapes = {i.name: i.shape for i in session.get_inputs()}
            layers = sum(name.startswith("past_key_") for name in shapes)  # the per-layer ORT form
            _, kv_heads, _, head_dim = shapes["past_key_0"]
            spec = {"context": context, "vocab": session.get_outputs()[0].shape[1], "prefill_chunk": prefill_chunk,
                    "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim}
        self.runner, self.decoder, self.past = runner, runner.OrtDecoder(ort, session, spec), 0
        self.version = {"onnxruntime": version, "runner": str(Path(runner.__file__).resolve()),
                        "prefill_chunk": spec["prefill_chunk"], "context": spec["context"]}

    def reset(self) -> None:
        self.decoder.reset()
        self.past = 0

    def feed(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        parts, out = self.runner.chunks(ids, self.decoder.prefill_chunk), []
        for k, part in enumerate(parts):
            rows = list(range(len(part))) if all_logits else [len(part) - 1] if k == len(parts) - 1 else []
            logits = self.decoder.step(part, self.past, rows)
            self.past += len(part)
            out += [logits] if rows else []
        return np.concatenate(out)

    def generate(self, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray, float, list[float]]:
        gen = self.runner.generate(self.decoder, prompt, new_tokens)  # no EOS ids: exactly new_tokens
        return gen.tokens, gen.first_logits, gen.ttft_ms, gen.decode_ms


def edgekit_engine(bundle_or_onnx: str, threads: int, context: int, artifact: str | None = None,
                   prefill_chunk: int = 64) -> RunnerEngine:
    """An edgekit artifact through the device runner: a bundle folder (its own runner and
    manifest; ``artifact`` names the file, else its first ONNX artifact), or a bare contract ONNX
    (the repo's runner; ``context`` and ``prefill_chunk`` as a bundle's manifest would give)."""
    path = Path(bundle_or_onnx)
    if not path.is_dir():
        return RunnerEngine(load_runner(), path, None, threads, context, prefill_chunk)
    runner = load_runner(path / "edgekit_runner.py")
    manifest = json.loads((path / "manifest.json").read_text())
    onnx = [a["file"] for a in manifest["artifacts"] if a.get("format") == "onnx"]
    return RunnerEngine(runner, path / (artifact or onnx[0]), runner.llm_spec(manifest), threads, context, prefill_chunk)


def make_engine(job: dict, all_logits: bool = False):
    kind, path, threads, context = job["kind"], job["path"], job["threads"], job["context"]
    if kind == "ortgenai":
        return OrtGenAI(path, threads, context)
    if kind == "llamacpp":
        return LlamaCpp(path, threads, context, all_logits=all_logits, extra_buffers=job.get("llama_extra_buffers", True))
    if kind == "edgekit":
        return edgekit_engine(path, threads, context, job.get("artifact"))
    raise ValueError(f"unknown engine kind {kind!r}")


def prefill_tok_s(engine, ids: list[int], reps: int) -> float:
    """Prompt tokens per second from an empty cache, until the first token is picked; median of reps."""
    seconds = []
    for _ in range(reps):
        engine.reset()
        t0 = time.perf_counter()
        int(engine.feed(ids)[-1].argmax())
        seconds.append(time.perf_counter() - t0)
    return len(ids) / statistics.median(seconds)


def greedy(engine, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray, float, list[float]]:
    """(tokens, first logits, TTFT ms, per-step ms): the prefill through the first argmax, then
    one step of one token plus its argmax each, as the device runner's generate times them."""
    engine.reset()
    t0 = time.perf_counter()
    first = engine.feed(prompt)[-1]
    tokens = [int(first.argmax())]
    ttft_ms = (time.perf_counter() - t0) * 1e3
    steps = []
    while len(tokens) < new_tokens:
        t0 = time.perf_counter()
        tokens.append(int(engine.feed([tokens[-1]])[-1].argmax()))
        steps.append((time.perf_counter() - t0) * 1e3)
    return tokens, first, ttft_ms, steps


def generate(engine, prompt: list[int], new_tokens: int) -> dict:
    """Exactly ``new_tokens`` greedy tokens (EOS ignored), by the engine's own generate where it has
    one (edgekit's runner), else by ``greedy``."""
    own = getattr(engine, "generate", None)
    tokens, first, ttft_ms, steps = own(prompt, new_tokens) if own else greedy(engine, prompt, new_tokens)
    ms = np.array(steps) if steps else np.array([np.nan])
    top2 = np.sort(first)[-2:]
    return {"ttft_ms": ttft_ms, "decode_ms_p50": float(np.median(ms)), "decode_ms_p90": float(np.percentile(ms, 90)),
            "decode_tok_s": 1e3 / float(np.median(ms)), "tokens": tokens, "first_top2_margin": float(top2[1] - top2[0])}


def perplexity(engine, windows: list[list[int]]) -> dict:
    """Teacher-forced: each window from an empty cache in one pass with logits for every row;
    row i predicts token i + 1 (the first token of a window is context only)."""
    nll, count = 0.0, 0
    for window in windows:
        engine.reset()
        logits = engine.feed(window, all_logits=True).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        targets = np.asarray(window[1:])
        nll -= float(log_probs[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return {"value": float(np.exp(nll / count)), "tokens": count, "windows": len(windows)}


def speed(engine, job: dict) -> dict:
    """Warm-up (one short prefill and a few steps, unmeasured), then the prefill and generation figures."""
    prompts = job["prompts"]
    generate(engine, prompts["short"], 4)
    out = {f"prefill_tok_s_{len(ids)}": prefill_tok_s(engine, ids, job["reps"]) for ids in prompts.values()}
    return out | generate(engine, prompts["short"], job["new_tokens"])


def run(job: dict) -> dict:
    t0 = time.perf_counter()
    engine = make_engine(job, all_logits=job["task"] == "perplexity")
    load_s = time.perf_counter() - t0
    figures = perplexity(engine, job["windows"]) if job["task"] == "perplexity" else speed(engine, job)
    return {"load_s": load_s, "versions": engine.version, "numpy": np.__version__,
            "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024} | figures


if __name__ == "__main__":
    job_file, out_file = sys.argv[1:3]
    Path(out_file).write_text(json.dumps(run(json.loads(Path(job_file).read_text()))) + "\n")
