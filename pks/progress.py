"""What a `pks` command says while it works: library code logs to its module's logger
(`logging.getLogger(__name__)`) and draws at most one progress bar per long job; the CLI sets the
level once (INFO, or DEBUG with --verbose, WARNING with --quiet). Used as a library (tests,
notebooks) nothing is configured, so INFO lines and bars stay silent unless the caller asks."""

from __future__ import annotations

import logging
import os
import sys

PACKAGES = ("pks", "pipelines", "training", "annotators", "taxonomy")  # the project's top-level loggers
FORCE = "PKS_PROGRESS"  # 1: draw bars even when stderr is not a terminal (a log file, a test); 0: never


class _BarSafeHandler(logging.Handler):
    """Writes each line through tqdm, so a log line does not tear a bar being drawn, to the
    sys.stderr of the moment (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(level: int) -> None:
    """The project's lines at `level` and above to stderr, as bare messages (their text is what
    the commands have always printed). Idempotent: a second call replaces the first's handler."""
    for name in PACKAGES:
        log = logging.getLogger(name)
        for h in [h for h in log.handlers if isinstance(h, _BarSafeHandler)]:
            log.removeHandler(h)
        handler = _BarSafeHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(level)


def bars_shown() -> bool:
    """Bars belong to a person watching: INFO must be on (not --quiet) and stderr a terminal,
    unless PKS_PROGRESS forces them on or off."""
    force = os.environ.get(FORCE, "")
    if force == "0" or not logging.getLogger("pks").isEnabledFor(logging.INFO):
        return False
    return force == "1" or sys.stderr.isatty()


def bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True):
    """A tqdm bar on stderr with rate and ETA; a no-op bar when not shown (or not `enabled`, e.g.
    on a rank other than 0)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not (enabled and bars_shown()),
    )
