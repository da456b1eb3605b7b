"""Where log lines go: one write per turn of the event loop, not one per line.

A busy proxy writes a line for every call, and writing and flushing each line on
its own costs a system call per call. While the event loop runs, lines collect in
a buffer that is written and flushed once, at the end of the current turn of the
loop (``loop.call_soon``), so that the lines of one turn share one write. Outside a
running loop (start-up, the command line's one-shot commands) a line is written at
once. Every line, whichever logger made it, passes through the same buffer, so the
order of lines is the order they were logged.

A process killed outright loses at most the lines of the turn in progress; the
buffer is flushed at shutdown and at interpreter exit.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

# A turn that logs more than this (a burst of errors, say) writes as it goes.
MAX_PENDING_LINES = 256


class LineSink:
    """Lines for one stream, written together at the end of each loop turn."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._flush_scheduled = False

    def write(self, line: str) -> None:
        """Queue ``line`` (without its newline) for the end of this turn."""
        self._pending.append(line)
        if self._flush_scheduled:
            if len(self._pending) >= MAX_PENDING_LINES:
                self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write and flush every queued line now."""
        self._flush_scheduled = False
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        self.stream.write(text)
        self.stream.flush()


class SinkLogger:
    """A structlog logger that hands each rendered line to a ``LineSink``."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        """Queue one rendered line; structlog calls this by the level's name."""
        self._sink.write(message)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg
