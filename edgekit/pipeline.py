"""The build: load a profile, run the stages in order, move the finished bundle into place.

The bundle is written to a temporary sibling folder and renamed into ``--out`` only when every
stage succeeded: a failed build leaves nothing behind and never touches an earlier bundle.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from edgekit.context import BuildContext, Reporter, SilentReporter
from edgekit.errors import OutputExistsError
from edgekit.options import BuildOptions
from edgekit.targets import load_target


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _replace(staged: Path, out: Path) -> None:
    """Swap ``staged`` into ``out``; the old bundle is removed only after the swap."""
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is meant to be shared
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{int(time.time() * 1e6)}")
        out.rename(backup)
    staged.rename(out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def build(options: BuildOptions, reporter: Reporter | None = None) -> dict:
    """Build, verify and write the bundle for ``options.target``; return the manifest.

    Raises an :class:`edgekit.errors.EdgekitError` subclass for anything the user can fix.
    """
    from edgekit.stages import STAGES
    from edgekit.stages.bundle import manifest
    from edgekit.stages.compress import load_recipe

    profile = load_target(options.target)
    recipe = load_recipe(options)  # a bad recipe is refused before any work
    out = options.out_dir(profile.name)
    if out.exists() and not options.force:
        raise OutputExistsError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    _seed(options.seed)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix="edgekit-"))
    ctx = BuildContext(options, profile, staged, scratch, reporter or SilentReporter(), recipe=recipe)
    try:
        for stage_cls in STAGES:
            stage = stage_cls()
            if stage.applies(ctx):
                ctx.reporter.stage(stage.name, stage.description)
                start = time.perf_counter()
                stage.run(ctx)
                ctx.timings[stage.name] = round(time.perf_counter() - start, 3)
        _replace(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = manifest(ctx)
    result["bundle_dir"] = str(out)
    result["timings_s"] = ctx.timings
    return result
