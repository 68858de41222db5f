"""``aligngym.agents`` exports every agent lazily: the names resolve to the classes of their own modules."""

import importlib
import subprocess
import sys

import pytest

import aligngym.agents as agents


@pytest.mark.parametrize("name", agents.__all__)
def test_exported_name_is_the_modules_object(name: str) -> None:
    module = importlib.import_module(f"aligngym.agents.{agents._EXPORTS[name]}")
    assert getattr(agents, name) is getattr(module, name)


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchAgent"):
        agents.NoSuchAgent  # noqa: B018


def test_package_import_does_not_import_torch() -> None:
    code = "import sys, aligngym.agents; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
