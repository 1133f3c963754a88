"""What every command shares: the consoles, one-line errors, exit codes and signals.

Exit codes: 0 ok, 1 a failed operation (or a bug), 2 bad input or config, 75 try again
later (a vendor's blackout window), 128 + N when signal N interrupted the command. Nothing here reads text as rich markup: messages carry
data and arguments.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from service.errors import ConfigError, InputError, SyncError
from service.secrets import redact_text

T = TypeVar("T")

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEBUG_ENV = "VENDORSYNC_DEBUG"
# Exit codes follow the shell's 128 + signal number.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# Print options for a line that must stay one line on any terminal or pipe.
ONE_LINE: dict[str, Any] = {"highlight": False, "soft_wrap": True}


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (newlines too) as one space."""
    return " ".join(message.split())


def error_line(message: str, prefix: str = "error:") -> Text:
    """One line, secrets masked, never read as markup (data and arguments end up here)."""
    return Text.assemble((prefix, "red"), " " + one_line(redact_text(message)))


EX_TEMPFAIL = 75  # sysexits.h: a temporary condition; the same command may work later


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(error_line(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def internal_error(exc: BaseException) -> NoReturn:
    """The last line of defence: a bug gets one line, its traceback only on request."""
    if debug_enabled():
        raise exc
    fail(
        f"internal error: {type(exc).__name__}: {exc} "
        f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback)",
        1,
    )


async def _cancel_on_signals(coro: Coroutine[Any, Any, T], received: list[signal.Signals]) -> T:
    """Await ``coro``; SIGINT/SIGTERM/SIGHUP cancel it, so its ``finally`` blocks run (runs
    marked cancelled, leases released). Handlers a command installs itself take precedence
    (the daemon's graceful stop); ours are removed afterwards."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()  # a second signal cancels again: the cleanup is cut short too

    previous = {}
    for sig in SIGNALS:
        before = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        previous[sig] = before
    try:
        return await coro
    finally:
        for sig, before in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, before)


GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect cycles less often, and never scan what start-up loaded.

    A vendor page decodes into thousands of dicts and lists, none of them cyclic (reference
    counting frees them), yet each 700 allocations trigger a collection: at 100 pages/s
    that halved the client's throughput. Freezing moves the modules, settings and schema
    loaded so far out of every later collection.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, mapping every error to one line and an exit code.

    2: bad input or config; 1: a failed operation or a bug; 128 + N: signal N.
    """
    received: list[signal.Signals] = []
    tune_gc()
    try:
        result = asyncio.run(_cancel_on_signals(coro, received))
    except (ConfigError, InputError) as exc:
        fail(str(exc), 2)
    except SyncError as exc:
        fail(str(exc), 1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        sig = received[0] if received else signal.SIGINT
        fail(f"interrupted ({sig.name})", 128 + sig.value)
    except Exception as exc:
        internal_error(exc)
    if received:  # the coroutine swallowed the cancellation: still report the signal
        fail(f"interrupted ({received[0].name})", 128 + received[0].value)
    return result
