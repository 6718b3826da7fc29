"""edgekit.isolated: run_tool calls a module-level function in a fresh child process."""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from edgekit.errors import ConversionError
from edgekit.isolated import captured, child_code, run_tool


def test_run_tool_calls_the_function_by_name_in_a_child(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    tool = functools.partial(shutil.copyfile, "a.txt", "b.txt")
    assert child_code(tool) == "import shutil; shutil.copyfile('a.txt', 'b.txt')"
    assert run_tool(tool, [], tmp_path, "copy", "none") == "" and (tmp_path / "b.txt").read_text() == "x"


def test_the_ort_converter_child_runs_the_code_of_earlier_builds():
    """The .ort bytes depend on the child's exact code (module docstring): it must not drift."""
    from edgekit.stages.ort import _ORT_FORMAT

    assert child_code(_ORT_FORMAT) == ("import runpy; runpy.run_module('onnxruntime.tools.convert_onnx_models_to_ort', "
                                       "run_name='__main__')")


def test_a_failing_tool_is_one_conversion_error(tmp_path: Path):
    from edgekit.stages.ort import _ORT_FORMAT

    with pytest.raises(ConversionError) as err:
        run_tool(_ORT_FORMAT, [str(tmp_path / "missing"), "--optimization_style", "Fixed"], tmp_path,
                 "ORT format conversion", "check the model")
    assert str(err.value).startswith("ORT format conversion failed (exit 1): ")
    assert str(err.value).endswith("(check the model)") and "\n" not in str(err.value)


def test_run_tool_refuses_what_a_child_cannot_import(tmp_path: Path):
    with pytest.raises(ValueError, match="module-level function"):
        run_tool(lambda: None, [], tmp_path, "lambda", "none")
    with pytest.raises(ValueError, match="only literal arguments"):
        child_code(functools.partial(shutil.copyfile, tmp_path))


def test_captured_keeps_fd_level_output(capfd):
    with captured() as log:
        os.write(1, b"from C\n")
        print("from Python")
    assert "from C" in log.text and "from Python" in log.text
    assert capfd.readouterr().out == ""
