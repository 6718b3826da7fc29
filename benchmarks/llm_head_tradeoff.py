"""What an int4 LM head buys and costs: edgekit's int4 artifact beside variants that store the tied
embedding / LM head as ONNX Runtime GenAI's builder does (int4), SmolLM2-135M, one run.

    PYTHONPATH=. .venv/bin/python benchmarks/llm_head_tradeoff.py --work /tmp/headtrade [--fp32 STACKED.onnx]

Why this exists: GenAI's int4 decodes faster than edgekit's at the same projections' kernels
(MatMulNBits, 4 bits, block 32, accuracy level 4) because its head is int4: a decode step reads
the whole 49,152 x 576 table, 17.7 MB at int4 against 31.8 MB at int8. This measures what that
choice does to quality, with edgekit's own quantizer (``edgekit.llm.quantize``) and graph form
(``edgekit.llm.gqa``), so the head is the only difference:

- ``shipped``: the profile's int4 (calibration-aware search, int8 tied head: the GGUF's Q8_0
  table, exact);
- ``int4 head (RTN sym, tied)``: GenAI's head choice, the lookup reading the same int4 table;
- ``GenAI's scheme``: symmetric RTN projections and the int4 head, both GenAI's;
- ``int4 head by GPTQ``: ``head_scheme="gptq"`` (``edgekit.llm._gptq``, the Gram of the head's
  input over the calibration split), the lookup reading it plus a 4-bit residual table.

Per variant: bytes, held-out perplexity (the runner's teacher-forced windows; the benchmarks' held-out
token set, ``llm_benchmark.token_sets``), top-1 agreement with fp32, greedy tokens equal to the
shipped artifact's on the 64-token prompt, and decode tok/s raced in one process (interleaved
rounds, 1 and 2 threads). Writes benchmarks/results/llm_head_tradeoff.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _llm_engines import load_runner  # noqa: E402
from llm_benchmark import HF_FOLDER, token_sets  # noqa: E402

from edgekit.verify import hostinfo  # noqa: E402

SPEC = {"context": 512, "vocab": 49152, "prefill_chunk": 64, "layers": 30, "kv_heads": 3, "head_dim": 64}


def stacked_fp32(hf: Path, work: Path, given: Path | None) -> Path:
    """The export every quantizer starts from (the build's scratch ``decoder_fp32.onnx``)."""
    if given is not None:
        return given
    target = work / "decoder_fp32.onnx"
    if not target.is_file():
        from edgekit.llm.export import export_decoder
        from edgekit.llm.model import load_decoder

        _, decoder = load_decoder(hf, SPEC["context"])
        export_decoder(decoder, target, opset=18)
    return target


def calibration(fp32: Path, hf: Path) -> tuple[dict, list[list[int]]]:
    """The build's statistics (same split, window and token count as ``QuantizeDecoder``)."""
    from edgekit.llm.quantize import activation_diags, text_windows
    from edgekit.llm.stages.quantize import CALIBRATION_TOKENS, CALIBRATION_WINDOW
    from edgekit.text import load_sentences

    windows = text_windows(hf / "tokenizer.json", load_sentences("calibration"), CALIBRATION_WINDOW, CALIBRATION_TOKENS)
    return activation_diags(fp32, windows), windows


def build(fp32: Path, hf: Path, work: Path) -> dict[str, Path]:
    from edgekit.llm.gqa import to_shared_cache
    from edgekit.llm.quantize import QuantOptions, head_gram, quantize_onnx

    diags, windows = calibration(fp32, hf)
    gram = head_gram(fp32, windows)
    variants = {"shipped (search, int8 tied head)": QuantOptions(),
                "int4 head (RTN sym, tied)": QuantOptions(head_bits=4),
                "GenAI's scheme (RTN sym + int4 head)": QuantOptions(scheme="rtn_sym", head_bits=4, max_ratio=0.0),
                "int4 head by GPTQ + 4-bit residual lookup": QuantOptions(head_bits=4, head_scheme="gptq")}
    paths = {"fp32": work / "fp32.onnx"}
    shutil.copyfile(fp32, paths["fp32"])
    to_shared_cache(paths["fp32"])
    for i, (name, options) in enumerate(variants.items()):
        paths[name] = work / f"variant{i}.onnx"
        quantize_onnx(fp32, paths[name], options, diags, gram)
        to_shared_cache(paths[name])
    return paths


def quality(runner, paths: dict[str, Path], tokens: dict) -> dict[str, dict]:
    heldout = [i for window in tokens["windows"] for i in window]
    prompt = tokens["prompts"]["short"]
    rows: dict[str, dict] = {}
    for name, path in paths.items():
        decoder = runner.OrtDecoder.from_file(path, SPEC, threads=2)
        scored = runner.teacher_forced(decoder, heldout)
        rows[name] = {"bytes": path.stat().st_size, "perplexity": scored["value"], "tokens": scored["tokens"],
                      "predictions": scored["predictions"], "greedy": runner.generate(decoder, prompt, 32).tokens}
    ref, shipped = rows["fp32"], rows["shipped (search, int8 tied head)"]
    fp32_predictions = np.array(ref["predictions"])
    for row in rows.values():
        row["perplexity_increase_pct"] = 100 * (row["perplexity"] / ref["perplexity"] - 1)
        row["top1_agreement"] = float(np.mean(np.array(row.pop("predictions")) == fp32_predictions))
        row["greedy_equal_to_shipped"] = next((i for i, (a, b) in enumerate(zip(row["greedy"], shipped["greedy"]))
                                               if a != b), 32)
    return rows


def race(runner, paths: dict[str, Path], prompt: list[int], threads: int, rounds: int) -> dict[str, float]:
    """Median decode tok/s per variant, rounds interleaved so drift hits every variant alike."""
    decoders = {name: runner.OrtDecoder.from_file(p, SPEC, threads=threads) for name, p in paths.items() if name != "fp32"}
    rates: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(rounds):
        for name, decoder in decoders.items():
            decoder.reset()
            token, past, steps = int(decoder.step(prompt, 0, [len(prompt) - 1])[-1].argmax()), len(prompt), []
            for _ in range(96):
                start = time.perf_counter()
                token = int(decoder.step([token], past, [0])[-1].argmax())
                steps.append(time.perf_counter() - start)
                past += 1
            rates[name].append(1 / float(np.median(steps)))
    return {name: float(np.median(r)) for name, r in rates.items()}


def markdown(result: dict) -> str:
    lines = ["# The LM head: edgekit's int8 beside int4 variants, SmolLM2-135M (ORT CPU, one run)", "",
             f"{result['date']}. CPU: {result['cpu']}; load average {result['load_before']} before, "
             f"{result['load_after']} after. Held-out: {result['heldout_tokens']} tokens teacher-forced in windows of "
             f"{SPEC['context']}. Decode: 64-token prompt, 96 greedy steps, median step, median of "
             f"{result['rounds']} interleaved rounds in one process.", "",
             "| variant | MB | ratio to fp32 | perplexity | vs fp32 | top-1 agree | greedy = shipped up to | "
             + " | ".join(f"decode tok/s {t}t" for t in result["threads"]) + " | "
             + " | ".join(f"vs shipped {t}t" for t in result["threads"]) + " |",
             "|---" * (7 + 2 * len(result["threads"])) + "|"]
    fp32, shipped = result["rows"]["fp32"], "shipped (search, int8 tied head)"
    for name, row in result["rows"].items():
        speed = [result["decode"][str(t)].get(name) for t in result["threads"]]
        ratio = [(f"{s / result['decode'][str(t)][shipped]:.2f}x" if s else "-") for s, t in zip(speed, result["threads"])]
        lines.append(f"| {name} | {row['bytes'] / 1e6:.1f} | {row['bytes'] / fp32['bytes']:.3f} | {row['perplexity']:.2f} | "
                     f"{row['perplexity_increase_pct']:+.2f} % | {row['top1_agreement']:.3f} | "
                     f"{row['greedy_equal_to_shipped']} | " + " | ".join(f"{s:.1f}" if s else "-" for s in speed)
                     + " | " + " | ".join(ratio) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", type=Path, default=HF_FOLDER)
    parser.add_argument("--fp32", type=Path, default=None, help="the stacked fp32 export (made from --hf if absent)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runner, tokens = load_runner(), token_sets(args.hf, 64, SPEC["context"], None)
    paths = build(stacked_fp32(args.hf, args.work, args.fp32), args.hf, args.work)
    before = os.getloadavg()[0]
    decode = {str(t): race(runner, paths, tokens["prompts"]["short"], t, args.rounds) for t in args.threads}
    cpu = f"{hostinfo.cpu_model()}; int8 ISA {hostinfo.int8_isa()}"
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": cpu, "threads": args.threads, "rounds": args.rounds,
              "load_before": round(before, 2), "decode": decode,
              "rows": quality(runner, paths, tokens), "load_after": round(os.getloadavg()[0], 2)}
    result["heldout_tokens"] = result["rows"]["fp32"]["tokens"]
    out = HERE / "results" / "llm_head_tradeoff"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
