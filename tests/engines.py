"""A scripted Engine for tests of the code around an engine (prompting, caching, extraction, scoring)."""

from __future__ import annotations

from collections.abc import Sequence

from polyrise.config import SamplingSettings
from polyrise.generation import ChatRequest


class ScriptedEngine:
    """Answers each request with the reply of the first key that occurs in its last user turn ("" otherwise)."""

    fingerprint = "scripted"
    batch_size = 2

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.seen: list[ChatRequest] = []
        self.calls: list[SamplingSettings] = []

    def render(self, request: ChatRequest) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in request.messages) + "|" + request.prefix

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        self.seen.extend(requests)
        self.calls.append(params)
        return [next((v for k, v in self.replies.items() if k in r.messages[-1]["content"]), "") for r in requests]
