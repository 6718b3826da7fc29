"""Write an LLM bundle: golden_llm.npz, tokenizer.json, manifest.json, the runner, README.md
(docs/llm-bundle.md)."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np

import edgekit
from edgekit.context import BuildContext
from edgekit.llm.model import KV_CONTRACT
from edgekit.runner import RUNNER_PATH
from edgekit.runner.edgekit_runner import sha256_file
from edgekit.stages.base import Stage
from edgekit.verify import hostinfo

GOLDEN = "golden_llm.npz"
TOKENIZER = "tokenizer.json"


def llm_facts(ctx: BuildContext) -> dict:
    c, cfg = ctx.llm.config, ctx.profile.llm
    return {"contract": KV_CONTRACT, "family": c.family, "layers": c.layers, "kv_heads": c.kv_heads,
            "head_dim": c.head_dim, "vocab": c.vocab, "context": cfg.context, "prefill_chunk": cfg.prefill_chunk,
            "bos_token_id": c.bos_token_id, "eos_token_ids": list(c.eos_token_ids), "tokenizer": TOKENIZER,
            "parameters": sum(p.numel() for p in ctx.llm.decoder.parameters())}


def llm_manifest(ctx: BuildContext) -> dict:
    profile, llm = ctx.profile, ctx.llm
    return {
        "schema": 1, "kind": "llm", "edgekit_version": edgekit.__version__, "target": profile.name,
        "target_description": profile.description, "device": asdict(profile.device), "model": ctx.model_label,
        "task": "generation", "llm": llm_facts(ctx),
        "source": {"origin": llm.source.origin, "gguf": llm.source.gguf.name if llm.source.gguf else None},
        "golden": {"file": GOLDEN, "sha256": sha256_file(ctx.bundle_dir / GOLDEN), "prompts": len(llm.golden.ids),
                   "new_tokens": int(llm.golden.reference_tokens.shape[1])},
        "runtime_defaults": {"ort": {"provider": profile.ort.provider, "threads": profile.ort.threads},
                             "tflite": {"delegate": profile.tflite.delegate, "threads": profile.tflite.threads}},
        "artifacts": [asdict(a) for a in ctx.artifacts],
        "extra_files": sorted(ctx.extra_files),
        "accuracy": ctx.accuracy or None,
        "verified_on": hostinfo.describe(),
    }


_README = """# edgekit bundle: {model} for {target}

{description}

Files: {files}.

## Generate on the device

    pip install numpy onnxruntime tokenizers     # tokenizers is optional: --prompt-ids works without it
    python edgekit_runner.py . --artifact {first} --prompt "The capital of France is" --max-new-tokens 64
    python edgekit_runner.py .                    # verify every artifact on the golden prompts, then benchmark

The runner checks every file's sha256 against manifest.json, then checks each artifact's greedy
continuations of the golden prompts against the original model's (golden_llm.npz), and reports
time to first token, prefill and decode tokens per second, and peak memory.
"""


class WriteLlmBundle(Stage):
    name = "bundle"
    description = "writing the bundle"

    def run(self, ctx: BuildContext) -> None:
        out = ctx.bundle_dir
        np.savez(out / GOLDEN, **ctx.llm.golden.to_npz())
        shutil.copyfile(ctx.llm.tokenizer_file, out / TOKENIZER)
        shutil.copyfile(RUNNER_PATH, out / RUNNER_PATH.name)
        for artifact in ctx.artifacts:
            artifact.bytes = (out / artifact.file).stat().st_size
            artifact.sha256 = sha256_file(out / artifact.file)
        (out / "manifest.json").write_text(json.dumps(llm_manifest(ctx), indent=2) + "\n")
        files = ", ".join(f"`{a.file}`" for a in ctx.artifacts)
        (out / "README.md").write_text(_README.format(model=ctx.model_label, target=ctx.profile.name, files=files,
                                                      description=ctx.profile.description,
                                                      first=ctx.artifacts[-1].file if ctx.artifacts else "FILE"))
