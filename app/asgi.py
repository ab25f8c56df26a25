"""ASGI entry point for multi-worker uvicorn or gunicorn: ``uvicorn app.asgi:app``."""

from app.main import create_app

app = create_app()
