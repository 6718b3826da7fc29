"""The stages of a decoder-LLM build, in order (``pipeline`` runs them like ``edgekit.stages``)."""
from __future__ import annotations

from edgekit.llm.stages.bundle import WriteLlmBundle
from edgekit.llm.stages.export import ExportDecoder
from edgekit.llm.stages.load import LoadDecoder
from edgekit.llm.stages.prompts import GoldenPrompts
from edgekit.stages.base import Stage

LLM_STAGES: tuple[type[Stage], ...] = (LoadDecoder, GoldenPrompts, ExportDecoder, WriteLlmBundle)

__all__ = ["LLM_STAGES"]
