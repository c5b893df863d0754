"""Starting a command as a user's terminal would: what the Ctrl-C tests of `pdo demo` and `pdo up` need."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """For Popen's preexec_fn: the child takes SIGINT like a terminal's foreground job. A suite started in the
    background (`&` in a non-interactive script) ignores SIGINT, and a child would inherit that and never see
    the Ctrl-C the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
