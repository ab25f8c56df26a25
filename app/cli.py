"""The ``mujun`` command line.

Every command that needs the database starts the embedded cluster on demand (unless
``DATABASE_URL`` is set) and migrates it to the current schema.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from app import db
from app.settings import get_settings

cli = typer.Typer(help="mujun 亩均论英雄: land–enterprise matching, dual ratings, GIS layers.",
                  no_args_is_help=True, add_completion=False)
db_cli = typer.Typer(help="The database (embedded PostgreSQL + PostGIS unless DATABASE_URL is set).",
                     no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def ready_url() -> str:
    """The database URL, with the cluster running and the schema at head."""
    from app.embedded import EmbeddedError

    try:
        url = db.database_url()
        db.ensure_schema(url)
    except EmbeddedError as exc:
        fail(str(exc))
    return url


# -- mujun db ------------------------------------------------------------------------------------
@db_cli.command("start")
def db_start() -> None:
    """Start the embedded cluster (initialising it the first time) and migrate it."""
    s = get_settings()
    if not s.embedded:
        fail("DATABASE_URL is set: mujun does not manage that database")
    ready_url()
    print(db.embedded_cluster(s).status().describe())


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster (its data stays)."""
    s = get_settings()
    if not s.embedded:
        fail("DATABASE_URL is set: mujun does not manage that database")
    stopped = db.embedded_cluster(s).stop()
    console.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@db_cli.command("status")
def db_status() -> None:
    """Whether the database runs, where, and on which port."""
    s = get_settings()
    if not s.embedded:
        print(f"external database: {s.database_url.split('@')[-1]}")
        return
    print(db.embedded_cluster(s).status().describe())


@db_cli.command("url")
def db_url() -> None:
    """Print the database URL (starting the embedded cluster if needed)."""
    print(db.database_url())


@db_cli.command("psql")
def db_psql() -> None:
    """Open psql on the database."""
    url = db.database_url().replace("postgresql+psycopg://", "postgresql://")
    os.execvp("psql", ["psql", url])


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Run the Alembic migrations up to REVISION."""
    db.upgrade(db.database_url(), revision)


@db_cli.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="e.g. base, or a revision id")) -> None:
    """Run the Alembic migrations down to REVISION."""
    db.downgrade(db.database_url(), revision)


# -- mujun serve ---------------------------------------------------------------------------------
@cli.command()
def serve(host: str = typer.Option(None, help="default MUJUN_HOST or 127.0.0.1"),
          port: int = typer.Option(None, help="default MUJUN_PORT or 8000"),
          workers: int = typer.Option(1, help="uvicorn worker processes")) -> None:
    """Run the web service (OGC API Features, tiles, archives, map) with uvicorn."""
    import uvicorn

    s = get_settings()
    host = host or s.host
    port = port or s.port
    url = ready_url()
    os.environ.setdefault("DATABASE_URL", url) if workers > 1 else None
    _print_endpoints(host, port)
    if workers > 1:
        uvicorn.run("app.asgi:app", host=host, port=port, workers=workers, log_level="info")
    else:
        from app.main import create_app

        uvicorn.run(create_app(database_url=url), host=host, port=port, log_level="info")


def _print_endpoints(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    console.print(f"[bold]mujun[/] serving on {base}")
    console.print(f"  health        {base}/healthz")
    console.print(f"  API docs      {base}/docs")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
