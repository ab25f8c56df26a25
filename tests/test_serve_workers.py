"""`mujun serve` runs one HTTP worker per core by default and hands the workers the database URL."""

from __future__ import annotations

import os

import uvicorn
from typer.testing import CliRunner

from app import cli


def test_serve_defaults_to_one_worker_per_core(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(cli, "ready_url", lambda: "postgresql+psycopg://u@127.0.0.1:1/embedded")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.delenv("DATABASE_URL", raising=False)
    r = CliRunner().invoke(cli.cli, ["serve", "--port", "8123"])
    assert r.exit_code == 0, r.output
    (app, kw), = calls
    assert kw["workers"] == 3 and app == "app.asgi:app"
    # the workers build their app from the environment: the embedded cluster's URL is handed over
    assert os.environ["DATABASE_URL"] == "postgresql+psycopg://u@127.0.0.1:1/embedded"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert cli.default_workers() == 8
    calls.clear()
    r = CliRunner().invoke(cli.cli, ["serve", "--workers", "1"])
    assert r.exit_code == 0 and not isinstance(calls[0][0], str)  # one process: the app object itself
