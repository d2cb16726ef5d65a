"""OGC API – Processes jobs: only asynchronous executions are jobs, and jobs expire.

pygeoapi's TinyDB manager records every execution as a job, the synchronous ones included, and writes a result
file for each: one JSON file rewritten three times per execution under a lock that every worker shares, never
expired. Under load that made each coordinate transformation wait for all the others (p99 of 7-12 s in
bench/load_test.py's mix) and the data folder grow without bound. :class:`CIMJobManager` keeps the TinyDB store
(one file every worker reads: the workers stay stateless) for what needs it, the asynchronous jobs a client comes
back to, and runs synchronous executions without touching it. A job is removed, with its result file and its
access list (cim.api.auth), ``retention_s`` after its last change: finished, or started by a worker that died.

``dismiss_route`` answers ``DELETE /jobs/{id}`` (pygeoapi 0.24's Starlette app fails on its own answer to it:
a 500 after the job was removed). ``ProcessExecutions`` refuses execute requests pygeoapi would choke on (400,
not 500) and removes the ``Location: /jobs/{id}`` pygeoapi sends with every synchronous answer of an
asynchronous-capable manager: no such job exists.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import tinydb
from pygeoapi.process.base import BaseProcessor
from pygeoapi.process.manager.tinydb_ import TinyDBManager
from pygeoapi.util import (
    JobStatus,
    ProcessExecutionMode,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cim.api.middleware import read_body, replay

LOGGER = logging.getLogger(__name__)

ACCESS_DIR = "access"  # cim.api.auth's per-job lists of the restricted collections a job's execution named


def runs_async(execution_mode: RequestedProcessExecutionMode | None, job_control_options: list[str]) -> bool:
    """pygeoapi 0.24's choice (BaseManager.execute_process): asynchronous when asked for and offered, or when
    the process cannot run synchronously."""
    if execution_mode == RequestedProcessExecutionMode.respond_async:
        return ProcessExecutionMode.async_execute.value in job_control_options
    return ProcessExecutionMode.sync_execute.value not in job_control_options


def _age_s(stamp: str | None, now: datetime) -> float | None:
    """Seconds since a job's time stamp (pygeoapi writes ISO 8601 in UTC), None when unreadable."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (now - when).total_seconds()


class CIMJobManager(TinyDBManager):
    """pygeoapi's TinyDB job manager for asynchronous jobs only, with expiry.

    ``manager_def`` (the ``server.manager`` section cim.api.config writes) adds ``retention_s``.
    """

    def __init__(self, manager_def: dict[str, Any]) -> None:
        super().__init__(manager_def)
        self.retention_s = float(manager_def.get("retention_s", 86_400))
        # a sweep reads the whole store: at most every few seconds per worker, and not more often than a
        # quarter of the retention (a short retention, as in the tests, still expires promptly)
        self.sweep_every_s = min(60.0, self.retention_s / 4)
        self._last_sweep = float("-inf")
        self._sweeping = threading.Lock()

    # -- executions ---------------------------------------------------------------------------------------

    def execute_process(self, process_id: str, data_dict: dict, execution_mode=None, requested_outputs=None,
                        subscriber: Subscriber | None = None,
                        requested_response=RequestedResponse.raw.value) -> tuple[str, str, Any, JobStatus, Any]:
        processor = self.get_processor(process_id)
        options = processor.metadata.get("jobControlOptions", [])
        if runs_async(execution_mode, options):
            self.sweep_if_due()
            return super().execute_process(process_id, data_dict, execution_mode, requested_outputs,
                                           subscriber, requested_response)
        headers = None if execution_mode == RequestedProcessExecutionMode.wait else \
            {"Preference-Applied": RequestedProcessExecutionMode.wait.value}
        mime, outputs = self.run_sync(processor, data_dict, requested_outputs, requested_response)
        # pygeoapi still names a job in its Location header (ProcessExecutions removes it)
        return str(uuid.uuid1()), mime, outputs, JobStatus.successful, headers

    def run_sync(self, processor: BaseProcessor, data: dict, requested_outputs: dict | None,
                 requested_response: str) -> tuple[str, Any]:
        """Run one synchronous execution; nothing is stored, and no subscriber is called back (callbacks are
        for asynchronous jobs: the client has its answer in the response).

        Errors are not turned into a "failed job" (pygeoapi's 400 for any exception): a process's own
        ProcessorExecuteError reaches pygeoapi, which answers with its status and OGC exception JSON; a
        database that cannot answer reaches cim.api.limits' 503 handlers; anything else is a bug and a 500.
        """
        extra = {"outputs": requested_outputs} if processor.supports_outputs else {}
        mime, outputs = processor.execute(data, **extra)
        if isinstance(outputs, bytes) and outputs.isascii():
            outputs = outputs.decode("utf-8")
        if requested_response == RequestedResponse.document.value:
            outputs = {"outputs": [outputs]}
        return mime, outputs

    # -- the store: expiry on the way ----------------------------------------------------------------------

    def get_jobs(self, status: JobStatus | None = None, limit=None, offset=None) -> dict:
        self.sweep_if_due()
        return super().get_jobs(status, limit, offset)

    def get_job(self, job_id: str) -> dict:
        self.sweep_if_due()
        return super().get_job(job_id)

    def delete_job(self, job_id: str) -> bool:
        job = self.get_job(job_id)  # JobNotFoundError: pygeoapi's 404
        with self._db() as db:
            removed = bool(db.remove(tinydb.where("identifier") == job_id))
        self._remove_files(job)
        return removed

    def sweep_if_due(self) -> None:
        """Expire old jobs if this worker has not looked for a while (another worker may have)."""
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_every_s or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._last_sweep = now
            self.expire()
        except Exception:  # expiry never fails the request that triggered it
            LOGGER.exception("expiring jobs failed")
        finally:
            self._sweeping.release()

    def expire(self, now: datetime | None = None) -> list[str]:
        """Remove every job last changed more than ``retention_s`` ago, its result and access list, and the
        result files no job names any more (a dismissed job finishing after all, a store edited by hand).
        Returns the removed jobs' ids."""
        now = now or datetime.now(UTC)
        with self._db() as db:
            old = [job for job in db.all()
                   if (age := _age_s(job.get("updated") or job.get("created"), now)) is not None
                   and age > self.retention_s]
            ids = [job["identifier"] for job in old]
            if ids:
                db.remove(tinydb.where("identifier").one_of(ids))
            kept = {job.get("identifier") for job in db.all()}
        for job in old:
            self._remove_files(job)
        self._remove_orphans(kept, now)
        if ids:
            LOGGER.info("expired %d job(s) older than %g s", len(ids), self.retention_s)
        return ids

    def _remove_files(self, job: dict) -> None:
        location = job.get("location")
        if location and self.output_dir is not None:
            Path(location).unlink(missing_ok=True)
        if self.output_dir is not None:
            (self.output_dir / ACCESS_DIR / f"{job['identifier']}.json").unlink(missing_ok=True)

    def _remove_orphans(self, kept: set[str], now: datetime) -> None:
        """Result files (``{process}-{job id}``) and access lists of no stored job, once older than the
        retention (a job being added has its record before its files)."""
        if self.output_dir is None or not self.output_dir.is_dir():
            return
        cutoff = now.timestamp() - self.retention_s
        prefixes = tuple(f"{p}-" for p in self.processes)
        for path in self.output_dir.iterdir():
            if not path.is_file() or not path.name.startswith(prefixes):
                continue
            process = next(p for p in self.processes if path.name.startswith(f"{p}-"))
            job_id = path.name[len(process) + 1:]
            if job_id not in kept and _mtime(path) < cutoff:
                path.unlink(missing_ok=True)
        access = self.output_dir / ACCESS_DIR
        if access.is_dir():
            for path in access.glob("*.json"):
                if path.stem not in kept and _mtime(path) < cutoff:
                    path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<CIMJobManager> {self.name}"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def execute_request_error(body: bytes) -> str | None:
    """What is wrong with an execute request's top level (OGC API – Processes execute.yaml), or None.

    pygeoapi 0.24 reads ``inputs``, ``outputs``, ``response`` and ``subscriber`` without looking: ``null``, a
    list, or ``"subscriber": 1`` made a 500. Empty bodies and bodies that are not JSON it refuses itself."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # pygeoapi's own 400
    if not isinstance(doc, dict):
        return "the execute request must be a JSON object ({\"inputs\": {...}})"
    for name in ("inputs", "outputs"):
        if doc.get(name) is not None and not isinstance(doc[name], dict):
            return f"{name}: an object"
    if "response" in doc and doc["response"] not in ("raw", "document"):
        return "response: 'raw' or 'document'"
    subscriber = doc.get("subscriber")
    if subscriber is not None and not (isinstance(subscriber, dict) and isinstance(subscriber.get("successUri"), str)
                                       and all(isinstance(subscriber.get(k, ""), str)
                                               for k in ("inProgressUri", "failedUri"))):
        return "subscriber: an object with a successUri (and inProgressUri, failedUri) URL"
    return None


class ProcessExecutions:
    """Around pygeoapi's ``POST /processes/{id}/execution``: an execute request of the wrong shape is a 400 (OGC
    exception JSON), and the ``Location`` header of an execution answered synchronously (anything but 201) is
    dropped: pygeoapi names a job there that was never stored (and cim.api.auth would keep an access list
    for it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (scope.get("method") == "POST" and path.startswith("/processes/") and path.rstrip("/").endswith(
                "/execution")):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive) or b""  # bounded by cim.api.limits.BodyLimit, outside
        if (error := execute_request_error(body)) is not None:
            doc = json.dumps({"code": "InvalidParameterValue", "type": "InvalidParameterValue", "description": error})
            await Response(doc, HTTPStatus.BAD_REQUEST, media_type="application/json")(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 201:
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"location"]
            await send(message)

        await self.app(scope, replay(body, receive), send_wrapper)


def dismiss_route(api: Any) -> Route:
    """``DELETE /jobs/{jobId}`` through pygeoapi's own handler, with the content type its answer lacks (its
    Starlette app looks the header up and raises, so a dismissal was a 500)."""
    from pygeoapi.api import APIRequest
    from pygeoapi.api import processes as processes_api

    async def dismiss(request: Request) -> Response:
        api_request = await APIRequest.from_starlette(request, api.locales)
        headers, status, content = await run_in_threadpool(processes_api.delete_job, api, api_request,
                                                           request.path_params["job_id"])
        return Response(content, status, headers={"Content-Type": "application/json", **headers})

    return Route("/jobs/{job_id}", dismiss, methods=["DELETE"])


__all__ = ["CIMJobManager", "ProcessExecutions", "dismiss_route", "execute_request_error", "runs_async"]
