"""``edgekit generate BUNDLE "prompt"``: text from an LLM bundle on this host, streamed.

Everything runs through the device runner's functions (manifest and sha256 checks, tokenizer,
decoder, greedy loop), so the host generates exactly as the device does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

__all__ = ["GenerateSettings", "generate_text"]


@dataclass(frozen=True)
class GenerateSettings:
    artifact: str | None = None  # default: the smallest artifact that passed verification
    max_new_tokens: int = 128
    threads: int = 2


class GenerateError(EdgekitError):
    """The bundle or prompt cannot be generated from (the runner's message, one line)."""


def pick_artifact(manifest: dict, name: str | None) -> dict:
    from edgekit.runner.edgekit_runner import find_artifact

    if name:
        return find_artifact(manifest, name)
    passed = [a for a in manifest["artifacts"] if a["format"] in ("onnx", "ort") and a["verification"].get("passed")]
    if not passed:
        raise GenerateError("no ONNX Runtime artifact of this bundle passed verification", "name one with --artifact")
    return min(passed, key=lambda a: a["bytes"])


def generate_text(bundle: Path, prompt: str, settings: GenerateSettings,
                  on_text: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Generate greedily from ``prompt``; ``on_text`` receives the text as it grows (new part only).
    Returns the runner's ``generation`` figures plus the artifact's name."""
    from edgekit.runner import edgekit_runner as runner

    try:
        manifest = runner.load_manifest(bundle)
        spec = manifest.get("llm")
        if manifest.get("kind") != "llm" or not spec:
            raise GenerateError(f"{bundle} is not an LLM bundle", "build one with `edgekit build --example smollm2`")
        art = pick_artifact(manifest, settings.artifact)
        decoder = runner.OrtDecoder.from_file(runner.check_artifact(bundle, art), spec, threads=settings.threads)
        tokenizer = runner.load_tokenizer(bundle, spec, "edgekit generate")
        ids = runner.check_prompt(tokenizer.encode(prompt, add_special_tokens=False).ids, spec)
        stream = _Stream(tokenizer, on_text)
        gen = runner.generate(decoder, ids, min(settings.max_new_tokens, runner.room(spec["context"], len(ids))),
                              spec.get("eos_token_ids") or (), on_token=stream)
    except runner.RunnerError as exc:
        raise GenerateError(str(exc), "give a bundle folder made by `edgekit build` for a language model") from None
    figures = runner.generation_figures(gen, decoder, runner.maxrss_mb(), stream.text)
    return {"artifact": art["file"], **figures}


class _Stream:
    """Decodes the whole sequence each time and emits what is new: byte-level BPE tokens can end
    mid-character, so decoding tokens one by one would print broken text."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text, self.tokens, self.text = tokenizer, on_text, [], ""

    def __call__(self, token: int) -> None:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if not text.endswith("\ufffd"):
            self.on_text(text[len(self.text):])
            self.text = text
