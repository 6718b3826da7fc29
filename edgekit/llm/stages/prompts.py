"""Golden and held-out prompts with the original model's greedy continuations.

Prompts are the first words of sentences of the bundled text set: the ``verification`` split
for the golden prompts shipped to the device, the ``heldout`` split for the quality figures (and
its full text for perplexity). Calibration never sees either. The continuations come from the
device runner's own ``generate`` driving the torch original, so reference and artifacts are
produced by one loop.
"""
from __future__ import annotations

import numpy as np

from edgekit.context import BuildContext
from edgekit.llm.reference import TorchDecoder
from edgekit.llm.state import Prompts
from edgekit.runner.edgekit_runner import generate
from edgekit.stages.base import Stage
from edgekit.text import load_sentences

PROMPT_WORDS = 8


def prompt_ids(tokenizer, sentences: list[str], count: int, bos: int | None) -> list[list[int]]:
    head = [bos] if bos is not None else []
    return [head + tokenizer.encode(" ".join(s.split()[:PROMPT_WORDS]), add_special_tokens=False).ids
            for s in sentences[:count]]


def original(ctx: BuildContext) -> TorchDecoder:
    return TorchDecoder(ctx.llm.decoder, ctx.profile.llm.context, ctx.profile.llm.prefill_chunk)


def reference_prompts(ctx: BuildContext, ids: list[list[int]]) -> Prompts:
    decoder, new = original(ctx), ctx.profile.llm.golden_new_tokens
    runs = [generate(decoder, p, new) for p in ids]  # no EOS stop: every prompt gets `new` tokens
    return Prompts(ids, np.array([r.tokens for r in runs], np.int64), np.stack([r.first_logits for r in runs]).astype(np.float32))


class GoldenPrompts(Stage):
    name = "prompts"
    description = "greedy continuations of the original on the golden and held-out prompts"

    def run(self, ctx: BuildContext) -> None:
        llm, cfg = ctx.llm, ctx.profile.llm
        bos = llm.config.bos_token_id
        llm.golden = reference_prompts(ctx, prompt_ids(llm.tokenizer, load_sentences("verification"), cfg.golden_prompts, bos))
        llm.heldout = reference_prompts(ctx, prompt_ids(llm.tokenizer, load_sentences("heldout"), cfg.golden_prompts, bos))
        text = " ".join(load_sentences("heldout"))
        llm.heldout_text = ([bos] if bos is not None else []) + llm.tokenizer.encode(text, add_special_tokens=False).ids
