"""Model compression for edge targets: pruning, low-rank, distillation, QAT, weight sharing.

Each method is one module with a frozen options dataclass and one ``apply(model, options,
data, ...) -> (model, report)`` function; :mod:`edgekit.compress.recipe` chains them in the
fixed order share -> prune -> lowrank -> distill -> qat, validating everything first::

    from edgekit.compress import Recipe, TrainData, run
    recipe = Recipe.from_cli(["prune=structured:0.5,finetune_epochs=5", "qat=epochs=1"])
    model, reports = run(recipe, model, TrainData(x_train, y_train, x_eval, y_eval))

Importing this package imports torch (every method needs it) but not Torch-Pruning,
onnx or onnxruntime: those load inside the functions that use them.
"""

from __future__ import annotations

from edgekit.compress.data import Task, TrainData, iterate_minibatches, seeded_generator
from edgekit.compress.distill import DistillOptions, OutputLoss, StudentSource, derive_student_by_depth
from edgekit.compress.errors import MissingDependencyError, RecipeError
from edgekit.compress.lowrank import LowRankOptions, RankRule
from edgekit.compress.metrics import count_macs, count_params, evaluate_top1, output_cosine, sparsity_report
from edgekit.compress.pruning import PruneKind, PruneOptions, PruneScope
from edgekit.compress.qat import QatOptions
from edgekit.compress.qdq_export import export_qdq_onnx
from edgekit.compress.recipe import ORDER, Method, Recipe, StageReport, Step, run, validate
from edgekit.compress.sharing import ShareOptions, tie

__all__ = [
    "ORDER", "DistillOptions", "LowRankOptions", "Method", "MissingDependencyError",
    "OutputLoss", "PruneKind", "PruneOptions", "PruneScope", "QatOptions", "RankRule", "Recipe",
    "RecipeError", "ShareOptions", "StageReport", "Step", "StudentSource", "Task", "TrainData",
    "count_macs", "count_params", "derive_student_by_depth", "evaluate_top1", "export_qdq_onnx",
    "iterate_minibatches", "output_cosine", "run", "seeded_generator", "sparsity_report", "tie",
    "validate",
]
