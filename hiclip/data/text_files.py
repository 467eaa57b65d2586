"""Reading small caption/tree text files: one entry per non-blank line, strict UTF-8 per line."""
from __future__ import annotations

from hiclip.data.text_checks import InputProblem


def caption_lines(data: bytes, name: str) -> list[str]:
    """Non-blank lines of ``data``; a non-UTF-8 line is an ``InputProblem`` naming ``name:line``."""
    if not data.strip():
        raise InputProblem("empty caption", "file has no caption", path=name, line=1)
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise InputProblem("non-UTF-8 caption", f"not valid UTF-8 (byte {error.start})", path=name,
                               line=number) from None
        if text.strip():
            lines.append(text.strip())
    return lines
