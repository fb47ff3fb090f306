"""What the agent must not change outside its own repository, recorded before and compared after.

The agent can write anywhere the user can: the user's refs, checkout, control files, hooks and
git config are one `cd` away. Without a filesystem sandbox that cannot be prevented, so it is
detected: a snapshot is taken before any code the agent wrote runs (the agent itself, then its
checks), and compared when that code has stopped. Any difference ends the attempt as "escaped".
Refs are put back by compare-and-swap where they still hold the agent's value. Files are put back
only where OpenLoop knows the version the user wants, and only while they still hold what the
agent left (compared right before the swap, never written through a link): OpenLoop's own
records, and git's settings files (gitsettings.py: a broken config stops every git command,
the refs' restore included; a changed one or a hook would run the agent's program at the user's
next git command, outside any run; what stood in a setting's place is renamed beside it, never
deleted). The checkout and the control files are the user's work, edited meanwhile or not: they
are only reported. Nothing here raises: a step that cannot be done is reported as such, and the
attempt ends escaped all the same.

What is compared: every ref; HEAD and the git state files that steer the user's next command
(MERGE_HEAD, a rebase or cherry-pick in progress, other worktrees' HEADs); the index; the
checkout as `git status` lists it with no excludes file of the user's and ignored paths named
(so an ignore rule cannot hide a new file), with the content of every file it lists; the control
files and OpenLoop's own records under `.openloop/` (the ledger by task: tasks added meanwhile are
the user's `task add` and allowed, any change to an existing task is not), and earlier runs'
transcripts and logs (runfolders.py); and the files from which git learns to run programs
(config with its includes, hooks, info/, attributes, ignore).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from openloop.adapters import fileprint, gitsettings, safefs
from openloop.adapters.fileprint import (
    ABSENT,
    Look,
    fingerprint,
    look,
    read_text,
    walk,
)
from openloop.adapters.gitrun import Together, checked, git
from openloop.adapters.guarded_files import (
    LEDGER,
    RUN_ARTIFACTS,
    control_files,
    git_settings,
    git_state,
    records_of,
    status_entries,
    tasks_of,
)
from openloop.adapters.workspace import ZERO
from openloop.errors import GitError
from openloop.state.storage import locked, read_regular


@dataclass(frozen=True)
class Snapshot:
    refs: dict[str, str]
    head: str
    status: str
    files: dict[str, str]  # label -> content fingerprint
    tasks: dict[str, str] | None  # task id -> its canonical JSON (None: no ledger)
    records: dict[str, Look]  # OpenLoop's record files (relative path) -> fileprint.look's
    # git's settings files -> fileprint.look's, and the real folder holding them (put back there)
    settings: dict[Path, gitsettings.Setting] = field(default_factory=dict)
    gitdir: Path | None = None

    def differences(self, after: Snapshot) -> list[str]:
        found = ref_differences(self.refs, after.refs)
        if self.head != after.head:
            found.append(f"HEAD {self.head} -> {after.head}")
        if self.status != after.status:
            found.append("the checkout's files or index changed (git status differs)")
        for label in sorted(set(self.files) | set(after.files)):
            old, new = self.files.get(label), after.files.get(label)
            if old != new:
                what = "created" if old is None else "deleted" if new is None else "changed"
                found.append(f"{label} {what}")
        for rel in sorted(set(self.records) | set(after.records)):
            label = f"control file {rel}"  # most records are control files too: named once
            old, new = self.records.get(rel, ABSENT)[0], after.records.get(rel, ABSENT)[0]
            if old != new and label not in self.files and label not in after.files:
                what = "created" if old is None else "deleted" if new is None else "changed"
                found.append(f"{label} {what}")
        found += _task_differences(self.tasks, after.tasks)
        return found


def ref_differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [
        f"ref {ref} {_short(before.get(ref))} -> {_short(after.get(ref))}"
        for ref in sorted(set(before) | set(after))
        if before.get(ref) != after.get(ref)
    ]


def _task_differences(before: dict[str, str] | None, after: dict[str, str] | None) -> list[str]:
    if before == after:
        return []
    if before is None or after is None:
        return [f"{LEDGER} {'created' if before is None else 'deleted or unreadable'}"]
    changed = [tid for tid, text in before.items() if after.get(tid) != text]
    found = [f"task {tid} changed in {LEDGER}" for tid in changed]
    return found + [f"{LEDGER}: {k}" for k in after if k.startswith("(") and k not in before]


def _short(value: str | None) -> str:
    return value[:12] if value else "(none)"


# What a snapshot asks git, all at once (the four run side by side): the git directory and
# HEAD's file (one rev-parse, the same answers as common_dir() and --git-path HEAD apart), the
# checkout's status, the config files git reads, every ref.
_WHERE = ("rev-parse", "--path-format=absolute", "--git-common-dir", "--git-path", "HEAD")
_STATUS = (
    "-c",
    "core.excludesFile=/dev/null",
    "status",
    "--porcelain=v1",
    "-z",
    "--untracked-files=all",
    "--ignored=matching",
)
_CONFIG = ("config", "--list", "--show-origin", "-z")
_REFS = ("for-each-ref", "--format=%(refname) %(objectname)")


def refs(repo: Path) -> dict[str, str]:
    """Every ref and its value. Taken apart from the rest: it works whatever else the agent
    broke (an unreadable index fails `git status`, never `for-each-ref`)."""
    return _parse_refs(git(repo, *_REFS).stdout)


def _parse_refs(listing: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)


def take(repo: Path, env: dict[str, str] | None = None) -> Snapshot:
    environ = env or dict(os.environ)
    fileprint.forget_mounts()
    with Together(repo, _WHERE, _STATUS, _CONFIG, _REFS) as asked:
        # Read while git works. What fails here is raised after git's own errors, as before.
        try:
            looked: dict[Path, tuple[str | None, bytes | None]] = {}
            control = control_files(repo, looked)
            ours, failed = (control, tasks_of(repo / LEDGER), records_of(repo, looked)), None
        except Exception as exc:  # noqa: BLE001 - re-raised below
            ours, failed = None, exc
        where, status_call, config_call, refs_call = asked.results()
    answer = checked(where, _WHERE).stdout.splitlines()
    if len(answer) != 2:
        raise GitError(f"git rev-parse in {repo}: unexpected output {answer!r}")
    gitdir, head_path = Path(answer[0]).resolve(), Path(answer[1])
    entries = status_entries(checked(status_call, _STATUS).stdout)
    if failed is not None:
        raise failed
    assert ours is not None
    control, tasks, records = ours
    files: dict[str, str | None] = {}
    for xy, path, _orig in entries:
        # Dirty or untracked files already listed: their content must not change either.
        # Ignored ones ("!!") count by name only: build output may be huge.
        if xy != "!!":
            files[f"checkout file {path}"] = fingerprint(repo / path)
    status = "\0".join(f"{xy} {path}\0{orig or ''}" for xy, path, orig in entries)
    files.update(control)
    listed = git_settings(repo, gitdir, environ, config_call.stdout)
    settings = {path: (*look(path), os.path.realpath(path.parent)) for path in listed}
    for path, (print_, _content, _folder) in settings.items():
        files[f"git setting {path}"] = print_
    for path in git_state(gitdir):
        files[f"git state {path}"] = fingerprint(path)
    return Snapshot(
        _parse_refs(checked(refs_call, _REFS).stdout),
        read_text(head_path),
        status,
        {k: v for k, v in files.items() if v is not None},
        tasks,
        records,
        settings,
        gitdir,
    )


def restore_records(repo: Path, before: Snapshot) -> list[str]:
    """Put OpenLoop's records back as they were: request and run files rewritten with their
    mode, whatever was put in their place (a link, a folder, a FIFO) removed first, planted ones
    removed, changed tasks of the ledger restored (tasks added meanwhile are kept). Only ever
    inside the repository, never through a link (safefs)."""
    done: list[str] = []
    runs = RUN_ARTIFACTS.rstrip("/")
    if (repo / runs).is_symlink() and f"control file {runs}" not in before.files:
        # Planted in place of the runs' folder (the other record folders, links, are records):
        # the run records are put back in a real folder, never through it.
        if safefs.remove(repo, runs, (repo / runs).is_symlink):
            done.append(f"removed the link at {runs}")
    now = records_of(repo)
    for rel in sorted(set(before.records) | set(now)):
        (old, content), seen = before.records.get(rel, ABSENT), now.get(rel, ABSENT)[0]
        if old == seen:
            continue
        path = repo / rel

        def unchanged(path: Path = path, seen: str | None = seen) -> bool:
            return fingerprint(path) == seen

        try:
            if old is None:
                if safefs.remove(repo, rel, unchanged, folders=True):
                    done.append(f"removed {rel}")
            elif content is not None:
                safefs.put(repo, rel, content, gitsettings.mode(old), unchanged, folders=True)
                done.append(f"restored {rel}")
            else:
                done.append(f"left {rel} as it is now (too big to have been kept)")
        except (OSError, ValueError, safefs.Moved) as exc:
            done.append(f"could not put back {rel} ({exc})")
    if before.tasks is not None and _task_differences(before.tasks, tasks_of(repo / LEDGER)):
        done += _restore_tasks(repo, before.tasks)
    return done


def _restore_tasks(repo: Path, before: dict[str, str]) -> list[str]:
    """The tasks as they were, with the ones added meanwhile (a user's `task add`) kept. A
    ledger that cannot be read any more (a folder, a FIFO, a link, broken JSON) is made again
    from the tasks as they were. Written under the ledger's lock, never through a link."""
    ledger = repo / LEDGER
    with locked(ledger, what="task ledger"):
        try:
            data = json.loads(read_regular(ledger) or b"null")
            tasks = data["tasks"] if isinstance(data, dict) else None
        except (OSError, ValueError, KeyError):
            data, tasks = None, None
        earlier = [json.loads(text) for tid, text in before.items() if not tid.startswith("(")]
        if isinstance(data, dict) and isinstance(tasks, list):
            kept = {str(t.get("id")): t for t in tasks if isinstance(t, dict)}
            kept.update((str(t.get("id")), t) for t in earlier)
            data["tasks"], what = list(kept.values()), f"restored the tasks changed in {LEDGER}"
        else:
            data, what = {"version": 2, "tasks": earlier}, f"made {LEDGER} again from its tasks"
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        safefs.put(repo, LEDGER, text.encode(), 0o644, lambda: True, folders=True)
    return [what]


def restore_refs(repo: Path, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Put back every ref the agent moved, created or deleted, each only if it still holds the
    value seen after the agent (compare-and-swap). Returns what was put back."""
    restored = []
    for ref in sorted(set(before) | set(after)):
        old, new = before.get(ref), after.get(ref)
        if old == new:
            continue
        args = ["update-ref", "-m", "openloop: undo a change the agent made"]
        if old is None:
            args += ["-d", ref, new or ZERO]
        else:
            args += [ref, old, new or ZERO]
        if git(repo, *args, check=False).returncode == 0:
            restored.append(f"{ref} put back to {_short(old)}" if old else f"{ref} deleted")
    return restored


def verify(repo: Path, before: Snapshot, env: dict[str, str] | None = None) -> list[str]:
    """What changed since `before`, with git's settings, refs and records already put back
    (reported as such). A snapshot that cannot be taken any more (the agent broke the index,
    say) is itself an escape."""
    return compare(repo, before, env)[0]


def compare(
    repo: Path, before: Snapshot, env: dict[str, str] | None = None
) -> tuple[list[str], Snapshot | None]:
    """As verify, with the snapshot taken to compare (None if it could not be taken)."""
    # Settings first, before any git command: a config the agent broke fails them all, and
    # one it changed would steer them.
    # Nothing here raises: whatever the agent left (a link where a folder was, a folder where a
    # lock file was), a step that fails is reported as not done, and the run still ends escaped.
    gitdir = before.gitdir
    found = _done("put back git's settings", lambda: _restore_settings(before, gitdir))
    try:
        after = take(repo, env)
    except Exception as exc:  # noqa: BLE001 - whatever broke, it was not so before the agent
        gitsettings.forget_set_aside()
        found.append(f"the repository cannot be read as before ({exc})")
        try:
            now = refs(repo)
        except Exception as why:  # noqa: BLE001 - still an escape, whatever else fails
            found.append(f"OpenLoop could not read the refs to put them back ({why})")
            return found + _put_back_records(repo, before), None
        found += ref_differences(before.refs, now)
        found += _done("put back the refs", lambda: _ours(restore_refs(repo, before.refs, now)))
        return found + _put_back_records(repo, before), None
    gitsettings.forget_set_aside()  # from now on, what was set aside is watched like the rest
    # A setting that could not be put back is named once, by gitsettings.restore.
    found += [d for d in before.differences(after) if not any(f.startswith(d + ";") for f in found)]
    if found:
        found += _done(
            "put back the refs", lambda: _ours(restore_refs(repo, before.refs, after.refs))
        )
        found += _put_back_records(repo, before)
    return found, after


def _restore_settings(before: Snapshot, gitdir: Path | None) -> list[str]:
    folders = [gitdir / "hooks", gitdir / "info"] if gitdir else []
    planted = [p for f in folders for p in walk(f) if not gitsettings.set_aside(p)]
    return gitsettings.restore(before.settings, gitdir, planted, fingerprint)


def _put_back_records(repo: Path, before: Snapshot) -> list[str]:
    return _done("put back its records", lambda: _ours(restore_records(repo, before)))


def _ours(done: list[str]) -> list[str]:
    return [f"OpenLoop {r}" for r in done]


def _done(what: str, step) -> list[str]:
    """`step()`'s report, or that OpenLoop could not do it."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - reported: the run ends escaped all the same
        return [f"OpenLoop could not {what} ({exc})"]


def carried(snapshot: Snapshot, moved: dict[str, str]) -> Snapshot:
    """`snapshot`, proven clean when it was taken, with the refs OpenLoop itself moved since."""
    return replace(snapshot, refs={**snapshot.refs, **moved})


def resumed(snapshot: Snapshot, repo: Path) -> Snapshot:
    """A carried snapshot as the start of the next guarded step, for when only OpenLoop ran
    since it was taken: with the ledger read again (OpenLoop edits it in between), everything
    else as it was then. The interval between the two steps is guarded too, and git is not
    asked again."""
    return replace(snapshot, tasks=tasks_of(repo / LEDGER))
