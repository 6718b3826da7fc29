"""The stages of a decoder-LLM build, in order (``pipeline`` runs them like ``edgekit.stages``)."""
from __future__ import annotations

from edgekit.llm.stages.bundle import WriteLlmBundle
from edgekit.llm.stages.export import ExportDecoder
from edgekit.llm.stages.load import LoadDecoder
from edgekit.llm.stages.measure import MeasureGeneration
from edgekit.llm.stages.ort_format import LlmOrtFormat
from edgekit.llm.stages.prompts import GoldenPrompts
from edgekit.llm.stages.quality import LlmQuality
from edgekit.llm.stages.quantize import QuantizeDecoder
from edgekit.llm.stages.tflite import LlmTFLiteConvert
from edgekit.llm.stages.verify import VerifyDecoder
from edgekit.llm.stages.verify_emulated import LlmVerifyEmulated
from edgekit.stages.base import Stage
from edgekit.stages.verify_emulated import PrepareEmulation

# PrepareEmulation first (a wrong --verify-on fails before any work); LlmVerifyEmulated after
# WriteLlmBundle: the emulated runner reads the staged bundle.
LLM_STAGES: tuple[type[Stage], ...] = (PrepareEmulation, LoadDecoder, GoldenPrompts, ExportDecoder, QuantizeDecoder,
                                       LlmOrtFormat, LlmTFLiteConvert, VerifyDecoder,
                                       LlmQuality, MeasureGeneration, WriteLlmBundle, LlmVerifyEmulated)

__all__ = ["LLM_STAGES"]
