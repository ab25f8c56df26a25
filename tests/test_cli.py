"""The ``mujun`` command line as a user runs it: real processes, a real PostGIS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.bundle_factory import write_bundle

REPO = Path(__file__).resolve().parents[1]


def _mujun(db_url: str, *args: str, data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_healthz_with_postgis_version(db_url, tmp_path):
    port = _free_port()
    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                body = r.json()
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert body is not None, "server did not come up"
        assert r.status_code == 200 and body == {"status": "ok", "database": "up", "pool": "ok"}
        # versions and schema only for an admin key (issue 12)
        import sqlalchemy as sa

        from app.auth import create_key

        eng = sa.create_engine(db_url)
        with eng.begin() as conn:
            admin = create_key(conn, "cli-admin", "admin")
        eng.dispose()
        body = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-API-Key": admin}, timeout=5).json()
        assert body["postgis"].startswith("3.")
        assert body["schema_revision"] == body["schema_head"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/map" in out


def test_import_match_evaluate_explain_export(db_url, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    imported = _mujun(db_url, "import", str(bundle), data_dir=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "拒收行 0" in imported.stdout
    matched = _mujun(db_url, "match", data_dir=tmp_path)
    assert matched.returncode == 0, matched.stderr
    assert "地企对应 " in matched.stdout
    evaluated = _mujun(db_url, "evaluate", "--year", "2025", "--publish", data_dir=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "已新建评价批次 1" in evaluated.stdout
    again = _mujun(db_url, "evaluate", "--year", "2025", data_dir=tmp_path)
    assert "输入未变，沿用评价批次 1" in again.stdout
    runs = _mujun(db_url, "runs", data_dir=tmp_path)
    assert "published" in runs.stdout
    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        uscc, grade = conn.execute(sa.text(
            "SELECT uscc, grade FROM enterprise_ratings WHERE grade IS NOT NULL ORDER BY uscc LIMIT 1")).one()
    eng.dispose()
    explained = _mujun(db_url, "explain", uscc, data_dir=tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert f"enterprise {uscc}: {grade}" in explained.stdout
    assert "亩均税收" in explained.stdout
    out = tmp_path / "links.xlsx"
    exported = _mujun(db_url, "export", "links", "--out", str(out), data_dir=tmp_path)
    assert exported.returncode == 0, exported.stderr
    import pandas as pd

    links = pd.read_excel(out)
    assert {"宗地身份码", "宗地代码", "统一社会信用代码", "角色", "匹配方式", "置信度", "面积占比"} <= set(links.columns)
    assert len(links) >= 7


def test_import_missing_column_exits_nonzero_and_says_what(db_url, tmp_path):
    bundle = write_bundle(tmp_path / "bundle", drop_enterprise_column="企业名称")
    result = _mujun(db_url, "import", str(bundle), data_dir=tmp_path)
    assert result.returncode == 2
    said = " ".join((result.stdout + result.stderr).split())
    assert "enterprises.csv" in said and "name" in said and "Nothing was imported" in said


def test_schemes_lists_presets_and_validates(tmp_path):
    env = os.environ | {"COLUMNS": "200"}
    listed = subprocess.run([sys.executable, "-m", "app.cli", "schemes"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    for name in ("zhejiang_default", "zhenhai_4", "huzhou_3", "huangyan_2022", "yongkang", "linshu"):
        assert name in listed.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: '1'\nlists: []\n", encoding="utf-8")
    checked = subprocess.run([sys.executable, "-m", "app.cli", "schemes", str(bad)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert "bad.yaml" in checked.stdout
