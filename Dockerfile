# mujun web service. Untested here (no Docker engine on the development machines).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/mujun
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY spatial spatial
COPY scoring scoring
COPY migrations migrations
COPY data data
RUN pip install --no-cache-dir -e .
ENV MUJUN_HOST=0.0.0.0 MUJUN_PORT=8000 MUJUN_DATA_DIR=/var/lib/mujun
EXPOSE 8000
# DATABASE_URL must point to a PostGIS (see docker-compose.yml); migrations run at start-up.
CMD ["mujun", "serve", "--host", "0.0.0.0", "--port", "8000"]
