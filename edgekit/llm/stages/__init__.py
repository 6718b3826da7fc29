"""The stages of a decoder-LLM build, in order (``pipeline`` runs them like ``edgekit.stages``)."""
from __future__ import annotations

from edgekit.llm.stages.bundle import WriteLlmBundle
from edgekit.llm.stages.export import ExportDecoder
from edgekit.llm.stages.load import LoadDecoder
from edgekit.llm.stages.measure import MeasureGeneration
from edgekit.llm.stages.ort_format import LlmOrtFormat
from edgekit.llm.stages.prompts import GoldenPrompts
from edgekit.llm.stages.quality import LlmQuality
from edgekit.llm.stages.verify import VerifyDecoder
from edgekit.stages.base import Stage

# WriteLlmBundle last: the manifest carries every verdict and figure.
LLM_STAGES: tuple[type[Stage], ...] = (LoadDecoder, GoldenPrompts, ExportDecoder, LlmOrtFormat, VerifyDecoder, LlmQuality,
                                       MeasureGeneration, WriteLlmBundle)

__all__ = ["LLM_STAGES"]
