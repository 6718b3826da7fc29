"""The ``edgekit`` command. It only parses arguments, calls the API and prints."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from edgekit.device.settings import DEFAULTS, EMULATED, RunnerSettings  # light (dataclasses only): defaults shown in --help
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


def _prompt_ids(value: str | None) -> tuple[int, ...] | None:
    """``--prompt-ids`` by the runner's own rule (comma-separated non-negative integers)."""
    import argparse

    from edgekit.runner.edgekit_runner import token_ids

    if value is None:
        return None
    try:
        return tuple(token_ids(value))
    except argparse.ArgumentTypeError as exc:
        raise click.BadParameter(str(exc)) from None


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from edgekit.doctor import version_text

        click.echo(version_text())
        ctx.exit()


@click.group()
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show edgekit's version and the installed stack (torch, onnx, onnxruntime, TensorFlow, ...).")
def main() -> None:
    """edgekit: from a PyTorch model to verified edge bundles (TFLite, ONNX Runtime mobile)."""


@main.command()
@click.argument("model", required=False)
@click.option("--target", "-t", required=True, help="Profile name (see `edgekit targets`) or path to a .toml file.")
@click.option("--example", type=click.Choice(["digits", "minilm", "minilm-student", "tinygpt", "smollm2"]),
              help="Build a bundled example instead of MODEL (minilm needs the transformers extra; "
                   "smollm2, a real 135M-parameter LLM, the llm extra).")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle folder [default: dist/<target>].")
@click.option("--calibration", "-c", help="Calibration set name (digits, photos) or a folder of .npy/.npz/images.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:1x3x224x224[:dtype]", help="Input spec; repeat per input.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--allow-drift", is_flag=True,
              help="Keep artifacts that fail verification (reported as FAIL) and a compression that breaks its budget (exit 4).")
@click.option("--latency-runs", default=50, show_default=True, help="Timed host runs per artifact (0: skip).")
@click.option("--share", metavar="auto", help="Compression: tie shared weights, e.g. auto.")
@click.option("--prune", metavar="KIND:RATIO[,k=v]", help="Compression: e.g. structured:0.5,finetune_epochs=5 or unstructured:0.8.")
@click.option("--lowrank", metavar="RULE:VALUE", help="Compression: SVD of Linear/1x1 layers, e.g. energy:0.9 or ratio:0.5.")
@click.option("--distill", metavar="k=v[,k=v]", help="Compression: distillation from the original, e.g. epochs=3.")
@click.option("--qat", metavar="k=v[,k=v]", help="Compression: quantization-aware training, e.g. epochs=1.")
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), help="Compression recipe TOML ([[compress]] tables).")
@click.option("--max-drop", metavar="BOUND",
              help="Compression quality budget against the original, instead of the profile's [budget]: "
                   "2pp or 2 (top-1 drop, percentage points; classifiers), cos:0.99 (min output cosine; embeddings), "
                   "ppl:5% (perplexity increase; language models). A build whose compression loses more exits 4.")
@click.option("--verify-on", type=click.Choice(["aarch64", "none"]),
              help="Also verify with the device's ARM kernels under qemu [default: for an aarch64 target when the emulated "
                   "userland is already cached].")
@click.option("--overlay", type=click.Path(path_type=Path),
              help="Profile overlay TOML merged over the target profile (e.g. edgekit search's chosen.toml).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads the build uses [default: the recipe's [build] threads, else every core].")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def build(model, target, example, out, calibration, inputs, force, allow_drift, latency_runs, share, prune, lowrank, distill, qat,
          recipe_file, max_drop, verify_on, overlay, threads, as_json, debug) -> None:
    """Build, verify and bundle MODEL for a target (no MODEL: the bundled digits example).

    MODEL is path/to/file.py:factory, an exported program (.pt2), an .onnx file, or a language model:
    a Hugging Face causal-LM folder (llama, qwen2, gemma; safetensors) or a .gguf file.
    Compression steps run in the fixed order share, prune, lowrank, distill, qat.
    """
    from edgekit.budget import MaxDrop, describe, final_budget
    from edgekit.options import BuildOptions
    from edgekit.pipeline import build as run_build
    from edgekit.report import build_summary, failed_artifacts
    from edgekit.tensors import parse_input_spec

    specs = tuple(_run(debug, parse_input_spec, text) for text in inputs)
    bound = _run(debug, MaxDrop.parse, max_drop) if max_drop is not None else None
    if example and model:
        click.echo("edgekit: error: give MODEL or --example, not both", err=True)
        sys.exit(2)
    model = f"example:{example}" if example else model
    steps = {"share": share, "prune": prune, "lowrank": lowrank, "distill": distill, "qat": qat}
    recipe = tuple(f"{method}={value}" for method, value in steps.items() if value)
    options = BuildOptions(target=target, model=model, out=out, calibration=calibration, inputs=specs, force=force,
                           allow_drift=allow_drift, latency_runs=latency_runs, recipe=recipe, recipe_file=recipe_file,
                           max_drop=bound, verify_on=verify_on, overlay=overlay, threads=threads)
    manifest = _run(debug, run_build, options, None if as_json else _Progress())
    click.echo(json.dumps(manifest, indent=2) if as_json else build_summary(manifest))
    failed = failed_artifacts(manifest)
    if failed:
        click.echo(f"edgekit: {len(failed)} artifact(s) failed verification: {', '.join(failed)}", err=True)
        sys.exit(4)
    budget = final_budget(manifest.get("compression") or [])
    if budget is not None and not budget["passed"]:  # kept by --allow-drift: the bundle is there, the exit says so
        click.echo(f"edgekit: the compressed model broke its quality budget ({describe(budget)}); kept by --allow-drift",
                   err=True)
        sys.exit(4)


@main.command("search")
@click.argument("model", required=False)
@click.option("--target", "-t", required=True, help="Profile name (see `edgekit targets`) or path to a .toml file.")
@click.option("--max-drop", metavar="BOUND", help="Classifiers: the top-1 drop the chosen artifact may cost [default: 0.5pp].")
@click.option("--min-cosine", type=float, metavar="COS", help="Embeddings: the lowest mean cosine to the original, e.g. 0.998.")
@click.option("--max-ppl-increase", metavar="PCT", help="Language models: the perplexity increase allowed, e.g. 5%.")
@click.option("--trials", default=20, show_default=True, help="Trials the study holds when the search ends.")
@click.option("--budget", metavar="TIME", help="No new trial after this time, e.g. 30m, 90s, 1h.")
@click.option("--workers", default=1, show_default=True, help="Trials built at once (one process or Ray task each).")
@click.option("--trial-time", metavar="TIME", default="10m", show_default=True,
              help="Stop a trial (recorded as failed) that builds longer than this, e.g. 90s.")
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="Trials may also prune, factorize, distill and QAT the model (when it has labelled training data).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run trials on Ray: alone, a Ray runtime started here; with HOST:PORT, that cluster (edgekit[ray]).")
@click.option("--host", "-H", "hosts", multiple=True, metavar="USER@NAME[:PORT]",
              help="Time each trial on this device over SSH (repeat for several, used in parallel).")
@click.option("--identity", "-i", type=click.Path(path_type=Path), help="SSH private key for --host [default: ssh's own].")
@click.option("--known-hosts", type=click.Path(path_type=Path), help="known_hosts file for --host [default: ~/.ssh/known_hosts].")
@click.option("--python", "device_python", default="python3", show_default=True, help="Python on the --host devices.")
@click.option("--device-runs", default=50, show_default=True, help="Timed runs per trial on a --host device.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("search"), show_default=True, help="Search folder.")
@click.option("--resume", is_flag=True, help="Continue the study in --out.")
@click.option("--seed", default=0, show_default=True, help="Sampler and build seed.")
@click.option("--latency-runs", default=50, show_default=True, help="Timed host runs per artifact in each trial.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def search_cmd(model, target, max_drop, min_cosine, max_ppl_increase, trials, budget, workers, trial_time, compress, ray_address,
               hosts, identity, known_hosts, device_python, device_runs, out, resume, seed, latency_runs, as_json, debug) -> None:
    """Search the schemes the target allows for MODEL (no MODEL: the digits example) with Optuna;
    write chosen.toml, its bundle and report.html into --out."""
    from edgekit.device.settings import RunnerSettings
    from edgekit.search import Devices, SearchOptions, parse_budget, parse_search_budget, search
    from edgekit.search.report import summary_table

    def options() -> SearchOptions:
        devices = Devices(hosts=tuple(hosts), settings=RunnerSettings(runs=device_runs), identity=identity,
                          known_hosts=known_hosts, python=device_python) if hosts else None
        return SearchOptions(target=target, model=model, max_drop=parse_search_budget(max_drop, min_cosine, max_ppl_increase),
                             trials=trials, budget_s=parse_budget(budget) if budget else None, workers=workers, out=out,
                             resume=resume, seed=seed, latency_runs=latency_runs, ray=ray_address, devices=devices,
                             compress=compress, trial_time_s=parse_budget(trial_time, "--trial-time"))

    summary = _run(debug, search, _run(debug, options), None if as_json else (lambda line: click.echo(line, err=True)))
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else summary_table(summary, out))


@main.group(invoke_without_command=True)
@click.pass_context
def targets(ctx: click.Context) -> None:
    """List the bundled target profiles (exit 2 when a profile file is broken; the rest are listed)."""
    if ctx.invoked_subcommand is None:
        from edgekit.report import targets_table
        from edgekit.targets import load_all

        profiles, broken = load_all()
        click.echo(targets_table(profiles))
        for error in broken:
            click.echo(f"edgekit: error: {error}", err=True)
        if broken:  # a profile that --target would refuse is a bad input, even when the others list
            sys.exit(broken[0].exit_code)


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


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", "-H", "hosts", multiple=True, metavar="USER@NAME[:PORT]",
              help="Run on this device over SSH (keys only, known host keys only); repeat for several, run in parallel. "
                   "Default: run here.")
@click.option("--emulate", type=click.Choice(["aarch64"]), help="Run inside an aarch64 userland under qemu (correctness only).")
@click.option("--identity", "-i", type=click.Path(path_type=Path), help="SSH private key [default: ssh's own].")
@click.option("--known-hosts", type=click.Path(path_type=Path), help="known_hosts file to verify host keys [default: ~/.ssh/known_hosts].")
@click.option("--python", default="python3", show_default=True, help="Python on the device (e.g. a venv's bin/python).")
@click.option("--artifact", help="Run only this artifact.")
@click.option("--threads", type=int, help="Runtime threads [default: the bundle's runtime_defaults].")
@click.option("--runs", type=int, help=f"Minimum timed runs per artifact [runner default {DEFAULTS.runs}; emulated {EMULATED.runs}].")
@click.option("--warmup", type=int, help=f"Warm-up runs [runner default {DEFAULTS.warmup}; emulated {EMULATED.warmup}].")
@click.option("--min-seconds", type=float,
              help=f"Minimum timed seconds per artifact [runner default {DEFAULTS.min_seconds:g}; emulated {EMULATED.min_seconds:g}].")
@click.option("--max-seconds", type=float, help=f"Cap on timed seconds per artifact [runner default {DEFAULTS.max_seconds:g}].")
@click.option("--prompt", help="LLM bundles: generate from this text instead of the golden prompts (needs tokenizers there).")
@click.option("--prompt-ids", metavar="1,2,3", callback=lambda ctx, param, value: _prompt_ids(value),
              help="LLM bundles: generate from these token ids (no tokenizer needed).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="LLM bundles: new tokens [runner default].")
@click.option("--timeout", type=float, default=DEFAULTS.timeout, show_default=True, help="Seconds allowed per step (copy, run) per host.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Also save the reports (JSON list) here, for `edgekit compare`.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def bench(bundle, hosts, emulate, identity, known_hosts, python, artifact, threads, runs, warmup, min_seconds, max_seconds,
          prompt, prompt_ids, max_new_tokens, timeout, out, as_json, debug) -> None:
    """Run BUNDLE's own runner here, on devices over SSH (--host), or emulated (--emulate aarch64).

    Exit 0 when every artifact ran and matched its golden outputs, 4 when one did not.
    """
    from edgekit.device.bench import bench as run_bench
    from edgekit.device.bench import render_bench

    given = {"artifact": artifact, "threads": threads, "runs": runs, "warmup": warmup, "min_seconds": min_seconds,
             "max_seconds": max_seconds, "timeout": timeout, "prompt": prompt, "max_new_tokens": max_new_tokens,
             "prompt_ids": prompt_ids}
    if prompt is not None and prompt_ids is not None:
        raise click.UsageError("give --prompt or --prompt-ids, not both")
    settings = RunnerSettings(**{name: value for name, value in given.items() if value is not None})
    try:
        reports, error = run_bench(bundle, settings, hosts=hosts, emulate=emulate, identity=identity, known_hosts=known_hosts,
                                   python=python, progress=lambda line: click.echo(f"          {line}", err=True)), None
    except EdgekitError as exc:  # with several hosts, the ones that worked are still shown
        if debug:
            raise
        reports, error = getattr(exc, "results", []), exc
    if out and reports:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(reports, indent=2) + "\n")
    if reports:
        click.echo(json.dumps(reports, indent=2) if as_json else render_bench(reports))
    if error is not None:
        click.echo(f"edgekit: error: {error}", err=True)
        sys.exit(error.exit_code)
    failed = [r["host"] for r in reports if not r["passed"]]
    if failed:
        click.echo(f"edgekit: correctness failed or an artifact errored on: {', '.join(failed)}", err=True)
        sys.exit(4)


@main.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--per-artifact", is_flag=True, help="Ratios to the same artifact in the first file (default: to the first row).")
@click.option("--plot", "plot_png", type=click.Path(path_type=Path), help="Also draw latency distributions and size vs p50 (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (without the raw samples).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def compare_cmd(reports, per_artifact, plot_png, as_json, debug) -> None:
    """Compare runner reports (files from `edgekit bench --out` or `edgekit_runner.py --json`)."""
    from edgekit.device.compare import compare, plot, render_compare

    data = _run(debug, compare, reports, per_artifact=per_artifact)
    if plot_png:
        plot(data, plot_png)
        click.echo(f"wrote {plot_png}", err=True)
    if as_json:
        rows = [{k: v for k, v in row.items() if k != "samples_ms"} for row in data["rows"]]
        click.echo(json.dumps({**data, "rows": rows}, indent=2))
    else:
        click.echo(render_compare(data))



@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--artifact", help="Artifact file name [default: the smallest ONNX Runtime artifact that passed verification].")
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(1), help="Tokens to generate at most.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="Intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the generation figures as JSON after the text.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def generate(bundle, prompt, artifact, max_new_tokens, threads, as_json, debug) -> None:
    """Generate text from an LLM bundle on this host, streaming it as it comes (greedy)."""
    from edgekit.llm.generate import GenerateSettings, generate_text

    settings = GenerateSettings(artifact=artifact, max_new_tokens=max_new_tokens, threads=threads)
    figures = _run(debug, generate_text, bundle, prompt, settings, lambda text: click.echo(text, nl=False))
    click.echo()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(f"[{figures['artifact']}: {len(figures['tokens'])} tokens, TTFT {figures['ttft_ms']:.0f} ms, "
                   f"decode {figures['decode_tok_s'] or 0:.1f} tok/s]", err=True)


@main.command()
@click.option("--lock", type=click.Path(path_type=Path), help="Lock to compare with [default: constraints.txt of the checkout or install].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def doctor(lock, as_json, debug) -> None:
    """Compare the installed packages with the lock; show the CPU's int8 features and the tests' system tools.

    Exit 0 when every locked package is installed at its locked version, 1 when one is not.
    """
    from edgekit.doctor import diagnose, render

    report = _run(debug, diagnose, lock)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    sys.exit(0 if report["matches_lock"] else 1)


if __name__ == "__main__":
    main()
