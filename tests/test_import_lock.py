"""Two imports into one county at once (issue 12): the second waits for the first with a Chinese
message (or is refused after ``lock_wait_s``), and the database holds one consistent import —
on a real PostGIS, with two real concurrent imports."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from app import db
from app.ingest import import_bundle
from app.settings import Settings
from tests.bundle_factory import write_bundle


def _counts(engine) -> dict:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("parcels", "enterprises", "metrics")}


def test_second_import_waits_for_the_first(engine, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    settings = Settings(data_dir=tmp_path / "var", database_url="postgresql://unused")
    first_inside = threading.Event()
    events: list[tuple[str, float, str]] = []

    def slow_progress(name, done, total):
        # the first import dawdles inside its lock, so the second surely arrives while it runs
        if not first_inside.is_set():
            first_inside.set()
            time.sleep(1.5)

    def waiting_progress(name, done, total):
        events.append(("second", time.monotonic(), name))

    results = {}

    def run(tag, progress):
        results[tag] = import_bundle(engine, bundle, settings=settings, progress=progress)
        events.append((tag + " done", time.monotonic(), ""))

    t1 = threading.Thread(target=run, args=("first", slow_progress))
    t1.start()
    assert first_inside.wait(30)
    t2 = threading.Thread(target=run, args=("second", waiting_progress))
    t2.start()
    t1.join(60)
    t2.join(60)
    assert set(results) == {"first", "second"}
    waits = [e for e in events if e[0] == "second" and "本县已有一个导入任务在进行" in e[2]]
    assert waits, events  # the second was told, in Chinese, that it waits
    first_done = next(t for tag, t, _ in events if tag == "first done")
    # the second did its work only after the first had finished
    assert all(t >= first_done for tag, t, name in events if tag == "second" and "本县" not in name)
    # one consistent import: the same rows as the bundle once, the second changed nothing
    counts = _counts(engine)
    assert counts["parcels"] == 6  # the bundle's six parcels, once
    assert counts["enterprises"] > 0 and counts["metrics"] > 0
    with engine.connect() as conn:
        batches = conn.execute(sa.text("SELECT status FROM import_batches ORDER BY id")).scalars().all()
    assert len(batches) == 2 and all(b in ("loaded", "unchanged", "skipped") for b in batches), batches
    second = results["second"].counts
    assert all(v.get("inserted", 0) == 0 for v in second.values() if isinstance(v, dict)), second


def test_import_is_refused_when_the_county_stays_busy(engine, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    settings = Settings(data_dir=tmp_path / "var", database_url="postgresql://unused", lock_wait_s=0.5)
    with db.county_lock(engine, "import"):  # someone else's import, still running
        t0 = time.monotonic()
        with pytest.raises(db.CountyBusy) as e:
            import_bundle(engine, bundle, settings=settings)
        assert time.monotonic() - t0 < 5
    assert "本县已有一个导入任务在进行" in str(e.value) and "请稍后再试" in str(e.value)
    assert _counts(engine)["parcels"] == 0  # nothing landed
    import_bundle(engine, bundle, settings=settings)  # free again: the import runs
    assert _counts(engine)["parcels"] == 6


def test_cli_import_refused_while_another_runs(engine, db_url, tmp_path):
    """`mujun import` while another import holds the county: told in Chinese, exit 2, nothing lands."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bundle = write_bundle(tmp_path / "bundle")
    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(tmp_path / "var"), "MUJUN_LOCK_WAIT_S": "1",
                        "COLUMNS": "200"}
    with db.county_lock(engine, "import"):
        p = subprocess.run([sys.executable, "-m", "app.cli", "import", str(bundle)], env=env,
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "本县已有一个导入任务在进行" in p.stderr and "未导入任何数据" in p.stderr
    assert _counts(engine)["parcels"] == 0
