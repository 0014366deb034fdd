"""pytest plugin for the mutation run only (scripts/mutation.py loads it through [tool.mutmut]).

mutmut runs the tests inside ``mutants/``, a copy of the repo whose functions dispatch to the
active mutant by module name. Three things need help there:

- the code must come from ``mutants/``: the editable install of sftpipe points at the working
  tree, so a wrong sys.path would test the original code and every mutant would "survive";
  the run stops if it does;
- ``evaluate.load(path)`` imports a metric script under a module name of its own
  (``evaluate_modules.metrics.<name>.<hash>.<name>``), under which mutmut never activates a
  mutant; here the script found by evaluate is imported under its package name instead
  (``sftpipe.metric_modules.<name>.<name>``), which is the same file;
- every mutant's pytest run builds the session fixtures again, so tests without a model
  run first and a mutant they kill costs seconds, not the minute of training a tiny model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# cost classes: tests using none of these fixtures run first, the lookup model's tests last
_COSTLY_FIXTURES = ("tiny_tokenizer", "tiny_model_dir", "lookup_model_dir")


def pytest_configure(config):
    root = Path(str(config.rootpath)).resolve()
    origin = Path(importlib.util.find_spec("sftpipe.formatting").origin).resolve()
    if root not in origin.parents:
        raise RuntimeError(f"mutation run: sftpipe imported from {origin}, not from the mutated copy {root}")
    _load_metric_modules_by_package_name()


def _load_metric_modules_by_package_name():
    import evaluate.loading as loading

    import sftpipe.metric_modules as mm

    here = Path(mm.__file__).resolve().parent
    factory = loading.evaluation_module_factory
    if getattr(factory, "_sftpipe_mutation", False):
        return

    def by_package_name(path, *args, **kwargs):
        found = factory(path, *args, **kwargs)       # evaluate's own checks, copy and hash
        p = Path(path).resolve()
        if p.parent == here and p.name in mm.NAMES:
            return loading.ImportableModule(f"sftpipe.metric_modules.{p.name}.{p.name}", found.hash)
        return found

    by_package_name._sftpipe_mutation = True
    loading.evaluation_module_factory = by_package_name


def _cost(item) -> int:
    names = getattr(item, "fixturenames", ())
    return max((k + 1 for k, f in enumerate(_COSTLY_FIXTURES) if f in names), default=0)


def pytest_collection_modifyitems(items):
    items.sort(key=_cost)   # stable: the order within a cost class is kept
