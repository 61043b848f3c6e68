"""The `nudge` command: a click group whose subcommands only wire services."""

from __future__ import annotations

import sqlite3
import sys

import click
import psycopg
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from nudge import __version__
from nudge.cli import (
    campaigns,
    db,
    demo,
    feedback,
    imports,
    insight,
    jobs,
    recommend,
    report,
    send,
)
from nudge.cli.app import App, errors
from nudge.errors import DatabaseError, NudgeError
from nudge.logging import configure
from nudge.settings import load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nudge")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Recommendation e-mails from a shop's own data."""
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    ctx.obj = App(settings)


for command in (
    db.db,
    imports.import_,
    insight.insight,
    insight.segments,
    insight.customer,
    recommend.recommend,
    campaigns.campaigns,
    campaigns.plan,
    campaigns.preview,
    campaigns.approve,
    send.run,
    send.send,
    send.event,
    send.sends,
    send.esp,
    feedback.feedback,
    report.report,
    report.health,
    jobs.worker,
    jobs.beat,
    demo.demo,
):
    cli.add_command(command)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def run(entry: click.Command, argv: list[str] | None = None) -> int:
    """Run the CLI, turning every error a user can cause into one line."""
    try:
        # Without standalone mode click returns a command's exit code
        # (`raise click.exceptions.Exit(1)`) instead of raising it.
        code = entry.main(args=argv, prog_name="nudge", standalone_mode=False)
    except click.exceptions.Abort:
        errors.print("aborted", style="red")
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return int(err.exit_code)
    except NudgeError as err:
        errors.print(
            f"error: {_one_line(err)}", style="red", highlight=False, soft_wrap=True
        )
        return err.exit_code
    except OperationalError as err:
        reason = _one_line(err.orig) if err.orig else _one_line(err)
        errors.print(
            f"error: the store cannot be used: {reason}",
            style="red",
            highlight=False,
            soft_wrap=True,
        )
        return DatabaseError.exit_code
    except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as err:
        errors.print(
            f"error: store error: {_one_line(err)}",
            style="red",
            highlight=False,
            soft_wrap=True,
        )
        return DatabaseError.exit_code
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        message = f"error: cannot use{where}: {err.strerror or err}"
        errors.print(message, style="red", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted", style="red")
        return 130
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the `nudge` console script."""
    sys.exit(run(cli))


if __name__ == "__main__":
    main()
