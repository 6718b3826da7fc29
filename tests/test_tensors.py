import pytest

from edgekit.errors import InputSpecError
from edgekit.tensors import parse_input_spec


def test_parse_input_spec():
    spec = parse_input_spec("pixel_values:1x3x224x224")
    assert (spec.name, spec.shape, spec.dtype, spec.layout) == ("pixel_values", (1, 3, 224, 224), "float32", "NCHW")
    tokens = parse_input_spec("input_ids:1x64:int64")
    assert (tokens.shape, tokens.dtype, tokens.layout) == ((1, 64), "int64", None)


@pytest.mark.parametrize("text", ["input", "input:1xx3", "input:1x3:complex64", "input:0x3", ":1x3"])
def test_bad_input_specs(text):
    with pytest.raises(InputSpecError):
        parse_input_spec(text)
