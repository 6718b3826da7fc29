"""Build stages, in build order. A build is ``for stage in STAGES: stage.run(ctx)``."""
from __future__ import annotations

from edgekit.stages.base import Stage
from edgekit.stages.bundle import WriteBundle
from edgekit.stages.calibrate import Calibrate, Reference
from edgekit.stages.cleanup_onnx import CleanupOnnx
from edgekit.stages.compat import Compatibility
from edgekit.stages.compress import Compress
from edgekit.stages.evaluate import Evaluate
from edgekit.stages.export_onnx import ExportOnnx
from edgekit.stages.load import LoadModel
from edgekit.stages.measure import MeasureLatency
from edgekit.stages.ort import ORTConvert
from edgekit.stages.sensitivity import LayerSensitivity
from edgekit.stages.tflite import TFLiteConvert
from edgekit.stages.verify import Verify
from edgekit.stages.verify_emulated import PrepareEmulation, VerifyEmulated

# PrepareEmulation first: a wrong --verify-on fails before any work. VerifyEmulated after
# WriteBundle: the emulated runner reads the staged manifest.json and golden.npz.
STAGES: tuple[type[Stage], ...] = (
    PrepareEmulation, LoadModel, Calibrate, Compress, Reference, ExportOnnx, CleanupOnnx, TFLiteConvert, ORTConvert,
    LayerSensitivity, Compatibility, Verify, Evaluate, MeasureLatency, WriteBundle, VerifyEmulated,
)

__all__ = ["STAGES", "Stage"]
