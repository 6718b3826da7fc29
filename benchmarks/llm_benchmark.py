"""SmolLM2-135M on ONNX Runtime GenAI, llama.cpp and edgekit's artifacts, side by side in one run.

    python benchmarks/llm_benchmark.py [--threads 1 2] [--rounds 3] [--new-tokens 128] [--quick]
        [--edgekit FILE_OR_BUNDLE ...] [--llama-python PY] [--engines SUBSTRING ...]

Engines, all from the same model (the fp32 HF folder edgekit caches from the shipped Q4_1 GGUF):
ORT GenAI's builder int4 (its defaults) and fp32, built from that folder and cached under
~/.cache/edgekit/bench; llama.cpp (llama-cpp-python) on the shipped Q4_1 GGUF and a Q8_0 GGUF
converted from the folder; edgekit's ONNX in the KV contract (a bundle's artifacts, or a bare
contract ONNX) run by the device runner's decoder and generate (_llm_engines.edgekit_engine).

Every figure is taken in a fresh subprocess per engine x threads x round (peak RSS is that child's
ru_maxrss, from wait4), rounds interleave the engines (rotated order), and the table gives the
median over rounds. Same prompt token ids for all (SmolLM2's tokenizer.json via `tokenizers`), the
greedy token is numpy's argmax of each engine's logits, exactly --new-tokens tokens (EOS ignored).
Perplexity: the held-out text split teacher-forced in windows, one subprocess per engine.
Writes benchmarks/results/llm_benchmark.{json,md} (--quick: llm_benchmark_quick.*).

Setup outside the repo: llama-cpp-python in its own venv (--llama-python; numpy, diskcache, jinja2,
typing-extensions and the wheel with --no-deps); llama.cpp's convert_hf_to_gguf.py with its
conversion/ and gguf-py/ folders (--llama-convert; copied from the llama-cpp-python 0.3.36 sdist's
vendor/llama.cpp) for the Q8_0, made once. llama.cpp runs with use_extra_bufts off unless
--llama-extra-buffers: this VM advertises AMX, but ggml's AMX tile kernels die with SIGILL here.
Figures taken while other work shares the cores say little; the load average is in every row,
and llama.cpp's OpenMP barriers suffer most at 2 threads on oversubscribed cores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD = HERE / "_llm_engines.py"
CACHE = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "bench"
HF_FOLDER = Path.home() / ".cache" / "edgekit" / "llm" / "b179c9523d0e6a0f"
CONTRACT_ONNX = Path("/work/wt/_llm/smol_fp32_ctx2048.onnx")
LLAMA_PYTHON = Path("/work/wt/_llm/bench-venv/bin/python")
LLAMA_CONVERT = Path("/work/wt/_llm/llama_convert")  # convert_hf_to_gguf.py + gguf-py from llama.cpp
TEXT = REPO / "calibration_data" / "text" / "sentences.jsonl"
CONTEXT = 1024  # KV capacity every engine allocates


@dataclass(frozen=True)
class Engine:
    name: str
    kind: str  # ortgenai | llamacpp | edgekit
    path: str
    python: str
    file_bytes: int
    artifact: str | None = None
    facts: dict | None = None


def _run_logged(cmd: list[str], log: Path, env: dict | None = None) -> None:
    with log.open("w") as handle:
        if subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... failed, see {log}")


def ortgenai_folder(precision: str, hf: Path) -> Path:
    """The builder's output for ``precision`` (its defaults otherwise), built once and cached."""
    out = CACHE / f"ortgenai_{precision}"
    if not (out / "genai_config.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = CACHE / f"ortgenai_{precision}.tmp"
        _run_logged([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(staging),
                     "-p", precision, "-e", "cpu", "-c", str(CACHE / f"ortgenai_cache_{precision}")],
                    CACHE / f"build_{precision}.log")
        staging.rename(out)
    return out


def q8_0_gguf(hf: Path, convert: Path) -> Path:
    """A Q8_0 GGUF of the HF folder by llama.cpp's own converter (convert_hf_to_gguf.py --outtype
    q8_0, with its gguf-py). It imports sentencepiece before looking for tokenizer.model (SmolLM2
    has none): a stub module stands in for it."""
    out = CACHE / "smollm2-135m-q8_0.gguf"
    if not out.is_file():
        stub = Path(tempfile.mkdtemp()) / "sentencepiece"
        stub.mkdir()
        (stub / "__init__.py").write_text("class SentencePieceProcessor:\n    pass\n")
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(convert / "gguf-py"), str(convert), str(stub.parent)])}
        _run_logged([sys.executable, str(convert / "convert_hf_to_gguf.py"), str(hf), "--outtype", "q8_0",
                     "--outfile", str(out.with_suffix(".tmp"))], CACHE / "convert_q8_0.log", env)
        out.with_suffix(".tmp").rename(out)
    return out


def _size(path: Path) -> int:
    files = [p for p in path.iterdir() if p.name.startswith("model.onnx")] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files)


def graph_facts(folder: Path) -> dict:
    """What the builder chose: op counts and the MatMulNBits settings (bits, block, accuracy level)."""
    import collections

    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    nbits = collections.Counter(
        ",".join(f"{a.name}={onnx.helper.get_attribute_value(a)}" for a in n.attribute
                 if a.name in ("bits", "block_size", "accuracy_level")) for n in graph.node if n.op_type == "MatMulNBits")
    return {"ops": dict(collections.Counter(n.op_type for n in graph.node).most_common(6)), "MatMulNBits": dict(nbits)}


def llama_blocked(python: Path) -> str | None:
    """Why llama.cpp cannot run (None when it can)."""
    if not python.is_file():
        return f"{python} does not exist (no llama-cpp-python venv)"
    probe = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True, text=True)
    return f"import llama_cpp failed: {probe.stderr.strip().splitlines()[-1:]}" if probe.returncode else None


def edgekit_engines(paths: list[Path]) -> list[Engine]:
    """One engine per ONNX artifact of each bundle folder, or the contract ONNX file itself."""
    out = []
    for path in paths:
        if path.is_dir():
            manifest = json.loads((path / "manifest.json").read_text())
            out += [Engine(f"edgekit {a.get('precision', a['file'])}", "edgekit", str(path), sys.executable,
                           a.get("bytes") or (path / a["file"]).stat().st_size, a["file"])
                    for a in manifest["artifacts"] if a.get("format") == "onnx"]
        else:
            out.append(Engine(f"edgekit {path.stem}", "edgekit", str(path), sys.executable, path.stat().st_size))
    return out


def _wanted(name: str, filters: list[str] | None) -> bool:
    return not filters or any(f.lower() in name.lower() for f in filters)


def engines(args) -> tuple[list[Engine], dict[str, str]]:
    """The engines to measure (only the selected ones are built) and, for those that cannot run, why."""
    from edgekit.llm.source import example_gguf

    chosen, blocked = [], {}
    for precision in ("int4", "fp32"):
        if _wanted(f"ORT GenAI {precision}", args.engines):
            folder = ortgenai_folder(precision, args.hf)
            chosen.append(Engine(f"ORT GenAI {precision}", "ortgenai", str(folder), sys.executable, _size(folder),
                                 facts=graph_facts(folder)))
    makers = {"Q4_1": lambda: example_gguf("smollm2"), "Q8_0": lambda: q8_0_gguf(args.hf, args.llama_convert)}
    wanted = [q for q in makers if _wanted(f"llama.cpp {q}", args.engines)]
    reason = llama_blocked(args.llama_python) if wanted else None
    if reason:
        blocked["llama.cpp"] = reason
    for quant in [] if reason else wanted:
        gguf = makers[quant]()
        chosen.append(Engine(f"llama.cpp {quant}", "llamacpp", str(gguf), str(args.llama_python), gguf.stat().st_size))
    chosen += [e for e in edgekit_engines(args.edgekit) if _wanted(e.name, args.engines)]
    return chosen, blocked


def token_sets(hf: Path, long_prompt: int, window: int, max_ppl_tokens: int | None) -> dict:
    """Prompts from the calibration split, perplexity windows from the held-out split."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(hf / "tokenizer.json"))
    rows = [json.loads(line) for line in TEXT.read_text().splitlines() if line.strip()]

    def ids(split: str) -> list[int]:
        return tokenizer.encode(" ".join(r["text"] for r in rows if r["split"] == split)).ids

    prompt, heldout = ids("calibration"), ids("heldout")[:max_ppl_tokens]
    windows = [heldout[i:i + window] for i in range(0, len(heldout), window)]
    return {"tokenizer": tokenizer, "prompts": {"short": prompt[:64], "long": prompt[:long_prompt]},
            "windows": [w for w in windows if len(w) > 1]}


def run_child(engine: Engine, job: dict, work: Path) -> dict:
    """One child process; its peak RSS comes from wait4's rusage of that very process."""
    job = job | {"kind": engine.kind, "path": engine.path, "artifact": engine.artifact, "context": CONTEXT}
    job_file, out_file, log = work / "job.json", work / "out.json", work / "child.log"
    job_file.write_text(json.dumps(job))
    out_file.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    # an existing PYTHONPATH is kept: it may hold onnxruntime-genai installed beside the locked venv
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"OMP_NUM_THREADS": str(job["threads"]), "PYTHONPATH": path}
    with log.open("w") as handle:
        child = subprocess.Popen([engine.python, str(CHILD), str(job_file), str(out_file)], stdout=handle,
                                 stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code or not out_file.is_file():
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return {"error": f"{how}: {log.read_text()[-800:]}"}
    return json.loads(out_file.read_text()) | {"peak_rss_mb": usage.ru_maxrss / 1024, "loadavg_1m_at_start": load}


def measure(chosen: list[Engine], tokens: dict, args, work: Path) -> dict:
    """Speed: rounds x threads x engines, the engine order rotated each round. Then perplexity."""
    job = {"task": "speed", "prompts": tokens["prompts"], "new_tokens": args.new_tokens, "reps": args.reps,
           "llama_extra_buffers": args.llama_extra_buffers}
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for threads in args.threads:
            for engine in chosen[r % len(chosen):] + chosen[:r % len(chosen)]:
                key = f"{engine.name} @ {threads}"
                print(f"round {r + 1}/{args.rounds}: {key}", flush=True)
                runs.setdefault(key, []).append(run_child(engine, job | {"threads": threads}, work))
    ppl_job = {"task": "perplexity", "windows": tokens["windows"], "threads": max(args.threads),
               "llama_extra_buffers": args.llama_extra_buffers}
    ppl = {}
    for engine in chosen:
        print(f"perplexity: {engine.name}", flush=True)
        ppl[engine.name] = run_child(engine, ppl_job, work)
    return {"runs": runs, "perplexity": ppl}


FIGURES = ("prefill_tok_s_64", "ttft_ms", "decode_tok_s", "decode_ms_p50", "decode_ms_p90", "peak_rss_mb", "load_s",
           "first_top2_margin", "loadavg_1m_at_start")


def reference_engine(chosen: list[Engine]) -> str:
    """The greedy-token reference: the first fp32 engine."""
    return next((e for e in chosen if "fp32" in e.name), chosen[0]).name


def summarize(chosen: list[Engine], measured: dict, args, tokenizer) -> list[dict]:
    """Per engine x threads: the median over rounds of each figure; tokens and text of round 1,
    compared with the reference engine's at the same thread count."""
    rows, runs = [], measured["runs"]
    long_key = f"prefill_tok_s_{args.long_prompt}"
    for threads in args.threads:
        reference = runs[f"{reference_engine(chosen)} @ {threads}"][0].get("tokens", [])
        for engine in chosen:
            good = [r for r in runs[f"{engine.name} @ {threads}"] if "error" not in r]
            row = {"engine": engine.name, "threads": threads, "file_mb": engine.file_bytes / 2**20, "rounds": len(good),
                   "perplexity": measured["perplexity"][engine.name].get("value")}
            if not good:
                rows.append(row | {"error": runs[f"{engine.name} @ {threads}"][0]["error"]})
                continue
            row |= {k: statistics.median(r[k] for r in good) for k in (*FIGURES, long_key)}
            tokens = good[0]["tokens"]
            row |= {"tokens_same_every_round": all(r["tokens"] == tokens for r in good),
                    "first_divergence_from_reference": next((i for i, (a, b) in enumerate(zip(tokens, reference))
                                                             if a != b), None),
                    "tokens": tokens, "text": tokenizer.decode(tokens), "versions": good[0]["versions"]}
            rows.append(row)
    return rows


def host() -> dict:
    from edgekit.verify import hostinfo

    info = hostinfo.describe()
    flags = hostinfo.cpu_flags()
    info["key_flags"] = {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")}
    info["packages"] = hostinfo.package_versions(("onnxruntime", "onnxruntime-genai", "numpy", "tokenizers", "onnx"))
    return info


def _cell(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(result: dict) -> str:
    h, s = result["host"], result["settings"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in h["key_flags"].items())
    long = s["long_prompt"]
    lines = [f"# LLM engines side by side: SmolLM2-135M-Instruct{' (QUICK smoke run)' if s['quick'] else ''}", "",
             f"{result['date']}. CPU: {h['cpu']} ({h['arch']}); {flags}. Load average (1 min) before "
             f"{result['load_average_before']}, after {result['load_average_after']} (2 cores shared: not final).", "",
             f"Prompt {s['short_prompt']} tokens (prefill also at {long}), {s['new_tokens']} greedy new tokens (EOS "
             f"ignored), median over {s['rounds']} interleaved rounds, prefill median of {s['reps']} per round; "
             f"KV capacity {s['context']}. Perplexity: {s['perplexity_tokens']} held-out tokens teacher-forced in "
             f"windows of {s['window']} at {max(s['threads'])} threads.", "",
             f"| engine | threads | file MB | peak RSS MB | prefill {s['short_prompt']} tok/s | prefill {long} tok/s | "
             f"TTFT {s['short_prompt']} ms | decode tok/s | decode p90 ms | perplexity | "
             f"greedy = {s['greedy_reference']} up to | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            why = r["error"][:60].splitlines()[0]
            lines.append(f"| {r['engine']} | {r['threads']} | {r['file_mb']:.1f} | failed: {why} | | | | | | | | |")
            continue
        div = r["first_divergence_from_reference"]
        lines.append(f"| {r['engine']} | {r['threads']} | {r['file_mb']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['prefill_tok_s_64']:.0f} | {r[f'prefill_tok_s_{long}']:.0f} | {r['ttft_ms']:.0f} | "
                     f"{r['decode_tok_s']:.1f} | {r['decode_ms_p90']:.1f} | {_cell(r['perplexity'], 2)} | "
                     f"{'all' if div is None else div} | {r['loadavg_1m_at_start']:.1f} |")
    lines += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in result["versions"].items()), ""]
    lines += [f"- engine {e['name']}: {e['path']}{' ' + e['artifact'] if e['artifact'] else ''}"
              f"{' ' + json.dumps(e['facts']['MatMulNBits']) if e['facts'] and e['facts']['MatMulNBits'] else ''}"
              for e in result["engines"]]
    lines += [f"- {k}: {v}" for k, v in result["how"].items()]
    lines += [f"- BLOCKED {k}: {v}" for k, v in result["blocked"].items()]
    return "\n".join(lines) + "\n"


HOW = {
    "each figure": "one fresh subprocess per engine x threads x round; after loading, an unmeasured warm-up "
                   "(the 64-token prefill and 3 decode steps), then the timed prefills and one generation",
    "prefill tok/s": "prompt tokens / (feeding the prompt into an empty cache until the first token is picked)",
    "TTFT": "the same for the 64-token prompt inside the generation run (model already loaded)",
    "decode": "per-step latency of feeding one token and taking the argmax, over the new tokens after the first; "
              "tok/s = 1 / median step, p90 of the steps",
    "peak RSS": "ru_maxrss of the child (wait4), i.e. load + warm-up + prefills + generation (mmapped GGUF "
                "pages count once touched)",
    "load avg": "1-minute load average when each child started (median over rounds)",
    "greedy agreement": "index of the first generated token that differs from the reference's (same thread count); "
                        "first_top2_margin in the JSON is the logit gap of the first token's top two: a near-tie "
                        "there makes a divergence at 0 say little",
    "perplexity caveat": "the fp32 'original' is SmolLM2 dequantized from the shipped Q4_1 GGUF, so llama.cpp Q4_1 "
                         "matches it by construction; the other quantizations re-round those weights",
    "ORT GenAI": "og.Generator, greedy search options, append_tokens per step, argmax of get_logits (threads via "
                 "the config overlay's session_options); perplexity from get_output('logits') after appending a "
                 "whole window (every row)",
    "llama.cpp": "llama_cpp.Llama.eval (the low-level decode, no sampler) with n_threads = n_threads_batch = threads, "
                 "n_batch = n_ubatch = 512, argmax of the last row's logits (llama_get_logits_ith); perplexity "
                 "with logits_all=True (Llama.scores, every row); use_extra_bufts as recorded in versions",
    "edgekit": "the device runner edgekit_runner.py loaded from its file (a bundle's own copy, else the repo's): "
               "its OrtDecoder (I/O binding into the caller-owned cache), the prompt in prefill_chunk pieces "
               "(a bundle's manifest; 64 for a bare contract ONNX), its generate() with no EOS ids",
    "Q8_0 GGUF": "llama.cpp's convert_hf_to_gguf.py --outtype q8_0 from the same fp32 HF folder",
}


def parse(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="prefill repetitions per round (median)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--long-prompt", type=int, default=512)
    parser.add_argument("--window", type=int, default=512, help="perplexity window (tokens)")
    parser.add_argument("--ppl-tokens", type=int, default=None, help="cap on held-out tokens (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 tokens, 1 thread, 1 round, short texts")
    parser.add_argument("--hf", type=Path, default=HF_FOLDER)
    parser.add_argument("--edgekit", type=Path, nargs="*", default=None, help="contract ONNX files or bundle folders")
    parser.add_argument("--llama-python", type=Path, default=LLAMA_PYTHON)
    parser.add_argument("--llama-convert", type=Path, default=LLAMA_CONVERT)
    parser.add_argument("--llama-extra-buffers", action="store_true",
                        help="let llama.cpp use its extra buffer types (weight repacking, AMX); off by default because "
                             "its AMX tile kernels die with SIGILL on this VM")
    parser.add_argument("--engines", nargs="*", help="only engines whose name contains one of these")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.rounds, args.reps, args.new_tokens = args.threads[:1], 1, 1, 16
        args.long_prompt, args.window, args.ppl_tokens = 128, 256, args.ppl_tokens or 256
    if args.edgekit is None:
        args.edgekit = [CONTRACT_ONNX] if CONTRACT_ONNX.is_file() else []
    args.out = args.out or HERE / "results" / f"llm_benchmark{'_quick' if args.quick else ''}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen, blocked = engines(args)
    tokens = token_sets(args.hf, args.long_prompt, args.window, args.ppl_tokens)
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgekit_llmbench_") as tmp:
        measured = measure(chosen, tokens, args, Path(tmp))
    after = os.getloadavg()[0]
    rows = summarize(chosen, measured, args, tokens["tokenizer"])
    versions = host()["packages"] | next((r["versions"] for r in rows if r["engine"].startswith("llama") and "versions"
                                          in r), {})
    settings = {"quick": args.quick, "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
                "new_tokens": args.new_tokens, "short_prompt": 64, "long_prompt": args.long_prompt, "context": CONTEXT,
                "window": args.window, "greedy_reference": reference_engine(chosen),
                "perplexity_tokens": sum(len(w) - 1 for w in tokens["windows"])}
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": host(), "settings": settings,
              "load_average_before": round(before, 2), "load_average_after": round(after, 2), "versions": versions,
              "engines": [asdict(e) for e in chosen], "blocked": blocked, "how": HOW, "rows": rows,
              "perplexity": measured["perplexity"], "raw_runs": measured["runs"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
