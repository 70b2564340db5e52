"""A session's conversation memory: bounded, with the system prompt always first."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.engines.base import Message
from pipeline.tools import Act

# A plain, factual instruction that asks for the answer first suits a small model, and one or two
# short sentences keep the first sentence (what the voice waits for) short (docs/decisions).
DEFAULT_SYSTEM_PROMPT = (
    "You are a knowledgeable and accurate voice assistant. Your words are spoken aloud. "
    "Reply in one or two short, correct sentences that start with the answer, in plain words with no lists or markdown. "
    "Remember what the user told you earlier in the conversation."
)

STT_CONTEXT_CHARS = 300  # about 60 words: Whisper keeps at most 223 prompt tokens anyway


UNASKED_NOTE = "Nobody asked just now: a timer the user set is due, and you said:"


@dataclass
class Entry:
    role: str  # "user" | "assistant" | "system" (a note in place of the user's words)
    text: str
    interrupted: bool = False  # an assistant reply cut short: `text` is what the user heard
    acts: tuple[Act, ...] = ()  # the tools the reply ran before it, with their outcomes
    turn: int | None = None  # the turn number of an assistant reply


@dataclass
class History:
    system_prompt: str
    max_turns: int = 16
    max_chars: int = 6000
    entries: list[Entry] = field(default_factory=list)

    def add_turn(
        self, user: str | None, assistant: str, interrupted: bool = False, acts: tuple[Act, ...] = (), turn: int | None = None
    ) -> None:
        """`user`: what the reply answers; None when nobody asked (a timer is due)."""
        self.entries.append(Entry("user", user) if user is not None else Entry("system", UNASKED_NOTE))
        self.entries.append(Entry("assistant", assistant, interrupted, acts, turn))
        self._trim()

    def cut(self, turn: int, heard: str) -> None:
        """Turn `turn`'s reply was heard only as far as `heard` (the client says what it played)."""
        for entry in self.entries:
            if entry.role == "assistant" and entry.turn == turn and entry.text != heard:
                entry.text, entry.interrupted = heard, True

    def _trim(self) -> None:
        # Drop whole turns, oldest first, so a user message never loses its reply.
        while len(self.entries) > 2 * self.max_turns or (len(self.entries) > 2 and sum(len(e.text) for e in self.entries) > self.max_chars):
            del self.entries[:2]

    def user_context(self, max_chars: int = STT_CONTEXT_CHARS) -> str:
        """The user's earlier words, oldest first, at most `max_chars` (whole utterances): Whisper's
        prompt for the next utterance, so a follow-up is heard in the light of what came before
        ("two" after "three apples", "continent" after "Japan"). A fixed domain prompt made it
        worse, so there is none (docs/decisions/0003)."""
        parts: list[str] = []
        size = 0
        for entry in reversed(self.entries):
            if entry.role != "user" or not entry.text:
                continue
            if size + len(entry.text) + 1 > max_chars:
                break
            parts.append(entry.text)
            size += len(entry.text) + 1
        return " ".join(reversed(parts))

    def messages(self, user: str, instruction: str = "") -> list[Message]:
        """What the LLM is sent for a new user message.

        A reply the user cut off is what they heard of it, ending in a dash, followed by a
        system note that says so and quotes it: the model then neither assumes it finished
        nor loses the thread when asked "what were you telling me about?" (docs/decisions/0005).
        `instruction` is added to the system prompt (the language to answer in).
        """
        system = f"{self.system_prompt} {instruction}" if instruction else self.system_prompt
        out: list[Message] = [{"role": "system", "content": system}]
        for entry in self.entries:
            out.extend(Act.messages(entry.acts))
            if entry.interrupted:
                out.append({"role": "assistant", "content": f"{entry.text} —" if entry.text else "—"})
                out.append({"role": "system", "content": interrupted_note(entry.text)})
            else:
                out.append({"role": entry.role, "content": entry.text})
        out.append({"role": "user", "content": user})
        return out


def interrupted_note(heard: str) -> str:
    if not heard:
        return "The user interrupted you before you said anything."
    return f'The user interrupted your reply; they heard only: "{heard}"'
