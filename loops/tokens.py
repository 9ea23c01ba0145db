"""Streamed LLM text to the event bus, as ``token`` events viewers watch while a run decides."""

from __future__ import annotations

from loops.clock import Clock
from loops.events import EventBus

TOKEN_FLUSH_SECONDS = 0.1  # text streamed within this long goes out as one event


class TokenRelay:
    """Forwards streamed text to the event bus, coalesced to one event per flush interval."""

    def __init__(self, bus: EventBus, run_id: int, thread_id: str, clock: Clock) -> None:
        self.bus, self.run_id, self.thread_id, self.clock = bus, run_id, thread_id, clock
        self.buf: list[str] = []
        self.last = clock.monotonic()

    def __call__(self, text: str) -> None:
        self.buf.append(text)
        if self.clock.monotonic() - self.last >= TOKEN_FLUSH_SECONDS:
            self.flush()

    def reset(self) -> None:
        """Tell viewers to discard the text streamed so far (the model is asked again)."""
        self.buf.clear()
        if self.bus.subscriber_count:
            self.bus.publish(
                "token",
                {"run_id": self.run_id, "thread_id": self.thread_id, "text": "", "reset": True},
                thread_id=self.thread_id,
            )

    def flush(self) -> None:
        if self.buf and self.bus.subscriber_count:
            self.bus.publish(
                "token",
                {"run_id": self.run_id, "thread_id": self.thread_id, "text": "".join(self.buf)},
                thread_id=self.thread_id,
            )
        self.buf.clear()
        self.last = self.clock.monotonic()
