"""The ``edgekit`` command. It only parses arguments, calls the API and prints."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from edgekit.errors import EdgekitError


class _Progress:
    """Prints one line per stage with the elapsed time of the previous one (stderr)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def stage(self, name: str, detail: str = "") -> None:
        click.echo(f"[{time.perf_counter() - self._start:6.1f}s] {detail or name} ...", err=True)

    def info(self, message: str) -> None:
        click.echo(f"          {message}", err=True)


def _run(debug: bool, func, *args, **kwargs):
    """Call the API; a user-fixable error becomes one line and a non-zero exit."""
    try:
        return func(*args, **kwargs)
    except EdgekitError as exc:
        if debug:
            raise
        click.echo(f"edgekit: error: {exc}", err=True)
        sys.exit(exc.exit_code)


@click.group()
@click.version_option(package_name="edgekit")
def main() -> None:
    """edgekit: from a PyTorch model to verified edge bundles (TFLite, ONNX Runtime mobile)."""


@main.command()
@click.argument("model", required=False)
@click.option("--target", "-t", required=True, help="Profile name (see `edgekit targets`) or path to a .toml file.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle folder [default: dist/<target>].")
@click.option("--calibration", "-c", help="Calibration set name (digits, photos) or a folder of .npy/.npz/images.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:1x3x224x224[:dtype]", help="Input spec; repeat per input.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--allow-drift", is_flag=True, help="Keep artifacts that fail verification (reported as FAIL).")
@click.option("--latency-runs", default=50, show_default=True, help="Timed host runs per artifact (0: skip).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def build(model, target, out, calibration, inputs, force, allow_drift, latency_runs, as_json, debug) -> None:
    """Build, verify and bundle MODEL for a target (no MODEL: the bundled digits example).

    MODEL is path/to/file.py:factory, an exported program (.pt2) or an .onnx file.
    """
    from edgekit.options import BuildOptions
    from edgekit.pipeline import build as run_build
    from edgekit.report import build_summary
    from edgekit.tensors import parse_input_spec

    specs = tuple(_run(debug, parse_input_spec, text) for text in inputs)
    options = BuildOptions(target=target, model=model, out=out, calibration=calibration, inputs=specs,
                           force=force, allow_drift=allow_drift, latency_runs=latency_runs)
    manifest = _run(debug, run_build, options, None if as_json else _Progress())
    click.echo(json.dumps(manifest, indent=2) if as_json else build_summary(manifest))
    failed = [a["file"] for a in manifest["artifacts"] if not a["verification"].get("passed")]
    if failed:
        click.echo(f"edgekit: {len(failed)} artifact(s) failed verification: {', '.join(failed)}", err=True)
        sys.exit(4)


@main.group(invoke_without_command=True)
@click.pass_context
def targets(ctx: click.Context) -> None:
    """List the bundled target profiles."""
    if ctx.invoked_subcommand is None:
        from edgekit.report import targets_table
        from edgekit.targets import list_targets, load_target

        click.echo(targets_table([load_target(n) for n in list_targets()]))


@targets.command("show")
@click.argument("name")
@click.option("--debug", is_flag=True)
def targets_show(name: str, debug: bool) -> None:
    """Show every fact of one profile (NAME or path to a .toml)."""
    from edgekit.targets import load_target

    profile = _run(debug, load_target, name)
    click.echo(json.dumps(asdict(profile), indent=2, default=str))


@main.command()
@click.argument("model")
@click.option("--target", "-t", required=True, help="Profile name or .toml path.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:1x3x224x224[:dtype]")
@click.option("--json", "as_json", is_flag=True)
@click.option("--debug", is_flag=True)
def inspect(model: str, target: str, inputs, as_json: bool, debug: bool) -> None:
    """List MODEL's ONNX ops and which the target's runtimes take, without building."""
    from edgekit.inspect import inspect_model, render
    from edgekit.tensors import parse_input_spec

    specs = tuple(_run(debug, parse_input_spec, text) for text in inputs)
    report = _run(debug, inspect_model, model, target=target, inputs=specs)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


if __name__ == "__main__":
    main()
