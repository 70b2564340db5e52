"""Small models sometimes fall into a loop, repeating the same passage until max_tokens.

The turn cuts any LLM's reply where the loop starts (an embedded model, our own model server or
a hosted one alike), so the listener hears the passage once.
"""

from __future__ import annotations


def find_loop(text: str, window: int = 1200, max_period: int = 200) -> int | None:
    """Where to cut `text` if it ends in a loop (the same passage repeated back to back).

    Returns the index just after the first copy of the repeated passage, or None. Only
    the tail is examined; the smallest repeating period wins. The bar rises as the
    period shrinks, since short repeats occur in real speech ("very, very"): a long
    passage repeated twice, a sentence-sized one three times, or a few characters
    repeated over 60 characters.
    """
    tail = text[-window:]
    n = len(tail)
    for period in range(1, min(max_period, n // 2) + 1):
        unit = tail[n - period :]
        copies = 1
        while (copies + 1) * period <= n and tail[n - (copies + 1) * period : n - copies * period] == unit:
            copies += 1
        if copies < 2:
            continue
        if (period >= 40 and copies >= 2) or (period >= 12 and copies >= 3) or (copies >= 5 and copies * period >= 60):
            return len(text) - (copies - 1) * period
    return None
