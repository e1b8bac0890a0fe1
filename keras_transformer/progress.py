"""Progress on stderr: one line redrawn on a terminal, plain lines in a log file."""

import sys
import time


class Progress:
    """`progress(done, total)`: "translated 40/100 sentences (12.3/s)".

    On a terminal the line is redrawn in place and ended when `done ==
    total`; elsewhere (a pipe, a log file) each call prints a line of its
    own, so that `grep` and `tail` read the log.

    Args:
        what: str. The verb, e.g. "translated".
        unit: str. What is counted, e.g. "sentences".
        stream: a text file; default `sys.stderr`.
    """

    def __init__(self, what="translated", unit="sentences", stream=None):
        self.what, self.unit = what, unit
        self.stream = stream or sys.stderr
        self.redraw = is_terminal(self.stream)
        self.began = time.perf_counter()

    def __call__(self, done, total):
        rate = done / max(time.perf_counter() - self.began, 1e-9)
        line = f"{self.what} {done}/{total} {self.unit} ({rate:.1f}/s)"
        if self.redraw:
            self.stream.write(f"\r{line}" + ("\n" if done >= total else ""))
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()


def is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
