"""The embedded cluster: status, data surviving stop/start, the CLI's `db status`."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

from app.embedded import EmbeddedCluster

REPO = Path(__file__).resolve().parents[1]


def test_data_survives_stop_and_start():
    cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="mujun-emb-")), durable=False)
    try:
        assert not cluster.status().initialised
        url = cluster.ensure_running()
        st = cluster.status()
        assert st.running and st.port and st.pid
        eng = sa.create_engine(url)
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (v text)"))
            conn.execute(sa.text("INSERT INTO kept VALUES ('宗地')"))
        eng.dispose()
        assert cluster.stop() is True
        assert not cluster.status().running
        url2 = cluster.ensure_running()
        eng = sa.create_engine(url2)
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM kept")).scalar_one() == "宗地"
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
        eng.dispose()
    finally:
        cluster.destroy()


def test_cli_db_status_start_stop():
    data = tempfile.mkdtemp(prefix="mujun-cli-")
    os.chmod(data, 0o755)  # the server runs as "postgres" when tests run as root
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"MUJUN_DATA_DIR": data}
    mujun = [sys.executable, "-m", "app.cli"]

    def run(*args):
        return subprocess.run([*mujun, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    try:
        assert "not initialised" in run("db", "status").stdout
        started = run("db", "start")
        assert started.returncode == 0, started.stderr
        status = run("db", "status").stdout
        assert "running" in status and f"{data}/pg" in status and "port" in status
        assert run("db", "url").stdout.startswith("postgresql+psycopg://mujun@127.0.0.1:")
        assert run("db", "stop").returncode == 0
        assert "stopped" in run("db", "status").stdout
    finally:
        EmbeddedCluster(Path(data) / "pg").destroy()


def test_cluster_moves_out_of_a_directory_the_server_user_cannot_reach():
    from app.embedded import cluster_home, server_can_reach

    locked = Path(tempfile.mkdtemp(prefix="mujun-locked-"))  # mode 700, like /root
    open_dir = Path(tempfile.mkdtemp(prefix="mujun-open-"))
    os.chmod(open_dir, 0o755)
    try:
        if os.geteuid() != 0:
            assert cluster_home(locked / "var" / "pg") == locked / "var" / "pg"
            return
        assert not server_can_reach(locked / "var")
        home = cluster_home(locked / "var" / "pg")
        assert home.parent.parent == Path("/var/lib/mujun") and home.name == "pg"
        assert home == cluster_home(locked / "var" / "pg")  # stable: the data is found again
        assert cluster_home(open_dir / "pg") == open_dir / "pg"
    finally:
        os.rmdir(locked)
        os.rmdir(open_dir)
