"""The template plugin's own tests (examples/my_method/test_my_method.py), collected here so that the
project's test run (testpaths = ["tests"]) runs them and the template never rots."""

import importlib.util
from pathlib import Path

TEMPLATE_TESTS = Path(__file__).parents[1] / "examples" / "my_method" / "test_my_method.py"

_spec = importlib.util.spec_from_file_location("examples_my_method_tests", TEMPLATE_TESTS)
_template = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_template)
globals().update({name: test for name, test in vars(_template).items() if name.startswith("test_")})


def test_the_template_tests_are_all_collected():
    collected = {
        name
        for name in globals()
        if name.startswith("test_") and name != "test_the_template_tests_are_all_collected"
    }
    assert len(collected) >= 6 and collected == {n for n in vars(_template) if n.startswith("test_")}
