"""State: OpenLoop's files and their models, read and written atomically under locks.

Belongs here: the pydantic models of every file (ledger, registry, global and project config,
policy, budget, runs, trust fingerprints), the control plane's layout and init, stack detection
(what init writes), atomic storage, locks, pause flags and environment-error backoff, and the
resolved Project.
Must not: start processes, talk to git, systemd, the journal or an agent (that is
openloop.adapters), or decide anything about an iteration (openloop.loop). Imports only the
top-level primitives (env, errors, progress, resources) and itself.
"""
