"""Ending the worker and service processes without the interpreter's teardown.

The Temporal SDK's Rust threads can still call into Python while the interpreter finalizes,
and the process then aborts ("Fatal Python error: PyGILState_Release", SIGABRT;
temporalio/sdk-python#300): a clean stop, or a one-line start-up error with its exit code 2,
looked like a crash to an orchestrator and to the tests that read the code. Everything worth
keeping is flushed first.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fail(message: str) -> NoReturn:
    """A start-up error as one line on standard error, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    exit_now(2)
