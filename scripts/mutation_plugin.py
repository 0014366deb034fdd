"""pytest plugin for the mutation run only (scripts/mutation.py loads it through [tool.mutmut]).

mutmut runs the tests inside ``mutants/``, a copy of the repo whose functions dispatch to the
active mutant by module name. Four things need help there:

- the code must come from ``mutants/``: the editable install of sftpipe points at the working
  tree, so a wrong sys.path would test the original code and every mutant would "survive";
  the run stops if it does;
- ``evaluate.load(path)`` imports a metric script under a module name of its own
  (``evaluate_modules.metrics.<name>.<hash>.<name>``), under which mutmut never activates a
  mutant; here the script found by evaluate is imported under its package name instead
  (``sftpipe.model.metric_modules.<name>.<name>``), which is the same file;
- mutmut's stats run credits a function to the test during which it ran, so a module or
  session fixture (the label-noise results, the lookup model trained through formatting.encode)
  counts only for the first test that uses it, and the later tests never run against the
  function's mutants; here the functions a fixture's setup called are credited to every test
  that uses the fixture;
- every mutant's pytest run builds the session fixtures again, so tests without a model
  run first and a mutant they kill costs seconds, not the minute of training a tiny model.

And one thing mutmut 3.8.1 gets wrong with --max-children > 1: its fork server's SIGTERM handler
(SIGKILL every worker running) is inherited by the workers and by their own subprocesses, so a
multiprocessing pool that terminates its workers (cleanlab's does) SIGKILLs the mutant running
beside it, which mutmut then reports as "segfault". Tests run with the default SIGTERM handler.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest

# cost classes: tests using none of these fixtures run first, the lookup model's tests last
_COSTLY_FIXTURES = ("tiny_tokenizer", "tiny_model_dir", "lookup_model_dir")


def pytest_configure(config):
    if os.environ.get("MUTANT_UNDER_TEST") is not None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    root = Path(str(config.rootpath)).resolve()
    origin = Path(importlib.util.find_spec("sftpipe.model.formatting").origin).resolve()
    if root not in origin.parents:
        raise RuntimeError(f"mutation run: sftpipe imported from {origin}, not from the mutated copy {root}")
    _load_metric_modules_by_package_name()


def _load_metric_modules_by_package_name():
    import evaluate.loading as loading

    import sftpipe.model.metric_modules as mm

    here = Path(mm.__file__).resolve().parent
    factory = loading.evaluation_module_factory
    if getattr(factory, "_sftpipe_mutation", False):
        return

    def by_package_name(path, *args, **kwargs):
        found = factory(path, *args, **kwargs)       # evaluate's own checks, copy and hash
        p = Path(path).resolve()
        if p.parent == here and p.name in mm.NAMES:
            return loading.ImportableModule(f"sftpipe.model.metric_modules.{p.name}.{p.name}", found.hash)
        return found

    by_package_name._sftpipe_mutation = True
    loading.evaluation_module_factory = by_package_name


def _cost(item) -> int:
    names = getattr(item, "fixturenames", ())
    return max((k + 1 for k, f in enumerate(_COSTLY_FIXTURES) if f in names), default=0)


def pytest_collection_modifyitems(items):
    items.sort(key=_cost)   # stable: the order within a cost class is kept


def _collecting_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


_fixture_hits: dict = {}    # FixtureDef -> mutated functions called while setting it up


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if not _collecting_stats():
        yield
        return
    from mutmut.state import state

    outer, state()._stats = state()._stats, set()
    yield
    hits = state()._stats
    _fixture_hits[fixturedef] = _fixture_hits.get(fixturedef, set()) | hits
    state()._stats = outer | hits


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    if not _collecting_stats():
        return
    from mutmut.state import state

    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        for fd in defs:
            state()._stats |= _fixture_hits.get(fd, set())
