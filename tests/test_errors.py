"""One MissingDependencyError: the compression library raises edgekit's."""
from __future__ import annotations

import pytest

from edgekit import errors
from edgekit.compress import errors as compress_errors


def test_one_missing_dependency_error_that_is_an_import_error():
    assert compress_errors.MissingDependencyError is errors.MissingDependencyError
    with pytest.raises(ImportError) as caught:
        compress_errors.require("edgekit_no_such_module", "no-such-package", "this method")
    assert isinstance(caught.value, errors.EdgekitError) and caught.value.exit_code == 2
    assert str(caught.value) == ("this method needs the 'no-such-package' package, which is not installed; "
                                 "run `pip install no-such-package`")
