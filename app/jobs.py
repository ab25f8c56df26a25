"""Background jobs with progress: bundle validation, import, matching, evaluation.

One runner for the web app and the CLI: :func:`submit` records a job in ``jobs`` and runs it on a
thread (the web app); :func:`run` runs it in the caller (the CLI's ``mujun import``). Either way
the work is the same function (:data:`KINDS`) — an import is :func:`app.ingest.import_bundle`,
which takes the county's import lock (:func:`app.db.county_lock`): a second import into the same
county waits, its stage saying so, and is refused with a clear message after
``settings.lock_wait_s`` seconds. Progress (stage, rows read, rows rejected) is written to the
job's row at most every :data:`FLUSH_S` seconds, so a page polling ``GET /workflow/jobs/{id}``
sees it after a reload.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from app import db
from app.models import jobs
from app.settings import Settings, get_settings

log = logging.getLogger("mujun.jobs")

FLUSH_S = 0.3
#: Rejected rows kept in a validation job's result (all of them are in the import's report).
MAX_REJECTS_SHOWN = 2000
STAGE_ZH = {"parcels": "读取宗地", "enterprises": "读取企业", "metrics": "读取指标", "buildings": "读取建筑",
            "leases": "读取租赁", "corrections": "读取纠偏", "identity codes": "生成宗地身份码",
            "loading inputs": "载入数据", "validate": "校验", "write": "写入数据库"}
STATUS_ZH = {"queued": "排队中", "running": "进行中", "done": "完成", "failed": "失败", "refused": "被拒绝"}


class Progress:
    """The ``progress(stage, done, total)`` callback of a job: rows read per stage, flushed to its row."""

    def __init__(self, engine: sa.Engine, job_id: int, echo=None):
        self.engine, self.job_id, self.echo = engine, job_id, echo
        self.done: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.stage = ""
        self._flushed = 0.0
        #: What the work returned besides its JSON result (the CLI prints an import's report).
        self.outcome = None

    def __call__(self, stage, done=0, total=0):
        stage = str(stage)
        if done:
            self.done[stage] = int(done)
            self.total[stage] = max(int(total or 0), int(done))
        changed = stage != self.stage
        self.stage = stage
        if self.echo:
            self.echo(stage, done, total)
        if changed or time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self, **extra) -> None:
        self._flushed = time.monotonic()
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == self.job_id).values(
                stage=STAGE_ZH.get(self.stage, self.stage), rows_read=sum(self.done.values()),
                rows_total=sum(self.total.values()), **extra))


# -- the kinds of job ----------------------------------------------------------------------------
def _validate(engine: sa.Engine, params: dict, progress: Progress, settings: Settings) -> dict:
    """Read and validate a bundle without writing it: column mapping, rejected rows, row counts."""
    from spatial.io import read_bundle
    from spatial.validate import validate_bundle

    bundle = read_bundle(Path(params["path"]), crs=params.get("crs"), progress=progress)
    progress("validate")
    bundle = validate_bundle(bundle, overlap_tolerance_m2=settings.overlap_tolerance_m2)
    rejects = bundle.rejects.reset_index(drop=True)
    errors = int((rejects["severity"] == "error").sum()) if len(rejects) else 0
    shown = rejects.head(MAX_REJECTS_SHOWN)
    rows = [{"file": r.file, "row": None if r.row != r.row or r.row is None else int(r.row), "field": r.field,
             "value": None if r.value is None or r.value != r.value else str(r.value)[:200],
             "reason": r.reason, "severity": r.severity} for r in shown.itertuples()]
    counts = {}
    for role in ("parcels", "enterprises", "metrics", "buildings", "leases", "corrections"):
        df = getattr(bundle, role, None)
        if df is not None:
            counts[role] = int(len(df))
    progress.flush(rows_rejected=errors)
    return {"column_map": _jsonable(bundle.column_map), "rejects": rows, "errors": errors,
            "warnings": int(len(rejects) - errors), "valid_rows": counts, "rejects_total": int(len(rejects))}


def _import(engine: sa.Engine, params: dict, progress: Progress, settings: Settings) -> dict:
    """:func:`app.ingest.import_bundle` (under the county's import lock)."""
    from app.ingest import import_bundle

    report = import_bundle(engine, Path(params["path"]), crs=params.get("crs"), progress=progress,
                           settings=settings, year=params.get("year"), partial=params.get("partial"),
                           allow_retire=bool(params.get("allow_retire")), actor=params.get("actor", "cli"))
    progress.flush(rows_rejected=report.errors)
    progress.outcome = report
    return {"batch_id": report.batch_id, "counts": _jsonable(report.counts), "errors": report.errors,
            "warnings": report.warnings, "land": _jsonable(report.land)}


def _match(engine: sa.Engine, params: dict, progress: Progress, settings: Settings) -> dict:
    from app.pipeline import run_matching

    with db.county_lock(engine, "match", wait_s=settings.lock_wait_s, on_wait=lambda m: progress(m)):
        report = run_matching(engine, rule=params.get("rule", "equal"), settings=settings, progress=progress)
    return {"links": int(getattr(report, "links", 0) or 0)}


def _evaluate(engine: sa.Engine, params: dict, progress: Progress, settings: Settings) -> dict:
    from app.evaluation import evaluate_year

    with db.county_lock(engine, "evaluate", wait_s=settings.lock_wait_s, on_wait=lambda m: progress(m)):
        report = evaluate_year(engine, int(params["year"]), params.get("scheme", "zhejiang_default"),
                               progress=progress)
    return {"run_id": int(report.run_id), "year": int(params["year"])}


KINDS = {"validate": _validate, "import": _import, "match": _match, "evaluate": _evaluate}
KIND_ZH = {"validate": "校验", "import": "导入", "match": "匹配", "evaluate": "评价"}


# -- the runner ----------------------------------------------------------------------------------
def create(engine: sa.Engine, kind: str, params: dict, created_by: str) -> int:
    """Record a queued job; returns its id."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    params = {**params, "_pid": os.getpid(), "_host": socket.gethostname()}  # who runs it (see get())
    with engine.begin() as conn:
        return conn.execute(jobs.insert().values(kind=kind, params=params, created_by=created_by, status="queued",
                                                 stage="排队中").returning(jobs.c.id)).scalar_one()


def run(engine: sa.Engine, job_id: int, *, settings: Settings | None = None, echo=None,
        raise_errors: bool = False) -> dict:
    """Run job ``job_id`` here and now; its row ends ``done`` (with ``result``), ``refused``
    (the county is busy, or the bundle was refused as a whole: ``error`` says why, in Chinese) or
    ``failed``. Returns the job row as a dict (``outcome``: e.g. the :class:`ImportReport`). With ``raise_errors`` the exception is re-raised
    after being recorded (the CLI maps it to its exit codes)."""
    from spatial.io import BundleError

    settings = settings or get_settings()
    with engine.begin() as conn:
        row = conn.execute(jobs.update().where(jobs.c.id == job_id).values(
            status="running", started_at=sa.func.now()).returning(jobs.c.kind, jobs.c.params)).one()
    progress = Progress(engine, job_id, echo)
    try:
        result = KINDS[row.kind](engine, dict(row.params), progress, settings)
        _finish(engine, job_id, "done", result=result, stage="完成")
    except db.CountyBusy as exc:
        _finish(engine, job_id, "refused", error=f"{exc}（本次未导入任何数据）", stage="被拒绝")
        if raise_errors:
            raise
    except (BundleError, ValueError) as exc:
        _finish(engine, job_id, "refused" if isinstance(exc, BundleError) else "failed",
                error=str(exc), stage="被拒绝" if isinstance(exc, BundleError) else "失败")
        if raise_errors:
            raise
    except Exception as exc:  # noqa: BLE001 - the job row says it failed; the trace goes to the log only
        log.exception("job %s failed", job_id)
        _finish(engine, job_id, "failed", error=f"内部错误（已记录日志）：{type(exc).__name__}", stage="失败")
        if raise_errors:
            raise
    return get(engine, job_id) | {"outcome": progress.outcome}


def submit(engine: sa.Engine, kind: str, params: dict, created_by: str, *, settings: Settings | None = None) -> int:
    """Record a job and run it on a background thread; returns its id at once."""
    job_id = create(engine, kind, params, created_by)
    threading.Thread(target=run, args=(engine, job_id), kwargs={"settings": settings},
                     name=f"mujun-job-{job_id}", daemon=True).start()
    return job_id


def get(engine: sa.Engine, job_id: int) -> dict | None:
    """A job as the page shows it. A queued or running job whose process (on this host) is gone —
    the server was restarted — is marked failed here, so no page waits for it for ever (its
    import lock went with the process: PostgreSQL drops a dead session's advisory locks)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if row is not None and row.status in ("queued", "running") and _orphaned(row.params):
        _finish(engine, job_id, "failed", stage="失败", error="任务所在的服务进程已退出（服务重启？），任务未完成，请重新提交")
        return get(engine, job_id)
    return _public(row) if row else None


def _orphaned(params: dict) -> bool:
    pid, host = params.get("_pid"), params.get("_host")
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def recent(engine: sa.Engine, limit: int = 20) -> list[dict]:
    with engine.connect() as conn:
        return [_public(r) for r in conn.execute(sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit))]


def _public(row) -> dict:
    d = dict(row._mapping)
    params = dict(d.pop("params") or {})
    d["files"] = params.get("files", [])
    d["upload_id"] = params.get("upload_id")
    d["status_zh"] = STATUS_ZH.get(d["status"], d["status"])
    d["kind_zh"] = KIND_ZH.get(d["kind"], d["kind"])
    for k in ("created_at", "started_at", "finished_at"):
        d[k] = d[k].isoformat() if d[k] else None
    return d


def _finish(engine: sa.Engine, job_id: int, status: str, **values) -> None:
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status=status, finished_at=sa.func.now(),
                                                                      **values))


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=str))
