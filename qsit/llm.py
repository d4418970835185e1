"""One way to call an OpenAI-compatible chat endpoint (the D2 question writer and the LLDescribe judge).

HTTP retries with back-off on 429, 5xx and time-outs are the ``openai``
client's own (``max_retries``). What is left is sorted into two errors: the
endpoint cannot be used at all (unreachable, refused credentials, unknown
model) — callers stop and say so — or this one request failed after the
retries — callers record it and go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class EndpointUnreachable(RuntimeError):
    """The endpoint cannot serve any request; the message names it."""


class RequestFailed(RuntimeError):
    """One request failed after the client's retries."""


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What ``ChatEndpoint.ask`` got: the parsed value, or why no reply would do."""

    value: T | None
    reply: str
    """The last raw reply ("" if no request succeeded)."""
    failure: str | None = None
    """Why the last attempt failed (an HTTP error, or the parser's reason); None on success."""


@dataclass
class ChatEndpoint:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 4
    _client: object = field(init=False, repr=False)

    def __post_init__(self):
        from openai import OpenAI

        self._client = OpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "not-needed",
                              timeout=self.timeout, max_retries=self.max_retries)

    def complete(self, messages: list[dict], temperature: float = 0.0, json_mode: bool = False) -> str:
        import openai

        kwargs = {"response_format": {"type": "json_object"}} if json_mode else {}
        try:
            reply = self._client.chat.completions.create(model=self.model, messages=messages,
                                                         temperature=temperature, **kwargs)
        except openai.APIConnectionError as e:  # time-outs included, after the retries
            raise EndpointUnreachable(f"cannot reach the LLM endpoint {self.base_url}: {e}") from None
        except openai.APIStatusError as e:
            why = f"HTTP {e.status_code} after retries: {' '.join(str(e.message).split())[:160]}"
            if e.status_code in (401, 403, 404):
                raise EndpointUnreachable(f"LLM endpoint {self.base_url} refused the request: {why}") from None
            raise RequestFailed(why) from None
        return reply.choices[0].message.content or ""

    def ask(self, messages: list[dict], parse: Callable[[str], T], attempts: int = 3, temperature: float = 0.0,
            json_mode: bool = False) -> Answer[T]:
        """Ask until ``parse`` accepts the reply (it raises ``ValueError`` saying why not), at most
        ``attempts`` times. A failed request counts as an attempt; an unusable endpoint raises
        ``EndpointUnreachable`` at once."""
        reply, why = "", "no attempt made"
        for _ in range(max(1, attempts)):
            try:
                reply = self.complete(messages, temperature=temperature, json_mode=json_mode)
            except RequestFailed as e:
                why = str(e)
                continue
            try:
                return Answer(parse(reply), reply)
            except ValueError as e:
                why = str(e)
        return Answer(None, reply, why)
