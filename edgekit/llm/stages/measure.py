"""Generation speed of every artifact on this host: time to first token and prefill tok/s for
a ``prefill_chunk``-token prompt, decode tok/s over the profile's golden token count. Host
figures, labelled as such (the device's come from the runner there: ``edgekit bench``)."""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.llm.stages.verify import host_threads, open_decoder
from edgekit.runner.edgekit_runner import generate, generation_figures
from edgekit.stages.base import Stage

NEW_TOKENS = 64


def bench_prompt(ctx: BuildContext) -> list[int]:
    """The first golden prompt repeated to one prefill chunk (a realistic prompt length)."""
    base = [t for ids in ctx.llm.golden.ids for t in ids]
    size = min(ctx.profile.llm.prefill_chunk, ctx.profile.llm.context - NEW_TOKENS)
    return (base * (size // len(base) + 1))[:size]


class MeasureGeneration(Stage):
    name = "latency"
    description = "measuring generation speed on this host"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.latency_runs > 0

    def run(self, ctx: BuildContext) -> None:
        prompt, threads = bench_prompt(ctx), host_threads(ctx)
        for artifact in ctx.artifacts:
            decoder = open_decoder(ctx, artifact, reference=False)
            generate(decoder, prompt[:8], 4)  # warm-up: first-run allocations are not the artifact's speed
            figures = generation_figures(generate(decoder, prompt, NEW_TOKENS), decoder, None, None)
            artifact.host_latency_ms = {k: figures[k] for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s", "decode_ms_p50",
                                                                "decode_ms_p90", "kv_cache_bytes")}
            artifact.host_latency_ms.update(threads=threads, prompt_tokens=len(prompt), new_tokens=NEW_TOKENS,
                                            where="build host")
