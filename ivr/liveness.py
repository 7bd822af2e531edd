"""A worker that died is noticed within two minutes, not at rq's next maintenance.

rq notices a `SimpleWorker` killed mid-job only when the job's registry entry expires (its
timeout + 60 s) and a maintenance round (every 10 minutes) cleans it up: 12.5 minutes were
seen. Our workers (`ivr worker`) are named `ivr-N-HOST.PID` and say they are alive in a key
of their own every PULSE_EVERY seconds (a thread, so a long transcription does not silence
it); the housekeeper re-queues a started job whose worker's key is gone: within ALIVE_TTL +
the housekeeper's minute. Jobs of other workers (rq's own CLI) are left to rq.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

log = logging.getLogger(__name__)

ALIVE, ALIVE_TTL, PULSE_EVERY = "ivr:alive:", 30, 10.0
WORKER_PREFIX = "ivr-"


def worker_tag() -> str:
    """This process, as its workers' names and its alive key say it."""
    return f"{socket.gethostname()}.{os.getpid()}"


class Pulse(threading.Thread):
    """Says every PULSE_EVERY s that this worker process lives (a key with ALIVE_TTL)."""

    def __init__(self, redis_url: str, tag: str) -> None:
        super().__init__(name="pulse", daemon=True)
        self.redis_url, self.tag = redis_url, tag
        self.stopping = threading.Event()

    def beat(self) -> None:
        conn = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            conn.set(ALIVE + self.tag, "1", ex=ALIVE_TTL)
        finally:
            conn.close()

    def run(self) -> None:
        while True:
            with contextlib.suppress(redis.RedisError):
                self.beat()
            if self.stopping.wait(PULSE_EVERY):
                return


def rescue_abandoned(queue: Queue) -> int:
    """Re-queue started jobs whose worker process no longer says it is alive."""
    conn = queue.connection
    registry = queue.started_job_registry
    count = 0
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            conn.zrem(registry.key, f"{job_id}:{execution_id}")
            continue
        name = job.worker_name or ""
        if not name.startswith(WORKER_PREFIX):
            continue  # not one of ours (rq's own CLI worker, say): rq's clean-up handles it
        if conn.exists(ALIVE + name.split("-", 2)[-1]):
            continue
        if not conn.zrem(registry.key, f"{job_id}:{execution_id}"):
            continue  # another housekeeper, or the job's end, got there first
        job.started_at = None
        queue.enqueue_job(job)
        count += 1
    if count:
        log.warning("re-queued %d job(s) whose worker died", count)
    return count
