"""Timeouts and retries shared by every provider (docs/llm-protocols.md, Timeouts, Retries).

* httpx timeouts: connect 5 s, write 10 s, read = the idle limit (the read timeout also bounds
  the wait for response headers, i.e. a cold model load).
* An inter-chunk idle limit around every line read (``next_line``).
* An overall deadline around the whole call, retries and backoff sleeps included.
* Retry connect errors, 503/429/502/504, 500 once, read timeouts, truncated streams and
  mid-stream errors, with jittered exponential backoff honouring ``Retry-After``. Never retry
  400/401/403/404/422 or ``length``. Retrying is safe because nothing is acted on until the whole
  reply has been read and parsed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import msgspec

from .base import ChatResult, LLMError

__all__ = ["RetryPolicy", "close_lines", "drain_lines", "next_line", "run_with_retries"]

log = logging.getLogger(f"heartbeat.{__name__}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeout and retry settings; one instance per provider."""

    idle_timeout: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_attempts: int = 3
    connect_timeout: float = 5.0
    write_timeout: float = 10.0
    retry_after_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for field in ("idle_timeout", "connect_timeout", "write_timeout"):
            value = getattr(self, field)
            if not value > 0:
                raise ValueError(f"{field} must be greater than 0 seconds, got {value}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError(
                f"backoff must be 0 or more seconds, got base={self.backoff_base} "
                f"max={self.backoff_max}"
            )

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.idle_timeout,
            write=self.write_timeout,
            pool=self.connect_timeout,
        )

    def backoff(
        self, failed_attempts: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds to sleep after ``failed_attempts`` failures (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (failed_attempts - 1))
        jitter = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
        delay = ceiling * jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay

    def may_retry(self, err: LLMError, attempt: int, server_errors_retried: int) -> bool:
        if not err.retryable or attempt >= self.max_attempts:
            return False
        # A plain 500 is often deterministic (bad format, OOM): try it once more, not twice.
        return not (err.status == 500 and server_errors_retried >= 1)


async def run_with_retries(
    call: Callable[[], Awaitable[ChatResult]],
    *,
    policy: RetryPolicy,
    deadline: float | None,
    base_url: str,
    rng: random.Random | None = None,
) -> ChatResult:
    """Run ``call`` until it succeeds, fails for good, or the deadline passes.

    The returned result and any raised ``LLMError`` carry the number of attempts made.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    server_errors_retried = 0
    last: LLMError | None = None
    try:
        async with asyncio.timeout(deadline):
            while True:
                attempts += 1
                try:
                    result = await call()
                except LLMError as err:
                    err.attempts = attempts
                    last = err
                    if not policy.may_retry(err, attempts, server_errors_retried):
                        raise
                    if err.status == 500:
                        server_errors_retried += 1
                    delay = policy.backoff(attempts, err.retry_after, rng)
                    if deadline is not None and loop.time() - started + delay >= deadline:
                        # The next attempt could not start inside the deadline: report the
                        # real cause now instead of sleeping into a timeout.
                        raise
                    log.warning(
                        "LLM attempt %d/%d failed (%s): %s; retrying in %.2f s",
                        attempts,
                        policy.max_attempts,
                        err.reason,
                        err.message,
                        delay,
                    )
                    await asyncio.sleep(delay)
                else:
                    return msgspec.structs.replace(result, attempts=attempts)
    except TimeoutError as exc:
        plural = "attempt" if attempts == 1 else "attempts"
        limit = f"the {deadline:g} s deadline" if deadline is not None else "its deadline"
        message = f"LLM call to {base_url} did not finish within {limit} ({attempts} {plural}"
        message += f"; last error: {last.message})" if last is not None else ")"
        raise LLMError("timeout", message, retryable=False, attempts=attempts) from exc


async def next_line(lines: AsyncIterator[str], *, idle: float, base_url: str) -> str | None:
    """The next line of a streamed body, or None at its end; at most ``idle`` seconds' wait."""
    try:
        async with asyncio.timeout(idle):
            return await anext(lines)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise LLMError(
            "timeout",
            f"no data from the LLM at {base_url} for {idle:g} s (idle limit between chunks)",
            retryable=True,
        ) from None


async def close_lines(lines: AsyncIterator[str]) -> None:
    """Finish a line iterator explicitly so no async generator is left for the GC."""
    aclose = getattr(lines, "aclose", None)
    if aclose is not None:
        await aclose()


async def drain_lines(lines: AsyncIterator[str], *, within: float = 0.25) -> None:
    """Read what follows the final chunk up to the end of the body, briefly, so the connection
    can go back to the pool; give up quietly if the server keeps the body open."""
    try:
        async with asyncio.timeout(within):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
