"""User-facing errors: one line that names the file (and line) at fault.

The CLI prints ``error: <message>`` and exits with status 2 for these; anything else is a bug.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class HiCLIPError(Exception):
    """A problem with the user's input or configuration, reported as one line."""


def located(path: object, line: int | None, message: str) -> HiCLIPError:
    """Build an error that names ``path`` and, when known, the 1-based ``line``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return HiCLIPError(f"{where}: {message}")


@dataclass
class SkipReport:
    """Counts inputs skipped under ``--on-error skip`` / ``--on-mismatch skip``.

    ``policy`` is ``"raise"`` (the default: the first problem is an error) or ``"skip"``.
    """

    policy: str = "raise"
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def __post_init__(self) -> None:
        if self.policy not in ("raise", "skip"):
            raise HiCLIPError(f"unknown error policy {self.policy!r}: use 'raise' or 'skip'")

    def handle(self, error: HiCLIPError, reason: str) -> None:
        """Raise ``error`` under the raise policy; otherwise count it under ``reason``."""
        if self.policy == "raise":
            raise error
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """One line for the end of a run, e.g. ``skipped 3 (corrupt image: 2, empty caption: 1)``."""
        if not self.total:
            return "skipped 0"
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        return f"skipped {self.total} ({parts})"
