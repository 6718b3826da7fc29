"""How the device runner is asked to run: one typed object for local, SSH and emulated runs.

:class:`RunnerSettings` is built once (by the CLI, a stage or a caller of the API) and travels
as is to the transport; :meth:`RunnerSettings.argv` is the one place that turns it into the
runner's command-line flags, so a value is never re-parsed on the way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Seconds one step of a run (copy to a device, the runner itself) may take before it is stopped.
RUN_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class RunnerSettings:
    """What ``edgekit_runner.py`` measures and how long a transport waits for it.

    The defaults are the runner's own (its ``--help``), so these settings and a bare runner
    invocation measure the same thing.
    """

    threads: int | None = None
    """Runtime threads; None: the manifest's ``runtime_defaults`` (else all cores)."""
    runs: int = 50
    """Minimum timed runs per artifact."""
    warmup: int = 5
    """Untimed runs before timing."""
    min_seconds: float = 1.0
    """Minimum timed seconds per artifact (more runs are made until it is reached)."""
    max_seconds: float = 60.0
    """Cap on the timed seconds per artifact."""
    timeout: float = RUN_TIMEOUT_S
    """Seconds a transport allows each step (copy, run); not passed to the runner."""
    artifact: str | None = None
    """Run only this artifact (its file name in the bundle); None: every artifact."""
    delegate: str | None = None
    """TFLite delegate instead of the manifest's (xnnpack, nnapi, gpu, none)."""
    provider: str | None = None
    """onnxruntime execution provider instead of the manifest's."""
    prompt: str | None = None
    """LLM bundles: generate from this text (the device needs ``tokenizers``) instead of the
    golden prompts; the report's ``generation`` carries the tokens and text."""
    prompt_ids: tuple[int, ...] | None = None
    """LLM bundles: generate from these token ids (no tokenizer needed)."""
    max_new_tokens: int | None = None
    """LLM bundles: new tokens to generate; None: the runner's default."""

    def argv(self, json_out: str) -> list[str]:
        """The runner's flags after the bundle folder, its JSON report written to ``json_out``."""
        flags = {"--artifact": self.artifact, "--threads": self.threads, "--runs": self.runs, "--warmup": self.warmup,
                 "--min-seconds": self.min_seconds, "--max-seconds": self.max_seconds, "--delegate": self.delegate,
                 "--provider": self.provider, "--max-new-tokens": self.max_new_tokens}
        args = [item for flag, value in flags.items() if value is not None for item in (flag, str(value))]
        if self.prompt is not None:
            args.append(f"--prompt={self.prompt}")  # "--flag=value": a prompt may start with "-"
        if self.prompt_ids is not None:
            args.append("--prompt-ids=" + ",".join(map(str, self.prompt_ids)))
        return [*args, "--json", json_out]

    def replace(self, **changes) -> RunnerSettings:
        """A copy with ``changes`` (field name: value)."""
        return dataclasses.replace(self, **changes)

    def for_emulation(self) -> RunnerSettings:
        """Emulated timings mean nothing (qemu translates every instruction): the timing fields
        still at the runner's defaults become :data:`EMULATED` 's few runs; set ones are kept."""
        cheap = {name: getattr(EMULATED, name) for name in ("runs", "warmup", "min_seconds")
                 if getattr(self, name) == getattr(DEFAULTS, name)}
        return self.replace(**cheap)


DEFAULTS = RunnerSettings()
# A few timed runs prove the loop works under emulation; more only cost minutes.
EMULATED = RunnerSettings(runs=3, warmup=1, min_seconds=0.0)
