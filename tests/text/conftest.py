"""Fixtures for the text tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# one thread: the figures the distillation tests assert were measured so, and 2 shared cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def text_subset(tmp_path_factory):
    """``text_subset(every) -> folder``: the bundled text set with only every ``every``-th row of
    its large train file (same calibration/verification/heldout splits), for builds that distil
    in test time. Folders are made once per session."""
    import gzip
    import json
    import shutil

    from edgekit.paths import calibration_dir
    from edgekit.text import read_rows

    source = calibration_dir() / "text"
    manifest = json.loads((source / "manifest.json").read_text())
    made: dict[int, Path] = {}

    def make(every: int) -> Path:
        if every not in made:
            folder = tmp_path_factory.mktemp(f"text-every-{every}")
            shutil.copy(source / manifest["file"], folder / manifest["file"])
            extra = read_rows(source, {"file": manifest["extra_files"][0]})[::every]
            (folder / "subset.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in extra).encode()))
            rows = read_rows(folder, {"file": manifest["file"], "extra_files": ["subset.jsonl.gz"]})
            splits = {k: sum(r["split"] == k for r in rows) for k in manifest["splits"]}
            (folder / "manifest.json").write_text(json.dumps({**manifest, "extra_files": ["subset.jsonl.gz"],
                                                              "splits": splits}))
            made[every] = folder
        return made[every]

    return make
