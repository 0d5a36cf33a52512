"""`background: true`: accept a response as a queued job, build its run when a worker claims it, and
cancel it. The runner (services/background.py) executes the jobs; this module knows what a job is."""

from __future__ import annotations

from typing import Any

from parley.config import RateLimits
from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder, sse_frame
from parley.engine.timing import Timing
from parley.errors import InvalidRequest, NotFound
from parley.schema.requests import CreateResponseRequest
from parley.services.background import BackgroundRunner
from parley.services.keys import Caller
from parley.services.responses import ResponsesService
from parley.services.usage import Meter, UsageOrigin
from parley.store.base import ConversationTurn, UsageRecord
from parley.store.sql_background import BackgroundJob, SqlBackground

TERMINAL = ("completed", "incomplete", "failed", "cancelled")


class BackgroundResponses:
    def __init__(self, store: SqlBackground, responses: ResponsesService, runner: BackgroundRunner,
                 meter: Meter | None = None) -> None:
        self._store = store
        self._responses = responses
        self.runner = runner
        self._meter = meter
        self._timings: dict[str, Timing] = {}  # of the runs started here, until their usage is recorded

    def start(self) -> None:
        self.runner.start(self._build_run, self._turn, self._usage if self._meter is not None else None)

    async def create(self, project_id: str, req: CreateResponseRequest, caller: Caller | None = None) -> dict[str, Any]:
        """Validate, then record the queued response, its input, its first events and its job in one
        transaction before answering; a worker (in any process) runs it from there. The job keeps the
        caller's key and its limits, which the run's usage is charged to wherever it runs. What only the model
        can refuse (the embedded model's grammar) is asked first: a 400 here, as opening the call is in the
        foreground, with nothing stored."""
        built = await self._responses.build_call(project_id, req, caller)
        await self._responses.check_call(built)
        response = built.response
        response["status"] = "queued"
        first_events = StreamBuilder(response, emit=True, obfuscate=False).start()  # created, queued
        job = {
            # The request as applied (a prompt template filled in), minus what the job already holds.
            "request": built.req.model_dump(mode="json", by_alias=True, exclude_none=True,
                                            exclude={"input", "prompt", "stream", "stream_options"}),
            "stream_options": req.stream_options.model_dump() if req.stream_options else None,
            "response": response,
            "conversation_input": built.conversation_input,
            "caller": {"api_key_id": caller.key_id if caller else None,
                       "limits": caller.limits.model_dump(exclude_none=True) if caller and caller.limits else None},
        }
        await self._store.enqueue_background(
            project_id, response, built.new_items, job,
            [(int(e["sequence_number"]), sse_frame(e)) for e in first_events],
        )
        self.runner.notify()
        return response

    async def _build_run(self, job: BackgroundJob) -> ResponseRun:
        """The claimed job's run: its request rebuilt on the stored input (same item ids), streamed (the
        event log needs every event) into the response snapshot stored when it was accepted."""
        # Always the streaming upstream transport: the log (and any follower) gets events as they come.
        data = {**job.request["request"], "input": job.input_items, "stream": True,
                "stream_options": job.request.get("stream_options")}
        req = CreateResponseRequest.model_validate(data)
        timing = self._timings[job.response_id] = Timing()
        built = await self._responses.build_call(job.project_id, req)
        built.response = dict(job.request["response"])
        return await self._responses.open_run(job.project_id, built, emit=True, timing=timing)

    def _usage(self, job: BackgroundJob, response: dict[str, Any]) -> UsageRecord | None:
        """The run's usage record, charged to the key and project that created it."""
        assert self._meter is not None
        saved = job.request.get("caller") or {}
        limits = saved.get("limits")
        caller = Caller(job.project_id, saved.get("api_key_id"),
                        limits=RateLimits.model_validate(limits) if limits else None)
        origin = UsageOrigin(caller, self._meter.scopes(caller), background=True)
        return self._meter.record(origin, response, self._timings.pop(job.response_id, None))

    def _turn(self, job: BackgroundJob, response: dict[str, Any]) -> ConversationTurn | None:
        """What the run that ended appends to its conversation, written with its final log flush."""
        return self._responses.conversation_turn((response.get("conversation") or {}).get("id"), response,
                                                 job.request.get("conversation_input") or [])

    async def cancel(self, project_id: str, response_id: str) -> dict[str, Any]:
        response = await self._responses.retrieve(project_id, response_id)
        if not response.get("background"):
            raise InvalidRequest("Only responses created with background=true can be cancelled.",
                                 param="response_id")
        if response["status"] in TERMINAL:
            return response  # cancelling a finished run returns it unchanged
        if await self._store.cancel_background(project_id, response_id) is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        await self.runner.cancel_local(response_id)
        return await self._responses.retrieve(project_id, response_id)

    async def check_streamable(self, project_id: str, response_id: str) -> None:
        response = await self._responses.retrieve(project_id, response_id)
        if not response.get("background"):
            raise InvalidRequest(
                "Only background responses can be streamed after they were created; this response was not "
                "created with background=true.", param="stream")
