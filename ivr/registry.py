"""The flows a running service answers with, kept fresh without a restart.

Every web process (every gunicorn worker) holds its own registry. A background thread looks
at the flow folder once a second; when a file changed it reads the whole set with the same
loader as `ivr flows check`, then swaps the result in at once. A request only reads the
snapshot that is current when it starts: no lock, no file read, however long a reload takes
(the loader's limits keep any file, even a hostile one, to well under a second of work).

A broken edit never reaches callers: the last good version of that flow keeps answering,
and the log and /healthz say so. A process that starts while a flow file is broken serves
that flow's newest archived version instead, and says so too; a process always starts,
even with every flow broken (callers then hear the apology and can leave a voicemail).

Calls stay on the version they started with, even across processes and restarts: each
good version is archived once under `instance/flow-versions/` by content hash, and a call
whose version this process has not seen is answered from that archive. A version no call
can still be on (Twilio ends every call within 4 hours) is dropped from memory; it stays in
the archive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ivr.errors import FlowNotServed
from ivr.flow import Field, Flow
from ivr.limits import MAX_FILE_BYTES
from ivr.loader import Parsed, flow_files, load_set, parse_flow
from ivr.routing import DEFAULT, Regions, load_regions
from ivr.yamldoc import Problem, read_file

log = logging.getLogger(__name__)

CALL_LIMIT = 4 * 3600.0  # seconds: Twilio ends any call after 4 hours
FLOW_ID = re.compile(r"^id:[ \t]*[\"']?([A-Za-z][A-Za-z0-9_-]{0,63})[\"']?[ \t]*(?:#.*)?$", re.M)

Stamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class FlowStatus:
    id: str
    version: str
    file: str
    stale: bool  # the file has an edit with errors; this is the last good version
    archived: bool = False  # ...read from the archive: this process started after the edit


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the registry serves, replaced as a whole by each reload (never changed)."""

    flows: Mapping[str, Flow] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)  # flow id -> its file's name
    stale: frozenset[str] = frozenset()
    archived: frozenset[str] = frozenset()
    problems: tuple[Problem, ...] = ()
    regions: Regions = DEFAULT
    stamp: Stamp | None = None


_REGISTRIES: weakref.WeakSet[FlowRegistry] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child has none of its parent's threads: each registry starts its own."""
    for registry in list(_REGISTRIES):
        registry._watcher = None
        registry._reloading = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class FlowRegistry:
    """`interval` seconds between looks at the folder (0: only when `refresh` is called).
    `keep`: flow ids (the entry flow) served from the archive when their file is missing or
    unreadable, rather than not at all."""

    def __init__(self, flows_dir: Path, archive_dir: Path, interval: float = 1.0,
                 keep: Iterable[str] = ()) -> None:
        self.flows_dir = flows_dir
        self.archive_dir = archive_dir
        self.interval = interval
        self.keep = tuple(keep)
        self._snapshot = Snapshot()
        self._versions: dict[tuple[str, str], Flow] = {}
        self._retired: dict[tuple[str, str], float] = {}  # version -> when it left service
        self._reloading = threading.Lock()  # between reloads only; requests never take it
        self._readings: dict[tuple[object, ...], Parsed] = {}  # files unchanged since read
        self._watcher: threading.Thread | None = None
        _REGISTRIES.add(self)
        self.refresh(force=True)
        self._watch()

    # reading: what a request does (no lock, no I/O) -----------------------------------
    @property
    def regions(self) -> Regions:
        return self._snapshot.regions

    @property
    def problems(self) -> list[Problem]:
        return list(self._snapshot.problems)

    @property
    def fields(self) -> dict[str, Field]:
        """The fields the served flows keep on cases (the first flow to declare a name wins),
        with their labels: the console's tags and filters."""
        found: dict[str, Field] = {}
        for flow_id in sorted(self._snapshot.flows):
            for name, declared in self._snapshot.flows[flow_id].fields.items():
                found.setdefault(name, declared)
        return found

    def current(self, flow_id: str) -> Flow:
        if self._watcher is None:
            self._watch()
        try:
            return self._snapshot.flows[flow_id]
        except KeyError:
            raise FlowNotServed(flow_id) from None

    def get(self, flow_id: str, version: str | None) -> Flow:
        """The flow at `version` (a call's own), or the current one when version is None."""
        if version is None:
            return self.current(flow_id)
        found = self._versions.get((flow_id, version))
        if found is None:
            found = self._from_archive(flow_id, version)
        if found is None:
            log.warning("flow %s@%s is not archived; the call goes on with the current version",
                        flow_id, version)
            return self.current(flow_id)
        return found

    def status(self) -> list[FlowStatus]:
        if self._watcher is None:
            self._watch()
        snap = self._snapshot
        return [
            FlowStatus(f.id, f.version, snap.files.get(f.id, os.path.basename(f.source)),
                       f.id in snap.stale, f.id in snap.archived)
            for f in snap.flows.values()
        ]

    # the watcher thread ---------------------------------------------------------------
    def _watch(self) -> None:
        if self.interval <= 0 or self._watcher is not None:
            return
        thread = threading.Thread(target=_watch, args=(weakref.ref(self), self.interval),
                                  name="flow-reloader", daemon=True)
        self._watcher = thread
        thread.start()

    def _fingerprint(self) -> Stamp:
        try:
            entries = list(os.scandir(self.flows_dir))
        except OSError:
            return ()
        out = []
        for e in entries:
            if e.name.endswith((".yaml", ".yml")):
                try:
                    st = e.stat()
                except OSError:
                    continue
                out.append((e.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def refresh(self, force: bool = False) -> None:
        """Reload when a file changed (always when `force`); forget versions no call is on.
        Runs in the watcher thread; tests and tools may call it too."""
        with self._reloading:
            previous = self._snapshot
            stamp = self._fingerprint()
            if stamp != previous.stamp or force:
                try:
                    self._snapshot = self._load(previous, stamp)
                except Exception:  # our bug: keep serving what we have, say why
                    log.exception("reloading the flows failed; still serving the versions "
                                  "loaded before")
                    self._snapshot = replace(previous, stamp=stamp)
            self._forget()

    # loading: in the watcher thread -----------------------------------------------------
    def _load(self, previous: Snapshot, stamp: Stamp) -> Snapshot:
        regions_file = self.flows_dir / "regions.yaml"
        regions, problems = load_regions(regions_file)
        if any(not p.warning for p in problems):
            log.warning("regions.yaml has errors; still using the last good regions")
            regions = previous.regions
        names = regions.names() if regions_file.is_file() else None
        result = load_set(flow_files([self.flows_dir]), regions=names, known=dict(previous.flows),
                          cache=self._readings)
        problems += result.problems
        for problem in problems:
            log.warning("flow problem: %s", problem)
        fresh = dict(result.flows)
        files = {k: os.path.basename(f.source) for k, f in fresh.items()}
        stale: set[str] = set()
        archived: set[str] = set()
        wanted = self._broken_ids(previous, result.broken)
        for flow_id in self.keep:  # its file may be gone, or its `id` unreadable
            name = previous.files.get(flow_id) or f"{flow_id}.yaml"
            wanted.setdefault(flow_id, str(self.flows_dir / name))
        for flow_id, file in wanted.items():
            if flow_id in fresh:
                continue
            old = previous.flows.get(flow_id)
            if old is not None:
                fresh[flow_id], files[flow_id] = old, previous.files.get(flow_id, "")
                if flow_id in previous.archived:
                    archived.add(flow_id)
                log.warning("flow %s: the edit in %s has errors; still serving version %s",
                            flow_id, os.path.basename(file), old.version)
            else:
                old = self._newest_archived(flow_id, names)
                if old is None:
                    log.error("flow %s: %s has errors or is missing, and no good version of it "
                              "is archived: it is not served", flow_id, os.path.basename(file))
                    continue
                fresh[flow_id], files[flow_id] = old, os.path.basename(file)
                archived.add(flow_id)
                log.warning("flow %s: %s has errors or is missing; serving the last good "
                            "version %s from the archive", flow_id, os.path.basename(file),
                            old.version)
            stale.add(flow_id)
        for flow in result.flows.values():
            self._versions[(flow.id, flow.version)] = flow
            self._retired.pop((flow.id, flow.version), None)
            before = previous.flows.get(flow.id)
            self._archive(flow, before is None or before.version != flow.version)
            if before is not None and before.version != flow.version:
                log.info("flow %s: now serving version %s", flow.id, flow.version)
        for flow in fresh.values():
            self._versions.setdefault((flow.id, flow.version), flow)
        now = time.monotonic()
        for flow_id, old in previous.flows.items():
            if fresh.get(flow_id) is not old:
                self._retired.setdefault((flow_id, old.version), now)
        return Snapshot(fresh, files, frozenset(stale), frozenset(archived), tuple(problems),
                        regions, stamp)

    def _broken_ids(self, previous: Snapshot, broken: set[str]) -> dict[str, str]:
        """The flow id of each broken file: as last served, or its `id:` line if readable."""
        by_file = {os.path.basename(f.source): k for k, f in previous.flows.items()}
        by_file |= {name: k for k, name in previous.files.items()}
        out: dict[str, str] = {}
        for file in sorted(broken):
            flow_id = by_file.get(os.path.basename(file))
            if flow_id is None:
                try:
                    with open(file, "rb") as f:
                        head = f.read(65536).decode("utf-8", "replace")
                except OSError:
                    head = ""
                found = FLOW_ID.search(head)
                flow_id = found.group(1) if found else None
            if flow_id is not None:
                out.setdefault(flow_id, file)
        return out

    def _forget(self) -> None:
        """Drop versions no call can still be on; the archive keeps them on disk."""
        serving = {(k, f.version) for k, f in self._snapshot.flows.items()}
        now = time.monotonic()
        for key, since in list(self._retired.items()):
            if key in serving:
                del self._retired[key]
            elif now - since > CALL_LIMIT:
                self._versions.pop(key, None)
                del self._retired[key]

    # the archive ------------------------------------------------------------------------
    def _archive_path(self, flow_id: str, version: str) -> Path:
        return self.archive_dir / f"{flow_id}@{version}.yaml"

    def _archive(self, flow: Flow, newly_served: bool) -> None:
        target = self._archive_path(flow.id, flow.version)
        try:
            if target.exists():
                if newly_served:
                    os.utime(target)  # the newest archived version is the last one served
                return
            text, _ = read_file(Path(flow.source), MAX_FILE_BYTES)
            if text is None or hashlib.sha256(text.encode()).hexdigest()[:10] != flow.version:
                return  # edited again since it was read; the next reload archives it
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot archive flow %s@%s: %s", flow.id, flow.version, exc)

    def _read_archived(self, path: Path, names: set[str] | None) -> Flow | None:
        text, _ = read_file(path, MAX_FILE_BYTES)
        if text is None:
            return None
        parsed = parse_flow(text, str(path), self.flows_dir / "audio", names)
        return parsed.flow

    def _region_names(self) -> set[str] | None:
        return self.regions.names() if (self.flows_dir / "regions.yaml").is_file() else None

    def _from_archive(self, flow_id: str, version: str) -> Flow | None:
        flow = self._read_archived(self._archive_path(flow_id, version), self._region_names())
        if flow is None or flow.id != flow_id:
            return None
        self._versions[(flow_id, version)] = flow
        self._retired.setdefault((flow_id, version), time.monotonic())
        return flow

    def _newest_archived(self, flow_id: str, names: set[str] | None) -> Flow | None:
        try:
            found = sorted(self.archive_dir.glob(f"{flow_id}@*.yaml"),
                           key=lambda p: p.stat().st_mtime_ns, reverse=True)
        except OSError:
            return None
        for path in found:
            flow = self._read_archived(path, names)
            if flow is not None and flow.id == flow_id:
                return flow
        return None


def _watch(ref: weakref.ref[FlowRegistry], interval: float) -> None:
    """The watcher thread: a weak reference, so a registry no one uses is not kept alive."""
    me = threading.current_thread()
    while True:
        time.sleep(interval)
        registry = ref()
        if registry is None or registry._watcher is not me:
            return
        try:
            registry.refresh()
        except Exception:
            log.exception("the flow watcher failed; it tries again in %s s", interval)
        del registry
