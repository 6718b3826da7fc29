"""Generation speed of every artifact on this host: time to first token, prefill and decode tok/s
on the device runner's benchmark workload (``bench_prompt``). Host
figures, labelled as such (the device's come from the runner there: ``edgekit bench``)."""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.llm.stages.bundle import llm_facts
from edgekit.llm.stages.verify import host_threads, open_decoder
from edgekit.runner.edgekit_runner import bench_prompt, generate, generation_figures
from edgekit.stages.base import Stage

NEW_TOKENS = 64


class MeasureGeneration(Stage):
    name = "latency"
    description = "measuring generation speed on this host"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.latency_runs > 0

    def run(self, ctx: BuildContext) -> None:
        # the device runner's own benchmark workload (64 prompt tokens, or half the context)
        prompt, new_tokens = bench_prompt(ctx.llm.golden.to_npz(), llm_facts(ctx), NEW_TOKENS)
        threads = host_threads(ctx)
        for artifact in ctx.artifacts:
            decoder = open_decoder(ctx, artifact, reference=False)
            generate(decoder, prompt[:8], 4)  # warm-up: first-run allocations are not the artifact's speed
            figures = generation_figures(generate(decoder, prompt, new_tokens), decoder, None, None)
            artifact.host_latency_ms = {k: figures[k] for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s", "decode_ms_p50",
                                                                "decode_ms_p90", "kv_cache_bytes")}
            artifact.host_latency_ms.update(threads=threads, prompt_tokens=len(prompt), new_tokens=new_tokens,
                                            where="build host")
