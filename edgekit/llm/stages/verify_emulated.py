"""``--verify-on aarch64`` for decoder LLMs: the bundle's runner under qemu judges every artifact
on the golden prompts with the device runtimes' ARM kernels (``edgekit.stages.verify_emulated``).

Only when asked: emulated generation runs hundreds of decode steps per artifact (minutes for a
135M model), so unlike tensor bundles it is not automatic when the userland is cached.
"""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.stages.verify_emulated import VerifyEmulated


class LlmVerifyEmulated(VerifyEmulated):
    def applies(self, ctx: BuildContext) -> bool:
        return ctx.options.verify_on not in (None, "none") and super().applies(ctx)

    def samples(self, ctx: BuildContext) -> int:
        return len(ctx.llm.golden.ids)
