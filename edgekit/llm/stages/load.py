"""Load a decoder LLM: resolve the source to an HF folder, read it with safetensors only."""
from __future__ import annotations

from edgekit.context import BuildContext
from edgekit.errors import MissingDependencyError
from edgekit.llm import source as sources
from edgekit.llm.model import load_decoder
from edgekit.llm.state import LlmState
from edgekit.stages.base import Stage

EXAMPLE_PREFIX = "example:"


def is_llm_model(model: str | None) -> bool:
    """Whether ``--example``/MODEL names a decoder LLM (a GGUF, an HF folder, an LLM example)."""
    if not model:
        return False
    if model.startswith(EXAMPLE_PREFIX):
        return model[len(EXAMPLE_PREFIX):] in sources.EXAMPLES
    from pathlib import Path

    path = Path(model)
    return path.suffix == ".gguf" or (path.is_dir() and (path / "config.json").is_file())


def resolve(model: str) -> sources.LlmSource:
    if model.startswith(EXAMPLE_PREFIX):
        return sources.resolve(model[len(EXAMPLE_PREFIX):], example=True)
    return sources.resolve(model)


def load_tokenizer(folder):
    try:
        from tokenizers import Tokenizer  # the Rust tokenizer behind HF's fast tokenizers: no model code runs
    except ImportError:
        raise MissingDependencyError("building an LLM needs the tokenizers package: pip install 'edgekit[llm]'") from None
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise sources.LlmSourceError(f"{folder} has no tokenizer.json",
                                     "save the tokenizer with a fast tokenizer (tokenizer.save_pretrained)")
    return Tokenizer.from_file(str(path)), path


class LoadDecoder(Stage):
    name = "load"
    description = "loading the language model"

    def run(self, ctx: BuildContext) -> None:
        src = resolve(ctx.options.model)
        sources.check_folder(src.folder)
        tokenizer, tokenizer_file = load_tokenizer(src.folder)
        config, decoder = load_decoder(src.folder, ctx.profile.llm.context)
        ctx.llm = LlmState(src, config, decoder, tokenizer, tokenizer_file)
        ctx.model_label = src.origin
        ctx.task = "generation"
        ctx.reporter.info(f"{config.family}: {config.layers} layers, d {config.hidden}, {config.heads}/{config.kv_heads} "
                          f"heads, vocab {config.vocab}, context {ctx.profile.llm.context}")
