"""State: OpenLoop's files and their models, read and written atomically under locks.

Belongs here: the pydantic models of every file (ledger, registry, global and project config,
policy, budget, runs, trust fingerprints), the control plane's layout and init, stack detection
(what init writes), atomic storage, locks, pause flags and environment-error backoff, and the
resolved Project.
Must not: start processes, talk to git, systemd, the journal or an agent (that is
openloop.adapters), or decide anything about an iteration (openloop.loop). Imports only the
top-level primitives (env, errors, progress, resources) and itself.

Importing it switches pydantic's plugins off for the process (see _without_pydantic_plugins):
every model lives here, so no validator is built before.
"""

import sys as _sys
import types as _types


def _without_pydantic_plugins() -> None:
    """Run no third-party pydantic plugins inside OpenLoop.

    Before it builds its first validator, pydantic imports its plugin loader, which imports
    importlib.metadata and reads every installed distribution's entry points: ~10-15 ms of each
    command's start-up, for plugins that would run foreign code inside the validation of
    OpenLoop's own control files. The loader is replaced by one that finds none; any other name a
    later pydantic asks of it comes from the real loader, so an upgrade costs speed, not
    correctness."""
    name = "pydantic.plugin._loader"
    if name in _sys.modules:
        return
    from importlib.machinery import ModuleSpec

    stub = _types.ModuleType(name, "No pydantic plugins in OpenLoop (see openloop.state).")
    stub.__spec__ = ModuleSpec(name, None)  # importlib.util.find_spec asks for one
    loaded: list[_types.ModuleType] = []

    def get_plugins() -> tuple[()]:
        return ()

    def real_attribute(attr: str):
        if attr.startswith("__"):  # what the import system asks of any module
            raise AttributeError(attr)
        if not loaded:
            from importlib.machinery import PathFinder
            from importlib.util import module_from_spec

            import pydantic.plugin

            spec = PathFinder.find_spec("_loader", list(pydantic.plugin.__path__))
            if spec is None or spec.loader is None:
                raise AttributeError(attr)
            loaded.append(module_from_spec(spec))
            spec.loader.exec_module(loaded[0])
        return getattr(loaded[0], attr)

    stub.get_plugins = get_plugins  # type: ignore[attr-defined]
    stub.__getattr__ = real_attribute  # type: ignore[method-assign]
    _sys.modules[name] = stub


_without_pydantic_plugins()
