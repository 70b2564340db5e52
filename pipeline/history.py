"""A session's conversation memory: bounded, with the system prompt always first."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.engines.base import Message


@dataclass
class Entry:
    role: str  # "user" | "assistant"
    text: str
    interrupted: bool = False  # an assistant reply cut short: `text` is what the user heard


@dataclass
class History:
    system_prompt: str
    max_turns: int = 16
    max_chars: int = 6000
    entries: list[Entry] = field(default_factory=list)

    def add_turn(self, user: str, assistant: str, interrupted: bool = False) -> None:
        self.entries.append(Entry("user", user))
        self.entries.append(Entry("assistant", assistant, interrupted))
        self._trim()

    def _trim(self) -> None:
        # Drop whole turns, oldest first, so a user message never loses its reply.
        while len(self.entries) > 2 * self.max_turns or (len(self.entries) > 2 and sum(len(e.text) for e in self.entries) > self.max_chars):
            del self.entries[:2]

    def messages(self, user: str) -> list[Message]:
        """What the LLM is sent for a new user message."""
        out: list[Message] = [{"role": "system", "content": self.system_prompt}]
        for entry in self.entries:
            text = entry.text
            if entry.interrupted:
                # Tell the model it was cut off, and where, so it does not assume it finished.
                text = f"{text}… (interrupted by the user)" if text else "(interrupted by the user before speaking)"
            out.append({"role": entry.role, "content": text})
        out.append({"role": "user", "content": user})
        return out
