"""The flows a running service answers with, kept fresh without a restart.

Every web process holds its own registry. It looks at the flow folder at most once a
second; when a file changed it reloads the set with the same loader as `ivr flows check`.
A broken edit never reaches callers: the last good version of that flow keeps answering,
and the log and /healthz say so.

Calls stay on the version they started with, even across processes and restarts: each
good version is archived once under `instance/flow-versions/` by content hash, and a call
whose version this process has not seen is answered from that archive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.flow import Flow
from ivr.loader import flow_files, load_set, parse_flow
from ivr.routing import DEFAULT, Regions, load_regions
from ivr.yamldoc import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlowStatus:
    id: str
    version: str
    file: str
    stale: bool  # the file has an edit with errors; this is the last good version


class FlowRegistry:
    def __init__(self, flows_dir: Path, archive_dir: Path, interval: float = 1.0) -> None:
        self.flows_dir = flows_dir
        self.archive_dir = archive_dir
        self.interval = interval
        self.regions: Regions = DEFAULT
        self.problems: list[Problem] = []
        self._current: dict[str, Flow] = {}
        self._stale: set[str] = set()
        self._versions: dict[tuple[str, str], Flow] = {}
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.refresh(force=True)

    # reading --------------------------------------------------------------------------
    def current(self, flow_id: str) -> Flow:
        self.refresh()
        return self._current[flow_id]

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
        self.refresh()
        return [
            FlowStatus(f.id, f.version, os.path.basename(f.source), f.id in self._stale)
            for f in self._current.values()
        ]

    # loading --------------------------------------------------------------------------
    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = list(os.scandir(self.flows_dir))
        except OSError:
            return ()
        return tuple(
            sorted(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in entries
                if e.name.endswith((".yaml", ".yml")) and e.is_file()
            )
        )

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.interval:
            return
        with self._lock:
            self._checked = now
            stamp = self._fingerprint()
            if stamp == self._stamp and not force:
                return
            self._stamp = stamp
            self._reload()

    def _reload(self) -> None:
        regions_file = self.flows_dir / "regions.yaml"
        regions, problems = load_regions(regions_file)
        if any(not p.warning for p in problems):
            log.warning("regions.yaml has errors; still using the last good regions")
        else:
            self.regions = regions
        names = self.regions.names() if regions_file.is_file() else None
        result = load_set(flow_files([self.flows_dir]), regions=names, known=self._current)
        problems += result.problems
        fresh = dict(result.flows)
        stale = set()
        for flow_id, old in self._current.items():
            if flow_id not in fresh and old.source in result.broken:
                fresh[flow_id] = old
                stale.add(flow_id)
                log.warning("flow %s: the edit in %s has errors; still serving version %s",
                            flow_id, os.path.basename(old.source), old.version)
        for problem in problems:
            log.warning("flow problem: %s", problem)
        for flow in result.flows.values():
            self._versions[(flow.id, flow.version)] = flow
            self._archive(flow)
            if self._current.get(flow.id, flow).version != flow.version:
                log.info("flow %s: now serving version %s", flow.id, flow.version)
        self._current, self._stale, self.problems = fresh, stale, problems

    def _archive_path(self, flow_id: str, version: str) -> Path:
        return self.archive_dir / f"{flow_id}@{version}.yaml"

    def _archive(self, flow: Flow) -> None:
        target = self._archive_path(flow.id, flow.version)
        if target.exists():
            return
        try:
            text = Path(flow.source).read_text(encoding="utf-8")
            if hashlib.sha256(text.encode()).hexdigest()[:10] != flow.version:
                return  # edited again since it was read; the next reload archives it
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot archive flow %s@%s: %s", flow.id, flow.version, exc)

    def _from_archive(self, flow_id: str, version: str) -> Flow | None:
        path = self._archive_path(flow_id, version)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return None
        names = self.regions.names() if (self.flows_dir / "regions.yaml").is_file() else None
        parsed = parse_flow(text, str(path), self.flows_dir / "audio", names)
        if parsed.flow is None:
            return None
        with self._lock:
            self._versions[(flow_id, version)] = parsed.flow
        return parsed.flow
