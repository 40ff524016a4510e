"""The typed events of a job, as written to its Redis Stream and sent over Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class QueuedEvent(BaseModel):
    """The job was accepted and queued."""

    type: Literal["queued"] = "queued"
    model: str


class StartedEvent(BaseModel):
    """A worker started the job."""

    type: Literal["started"] = "started"
    worker_id: str
    total: int


class StepEvent(BaseModel):
    """Denoising progress; coalesced to at most a configured rate, the last step always sent."""

    type: Literal["step"] = "step"
    step: int
    total: int
    step_seconds: float = Field(description="Duration of this step.")
    elapsed_seconds: float = Field(description="Since the job started.")
    eta_seconds: float = Field(description="Predicted seconds until the last step, from this job's step times.")


class PreviewEvent(BaseModel):
    """A small image computed from the latents (no VAE decode), every `preview_every` steps."""

    type: Literal["preview"] = "preview"
    step: int
    content_type: str
    width: int
    height: int
    data: str = Field(description="The image bytes, base64.")


class SucceededEvent(BaseModel):
    """The job finished with images."""

    type: Literal["succeeded"] = "succeeded"
    images: list[str]
    content_filtered: list[bool] = Field(default_factory=list)


class FailedEvent(BaseModel):
    """The job failed."""

    type: Literal["failed"] = "failed"
    code: str
    message: str


class CanceledEvent(BaseModel):
    """The job was canceled (while queued, or at a step boundary while running)."""

    type: Literal["canceled"] = "canceled"
    step: int | None = None


class ExpiredEvent(BaseModel):
    """The job waited in the queue past its queue TTL and will never run."""

    type: Literal["expired"] = "expired"


class RequeuedEvent(BaseModel):
    """The worker running the job was lost; the job is back at the front of its queue."""

    type: Literal["requeued"] = "requeued"
    attempt: int
    reason: str


AnyEvent = (
    QueuedEvent
    | StartedEvent
    | StepEvent
    | PreviewEvent
    | SucceededEvent
    | FailedEvent
    | CanceledEvent
    | ExpiredEvent
    | RequeuedEvent
)
JobEvent = Annotated[AnyEvent, Field(discriminator="type")]
job_event_adapter: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)

TERMINAL_EVENT_TYPES = frozenset({"succeeded", "failed", "canceled", "expired"})
