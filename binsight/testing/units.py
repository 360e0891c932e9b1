"""Which tests go to a pytest-xdist worker together ("units"), as tests/conftest.py schedules them.

A worker builds each session fixture its tests use. The tests that share an expensive built project
(`SHARED_FIXTURES`) therefore run on one worker as one unit, so that the project is built once:
right for a 2-core machine, where every extra build costs the whole suite time. With many workers
(a GPU box's 16 cores), that one unit is the suite's critical path. There, each module becomes its
own unit, and each test of the modules in `SPLIT_BY_TEST` too: each worker builds the project it
needs (about a minute), and the long tests run side by side.
"""
from pathlib import Path

SHARED_FIXTURES = ("frozen_project", "trained_project")  # longest first
SPLIT_AT_WORKERS = 6
SPLIT_BY_TEST = ("tests/test_tune.py",)  # a few tests of minutes each


def unit_of_module(test_files):
    """{"tests/test_x.py": the shared fixture it uses (its unit), else its own path}."""
    return {f"tests/{Path(p).name}": next((f for f in SHARED_FIXTURES if f in Path(p).read_text()),
                                          f"tests/{Path(p).name}") for p in test_files}


def unit_of(nodeid, units, workers):
    """The unit of test `nodeid` ("tests/test_x.py::test_y[...]") when the suite runs on `workers`."""
    module = nodeid.split("::", 1)[0]
    unit = units.get(module, module)
    if unit not in SHARED_FIXTURES or workers < SPLIT_AT_WORKERS:
        return unit
    return nodeid if module in SPLIT_BY_TEST else module


def unit_rank(nodeid, units):
    """Sort key: the shared-project tests first (the longest units), then the rest in their order."""
    unit = units.get(nodeid.split("::", 1)[0])
    return SHARED_FIXTURES.index(unit) if unit in SHARED_FIXTURES else len(SHARED_FIXTURES)
