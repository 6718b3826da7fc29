"""The build: load a profile, run the stages in order, move the finished bundle into place.

The bundle is written inside a staging folder beside ``--out`` (see :mod:`edgekit.outdir`) and
renamed into place only when every stage succeeded: a failed build leaves nothing behind and never
touches an earlier bundle; a killed one leaves only its staging folder, which the next build into
that ``--out`` removes.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekit import outdir
from edgekit.context import BuildContext, Reporter, SilentReporter
from edgekit.errors import ConversionError, EdgekitError, MaxDropError, UnsupportedError
from edgekit.options import BuildOptions
from edgekit.targets import TargetProfile, load_target


def _is_llm(options: BuildOptions) -> bool:
    from edgekit.llm.stages.load import is_llm_model

    return is_llm_model(options.model)


def _refuse_llm_recipe(options: BuildOptions) -> None:
    if options.recipe or options.recipe_file or options.max_drop is not None:
        raise UnsupportedError("compression recipes are not available for language models yet",
                               "drop --prune/--lowrank/--distill/--qat/--recipe/--max-drop; the profile's [llm] table "
                               "chooses the weight quantization")


def load_recipe(options: BuildOptions) -> Any:
    """The compression recipe (an :class:`edgekit.compress.Recipe`, or ``None``) from
    ``--recipe``, CLI shorthand, or ``edgekit.toml`` beside the model; parsed (and refused when
    malformed) before the build does any work."""
    recipe = _parse_recipe(options)
    if recipe is not None and recipe.steps and options.model and options.model.endswith(".onnx"):
        raise UnsupportedError("compression needs a PyTorch model; this build starts from ONNX",
                               "pass file.py:factory or a .pt2, or drop the compression options")
    if options.max_drop is not None and (recipe is None or not recipe.steps):
        raise MaxDropError(f"--max-drop {options.max_drop} bounds what compression costs, but this build compresses nothing",
                           "drop --max-drop, or add a step such as --prune structured:0.5")
    return recipe


def _parse_recipe(options: BuildOptions) -> Any:
    from edgekit.compress import Recipe  # imports torch: only when there is a recipe

    if options.recipe and options.recipe_file:
        raise UnsupportedError("both --recipe FILE and compression flags were given", "use one of them")
    if options.recipe:
        return Recipe.from_cli(list(options.recipe))
    path = options.recipe_file or _beside_model(options.model)
    if path is None:
        return None
    if not Path(path).is_file():
        raise UnsupportedError(f"recipe file {path} does not exist", "check the --recipe path")
    return Recipe.from_toml(Path(path))


def _overlay(options: BuildOptions) -> Path | None:
    """The profile overlay: ``--overlay``, or the profile tables of a ``--recipe`` file (``edgekit
    search``'s ``chosen.toml`` holds both the profile overlay and the compression steps)."""
    from edgekit.recipefile import has_steps, overlays_profile

    if options.overlay is not None and Path(options.overlay).is_file() and has_steps(Path(options.overlay)):
        raise UnsupportedError(f"the overlay {options.overlay} holds compression steps ([[compress]])",
                               f"pass it as --recipe {options.overlay}: that applies both its profile tables and its steps")
    recipe = options.recipe_file
    if recipe is None or not Path(recipe).is_file() or not overlays_profile(Path(recipe)):
        return options.overlay
    if options.overlay is not None:
        raise UnsupportedError(f"both --overlay {options.overlay} and the recipe {recipe} change the profile",
                               "merge the overlay's tables into the recipe file, or give the recipe without them")
    return Path(recipe)


def _beside_model(model: str | None) -> Path | None:
    if not model or ":" not in model or model.endswith((".onnx", ".pt2")):
        return None
    candidate = Path(model.rpartition(":")[0]).parent / "edgekit.toml"
    return candidate if candidate.is_file() else None


def resolved_threads(options: BuildOptions) -> int:
    """The build's CPU threads: ``options.threads``, else the recipe file's ``[build] threads``,
    else every core of this host."""
    from edgekit.recipefile import build_threads

    return options.threads or build_threads(options.recipe_file) or os.cpu_count() or 1


def _seed(seed: int, threads: int) -> None:
    """Seeds, and torch's thread count: float reductions (BatchNorm statistics a model file
    computes, fine-tuning) give other bits with another count, so a build always sets the count
    it resolved, whatever the process did before (a test, a Ray worker started with
    ``OMP_NUM_THREADS=1``): a search's trial and its rebuild are then the same bytes."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def _replace(staged: Path, out: Path) -> None:
    """Swap ``staged`` into ``out``; the old bundle is removed only after the swap.

    Only an edgekit bundle is ever replaced: :func:`edgekit.outdir.check_out` refused anything else,
    and it is checked again here, under the lock, right before the rename.
    """
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)  # a bundle is meant to be shared, whatever made the folder
    backup = None
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not outdir.is_bundle(out):
            outdir.check_out(out, force=True)  # raises the one-line refusal
        backup = out.with_name(f".{out.name}.old-{int(time.time() * 1e6)}")
        out.rename(backup)
    staged.rename(out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _stages(llm: bool) -> tuple:
    """The stage list: decoder LLMs have their own (``edgekit.llm.stages``)."""
    if llm:
        from edgekit.llm.stages import LLM_STAGES

        return LLM_STAGES
    from edgekit.stages import STAGES

    return STAGES


def _manifest(ctx: BuildContext) -> dict:
    if ctx.llm is not None:
        from edgekit.llm.stages.bundle import llm_manifest

        return llm_manifest(ctx)
    from edgekit.stages.bundle import manifest

    return manifest(ctx)


def _run_stages(ctx: BuildContext, llm: bool) -> None:
    for stage_cls in _stages(llm):
        stage = stage_cls()
        if stage.applies(ctx):
            ctx.reporter.stage(stage.name, stage.description)
            start = time.perf_counter()
            stage.run(ctx)
            ctx.timings[stage.name] = round(time.perf_counter() - start, 3)


def _staged_build(options: BuildOptions, profile: TargetProfile, out: Path, reporter: Reporter, recipe: Any) -> dict:
    """Run every stage in a fresh staging folder, move the bundle into ``out``, return its manifest."""
    outdir.remove_stale(out)
    try:
        staging = outdir.make_staging(out)
    except OSError as exc:
        raise outdir.location_error(exc, out) from None
    ctx = BuildContext(options, profile, staging / "bundle", staging / "scratch", reporter, recipe=recipe)
    try:
        _run_stages(ctx, _is_llm(options))
        result = _manifest(ctx)  # while the bundle's files are still where the context says
        shutil.rmtree(ctx.scratch_dir, ignore_errors=True)  # before the rename: frees space, keeps it out of sight
        _replace(ctx.bundle_dir, out)
    except Exception as exc:
        # a full disk surfaces as anything (a converter's exit 1, a C++ error); user errors and
        # verdicts stay what they are
        if isinstance(exc, EdgekitError) and not isinstance(exc, ConversionError) or not outdir.is_disk_full(exc, staging):
            raise
        raise outdir.disk_full(out) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result["timings_s"] = ctx.timings
    return result


def build(options: BuildOptions, reporter: Reporter | None = None) -> dict:
    """Build, verify and write the bundle for ``options.target``; return the manifest.

    Raises an :class:`edgekit.errors.EdgekitError` subclass for anything the user can fix.
    """
    profile = load_target(options.target, _overlay(options))
    options = replace(options, threads=resolved_threads(options))  # stages read one resolved count
    if _is_llm(options):
        _refuse_llm_recipe(options)
    recipe = None if _is_llm(options) else load_recipe(options)  # a bad recipe is refused before any work
    out = options.out_dir(profile.name)
    outdir.check_out(out, options.force)
    outdir.prepare_parent(out)
    with outdir.locked(out):
        outdir.check_out(out, options.force)  # again: the holder of the lock may just have written it
        _seed(options.seed, options.threads)
        result = _staged_build(options, profile, out, reporter or SilentReporter(), recipe)
    result["bundle_dir"] = str(out)
    return result
