"""Weight-only quantization schemes of a KV-contract decoder (SmolLM2-135M), side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/llm_quant_schemes.py --hf HF_DIR --fp32 MODEL.onnx \\
        --work /tmp/llmq [--genai GENAI_INT4_DIR]

Per artifact: bytes, ratio to the fp32 file, held-out perplexity (the ``heldout`` sentences of
calibration_data/text/sentences.jsonl joined by newlines, one teacher-forced window), top-1
agreement with fp32 over those positions, greedy continuations equal to fp32's, and decode tok/s
(64 tokens, median step, 2 threads). Calibration statistics come from the ``calibration`` rows
only. ``--genai`` adds onnxruntime-genai's builder int4 (its own graph and generation loop).
Writes benchmarks/results/llm_quant_schemes.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.llm.quantize import QuantOptions, activation_diags, contract_feed, quantize_onnx, text_windows

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("The capital of France is", "def fibonacci(n):", "Water boils at",
           "The three primary colors are")
SCHEMES = {
    "int8 (8-bit sym RTN, acc 4)": QuantOptions(bits=8, scheme="rtn_sym"),
    "exact Q4_1 grid + fp32 head (acc 3)": QuantOptions(scheme="grid", accuracy_level=3, head_bits=0),
    "exact Q4_1 grid + int8 head (acc 3)": QuantOptions(scheme="grid", accuracy_level=3),
    "int4 RTN baseline (asym min-max, acc 4)": QuantOptions(scheme="rtn", max_ratio=0.0),
    "int4 search (acc 4)": QuantOptions(),
    "int4 search (acc 3)": QuantOptions(accuracy_level=3),
}


def _split(split: str) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "calibration_data/text/sentences.jsonl").open()]
    return [r["text"] for r in rows if r["split"] == split]


def _session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(targets)), targets]


def _teacher_forced(session, ids: list[int], dims) -> tuple[float, np.ndarray]:
    logits = session.run(["logits"], contract_feed(ids, np.arange(len(ids) - 1), *dims))[0]
    return float(np.exp(_nll(logits, np.array(ids[1:])).mean())), logits.argmax(-1)


def _greedy(session, prompt: list[int], steps: int, dims, context: int = 256) -> tuple[list[int], list[float]]:
    key = np.zeros((context, *dims), np.float32)
    value = np.zeros_like(key)
    ids, p, out, times = list(prompt), 0, [], []
    for _ in range(steps):
        t = len(ids)
        feed = contract_feed(ids, [t - 1], *dims)
        feed["position_ids"] = feed["position_ids"] + p
        feed["attention_bias"] = np.concatenate([np.zeros((t, p), np.float32), feed["attention_bias"]], 1)
        feed["past_key"], feed["past_value"] = key[:p], value[:p]
        start = time.perf_counter()
        logits, k, v = session.run(None, feed)
        times.append(time.perf_counter() - start)
        key[p:p + t], value[p:p + t] = k, v
        p += t
        ids = [int(logits[-1].argmax())]
        out.append(ids[0])
    return out, times[1:]


def _measure(path: Path, tok, heldout: list[int], dims, ref: dict | None) -> dict:
    session = _session(path)
    ppl, top1 = _teacher_forced(session, heldout, dims)
    conts = [_greedy(session, tok.encode(p).ids, 24, dims)[0] for p in PROMPTS]
    _, times = _greedy(session, tok.encode(PROMPTS[0]).ids, 65, dims)
    row = {"bytes": path.stat().st_size, "ppl": ppl, "decode_tok_s": 1 / float(np.median(times)),
           "continuations": conts, "top1": top1}
    if ref is not None:
        row["top1_agreement"] = float((top1 == ref["top1"]).mean())
        row["greedy_equal"] = sum(c == r for c, r in zip(conts, ref["continuations"]))
    return row


def _genai(folder: Path, tok, heldout: list[int]) -> dict:
    """onnxruntime-genai's own int4: perplexity through its graph, tok/s through its loop."""
    import onnxruntime_genai as og

    session = _session(folder / "model.onnx")
    past = {i.name: np.zeros((1, 3, 0, 64), np.float32) for i in session.get_inputs() if i.name.startswith("past")}
    feed = {"input_ids": np.array([heldout], np.int64), "attention_mask": np.ones((1, len(heldout)), np.int64), **past}
    logits = session.run(["logits"], feed)[0][0, :-1]
    ppl = float(np.exp(_nll(logits, np.array(heldout[1:])).mean()))
    del session
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=128, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(tok.encode(PROMPTS[0]).ids)
    times = []
    for _ in range(65):
        start = time.perf_counter()
        gen.generate_next_token()
        times.append(time.perf_counter() - start)
    size = sum(f.stat().st_size for f in folder.glob("model.onnx*"))
    return {"bytes": size, "ppl": ppl, "decode_tok_s": 1 / float(np.median(times[1:])), "top1": logits.argmax(-1)}


def _cpu() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx"))))


def _table(rows: dict, fp32: dict) -> str:
    lines = ["| artifact | bytes | ratio | held-out ppl | vs fp32 | top-1 agree | greedy = fp32 | decode tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        agree = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-"
        greedy = f"{r['greedy_equal']}/{len(PROMPTS)}" if "greedy_equal" in r else "-"
        lines.append(f"| {name} | {r['bytes']:,} | {r['bytes'] / fp32['bytes']:.3f} | {r['ppl']:.3f} | "
                     f"{(r['ppl'] / fp32['ppl'] - 1) * 100:+.2f} % | {agree} | {greedy} | {r['decode_tok_s']:.1f} |")
    return "\n".join(lines)


def layer_summary(layers: dict) -> str:
    """Per scheme: which matrices are 8-bit, the weighted error beside RTN's, the block picks."""
    lines = ["| artifact | 8-bit matrices | sum weighted error (chosen / RTN) | block picks |", "|---|---|---|---|"]
    for name, rows in layers.items():
        wide = [r["name"] for r in rows if r["bits"] == 8]
        picks: dict[str, int] = {}
        for r in rows:
            for k, v in r["picks"].items():
                picks[k] = picks.get(k, 0) + v
        top = ", ".join(f"{k} {v}" for k, v in sorted(picks.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {name} | {len(wide)}: {', '.join(wide[:6])}{' ...' if len(wide) > 6 else ''} | "
                     f"{sum(r['error'] for r in rows):.4f} / {sum(r['rtn_error'] for r in rows):.4f} | {top} |")
    return "\n".join(lines)


def _build(args, diags) -> dict[str, tuple[Path, object]]:
    built = {}
    for i, (name, opts) in enumerate(SCHEMES.items()):
        path = args.work / f"scheme{i}.onnx"
        built[name] = (path, quantize_onnx(args.fp32, path, opts, diags))
    return built


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hf", type=Path, required=True)
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--genai", type=Path)
    args = parser.parse_args()
    from tokenizers import Tokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    load = {"before": os.getloadavg()}
    tok = Tokenizer.from_file(str(args.hf / "tokenizer.json"))
    heldout = tok.encode("\n".join(_split("heldout"))).ids[:2048]
    dims = (30, 3, 64)
    diags = activation_diags(args.fp32, text_windows(args.hf / "tokenizer.json", _split("calibration"), 512, 4096))
    built = _build(args, diags)
    rows = {"fp32": _measure(args.fp32, tok, heldout, dims, None)}
    for name, (path, _) in built.items():
        rows[name] = _measure(path, tok, heldout, dims, rows["fp32"])
    if args.genai:
        g = _genai(args.genai, tok, heldout)
        g["top1_agreement"] = float((g.pop("top1") == rows["fp32"]["top1"]).mean())
        rows["onnxruntime-genai builder int4 (its loop)"] = g
    load["after"] = os.getloadavg()
    _write(rows, built, load, len(heldout))


def _write(rows: dict, built: dict, load: dict, tokens: int) -> None:
    fp32 = rows["fp32"]
    table = _table(rows, fp32)
    layers = {name: [replace(c, picks=()).__dict__ | {"picks": dict(c.picks)} for c in report.layers]
              for name, (_, report) in built.items()}
    clean = {k: {kk: vv for kk, vv in r.items() if kk not in ("top1",)} for k, r in rows.items()}
    out = ROOT / "benchmarks/results/llm_quant_schemes"
    meta = {"heldout_tokens": tokens, "loadavg": load, "cpu_flags": _cpu(), "threads": 2}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": clean, "layers": layers}, indent=1) + "\n")
    md = (f"# LLM weight-only quantization, SmolLM2-135M-Instruct (ORT CPU)\n\n{table}\n\n{layer_summary(layers)}\n\n"
          f"held-out tokens: {tokens}; load average before {load['before']}, after {load['after']} "
          f"(2 shared cores); CPU flags: {meta['cpu_flags']}\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
