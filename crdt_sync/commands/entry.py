"""The console entry point: click's own usage errors follow the same one-line convention.

Typer prints a bad option or a missing argument as a usage line, a hint and a boxed message
on stderr; scripts and people reading `$?` get one line like every other error here, with
click's exit code 2 (the README's "bad arguments"), and the hint to `--help` in that line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from .basics import ExitCode


def run_cli(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run `app` on `args` (default: sys.argv); return the process's exit code."""
    return _exit_code(lambda: app(args=args, prog_name="crdt-sync", standalone_mode=False))


def run_quick(command: Callable[[], object]) -> int:
    """Run a command typer did not parse (quick_serve.py) as `run_cli` runs one: what typer's
    `main` makes of its exits and interrupts (Ctrl-C: 130), then the same one-line errors."""

    def invoked() -> object:
        try:
            return command()
        except typer.Exit as exc:
            return exc.exit_code
        except KeyboardInterrupt:
            return 130
        except EOFError as exc:
            typer.echo(err=True)
            raise typer.Abort() from exc

    return _exit_code(invoked)


def _exit_code(invoke: Callable[[], object]) -> int:
    try:
        result = invoke()
    except typer.Abort:
        typer.secho("error: interrupted", fg=typer.colors.RED, err=True)
        return int(ExitCode.FAILURE)
    except typer.TyperException as exc:  # click's ClickException: a usage error, mostly
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was shown already, as typer does
            return int(getattr(exc, "exit_code", ExitCode.USAGE))
        typer.secho(f"error: {_one_line(exc)}", fg=typer.colors.RED, err=True)
        return int(getattr(exc, "exit_code", ExitCode.USAGE))
    return result if isinstance(result, int) else int(ExitCode.OK)


def _one_line(exc: typer.TyperException) -> str:
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    message = " ".join(message.split())
    context = getattr(exc, "ctx", None)
    if context is not None and context.command.get_help_option(context) is not None:
        message += f" (see '{context.command_path} {context.help_option_names[0]}')"
    return message


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run crdt-sync, or python -m crdt_sync")
