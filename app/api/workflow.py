"""The yearly cycle in the browser (issue 15): sign-in, upload, review and publish, 纠偏 proposals,
appeals, saved selections (宗地组/企业组), and the admin page's users and API keys.

Every endpoint reads its caller with :func:`app.auth.principal` — an API key or a signed-in
session (:mod:`app.accounts`), one rule — and limits rows with
:meth:`app.auth.Principal.region_clause`. Work goes through the same code as the CLI: uploads
are validated and imported by :mod:`app.jobs` (:func:`app.ingest.import_bundle` under the county
lock), runs are published by :func:`app.evaluation.publish_run`, accepted proposals become rows of
``link_corrections`` (applied by the next match). Every step is written to ``audit_log`` with who
and when, keyed by the enterprise's USCC and the land's identity code, so the archive pages show it.
"""

from __future__ import annotations

import re
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Path as PathParam, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from app import accounts, db, jobs
from app.api.common import ApiError
from app.auth import ROLES, Principal, create_key, list_keys, principal, revoke_key
from app.models import appeals, correction_proposals, evaluation_runs, link_corrections, saved_groups

router = APIRouter()
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"


def _id():
    """A database id in the path (bigint)."""
    return PathParam(..., ge=1, le=2 ** 63 - 1)

_TEXT = dict(min_length=1, max_length=2000)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


def _engine(request: Request) -> sa.Engine:
    return request.app.state.engine


def _clean(text: str) -> str:
    if "\x00" in text:
        raise ApiError(400, "InvalidParameterValue", "文本中含有 NUL 字符")
    return text.strip()


def _actor(who: Principal) -> str:
    return who.name if who.user_id is not None else f"key:{who.name}"


def _may_propose(who: Principal) -> bool:
    """Township officers propose for their township; analysts and admins for the county."""
    return who.account_role == "officer" or who.at_least("analyst")


def _need_proposer(who: Principal) -> None:
    if not _may_propose(who):
        who.require("analyst")  # 401 without a session or key, else 403 naming the role


# -- pages ---------------------------------------------------------------------------------------
@router.get("/login", include_in_schema=False)
def login_page():
    return _page("login.html")


@router.get("/workflow", include_in_schema=False)
def workflow_page():
    return _page("workflow.html")


@router.get("/admin", include_in_schema=False)
def admin_page():
    return _page("admin.html")


# -- sign-in -------------------------------------------------------------------------------------
class Login(BaseModel):
    username: str = Field(..., min_length=1, max_length=200)
    password: str = Field(..., min_length=1, max_length=1000)


def _session_body(who: Principal | None, csrf: str) -> dict:
    if who is None or who.user_id is None:
        return {"signed_in": False, "csrf_token": csrf}
    return {"signed_in": True, "username": who.name, "account_role": who.account_role,
            "account_role_zh": accounts.ROLE_ZH.get(who.account_role, who.account_role), "role": who.role,
            "township": who.region, "csrf_token": csrf, "may_propose": _may_propose(who)}


@router.get("/auth/session", tags=["accounts"], summary="The signed-in user (if any) and the CSRF token")
def session(request: Request):
    """Who is signed in, and the CSRF token every POST of this session must send as
    ``X-CSRF-Token``. Starts an anonymous session (cookie) when there is none."""
    data = accounts.read_session(request)
    if data is None:
        value, data = accounts.session_cookie(request, None)
        response = JSONResponse(_session_body(None, data["csrf"]))
        accounts.set_session(response, request, value)
        return response
    who = accounts.session_principal(request)
    return _session_body(who, data["csrf"])


@router.post("/auth/login", tags=["accounts"], summary="Sign in with user name and password")
def login(request: Request, body: Login):
    """Needs the session's CSRF token (``GET /auth/session``) in ``X-CSRF-Token``. A wrong name or
    password is one 401 (which of the two is not said); the password is never logged."""
    data = accounts.read_session(request)
    sent = request.headers.get(accounts.CSRF_HEADER)
    if data is None or not sent or sent != data["csrf"]:
        raise ApiError(403, "Forbidden", "CSRF 校验失败：请先打开登录页（GET /auth/session），再提交")
    with _engine(request).begin() as conn:
        uid = accounts.authenticate(conn, body.username, body.password)
        db.audit(conn, body.username[:200], "login" if uid else "login.failed", "users", body.username[:200], {})
    if uid is None:
        raise ApiError(401, "Unauthorized", "用户名或密码错误，或账号已停用")
    value, new = accounts.session_cookie(request, uid)  # a fresh token: no session fixation
    with _engine(request).connect() as conn:
        who = accounts.user_principal(conn, uid, publish_links=request.app.state.keys.publish_links)
    response = JSONResponse(_session_body(who, new["csrf"]))
    accounts.set_session(response, request, value)
    return response


@router.post("/auth/logout", tags=["accounts"], summary="Sign out")
def logout(request: Request):
    value, new = accounts.session_cookie(request, None)
    response = JSONResponse(_session_body(None, new["csrf"]))
    accounts.set_session(response, request, value)
    return response


# -- admin: users and API keys -------------------------------------------------------------------
class NewUser(BaseModel):
    username: str = Field(..., min_length=1, max_length=100)
    password: str = Field(..., min_length=accounts.MIN_PASSWORD, max_length=1000)
    role: Literal["viewer", "officer", "analyst", "admin"]
    township: str | None = Field(None, max_length=200)
    display_name: str | None = Field(None, max_length=200)
    county: str | None = Field(None, max_length=6, description="6-digit 县级行政区划代码 (a province database)")


class NewKey(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)
    role: Literal["public", "viewer", "analyst", "admin"]
    region: str | None = Field(None, max_length=200)
    county: str | None = Field(None, max_length=6, description="6-digit 县级行政区划代码 (a province database)")


def _iso(rows: list[dict]) -> list[dict]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


@router.get("/admin/users", tags=["accounts"], summary="Users (admin)")
def users_list(request: Request, who: Principal = Depends(principal)):
    who.require("admin")
    with _engine(request).connect() as conn:
        return {"users": _iso(accounts.list_users(conn))}


@router.post("/admin/users", tags=["accounts"], summary="Create a user (admin)")
def users_create(request: Request, body: NewUser, who: Principal = Depends(principal)):
    who.require("admin")
    try:
        with _engine(request).begin() as conn:
            uid = accounts.create_user(conn, _clean(body.username), body.password, body.role,
                                       body.township, body.display_name, body.county)
            db.audit(conn, _actor(who), "users.create", "users", body.username,
                     {"role": body.role, "township": body.township, "county": body.county})
    except ValueError as exc:
        raise ApiError(400, "InvalidParameterValue", str(exc)) from None
    return {"id": uid, "username": body.username}


@router.post("/admin/users/{user_id}/disable", tags=["accounts"], summary="Disable a user (admin)")
def users_disable(request: Request, user_id: int = _id(), who: Principal = Depends(principal)):
    who.require("admin")
    from app.models import users

    with _engine(request).begin() as conn:
        name = conn.execute(sa.select(users.c.username).where(users.c.id == user_id)).scalar()
        if name is None or not accounts.disable_user(conn, name):
            raise ApiError(404, "NotFound", f"没有编号为 {user_id} 的有效用户")
        db.audit(conn, _actor(who), "users.disable", "users", name, {})
    return {"id": user_id, "disabled": True}


@router.get("/admin/keys", tags=["accounts"], summary="API keys (admin; never the keys themselves)")
def keys_list(request: Request, who: Principal = Depends(principal)):
    who.require("admin")
    with _engine(request).connect() as conn:
        return {"keys": _iso(list_keys(conn))}


@router.post("/admin/keys", tags=["accounts"], summary="Create an API key (admin; shown once)")
def keys_create(request: Request, body: NewKey, who: Principal = Depends(principal)):
    who.require("admin")
    assert body.role in ROLES
    try:
        with _engine(request).begin() as conn:
            key = create_key(conn, _clean(body.name), body.role, body.region, body.county)
            db.audit(conn, _actor(who), "keys.create", "api_keys", body.name,
                     {"role": body.role, "region": body.region, "county": body.county})
    except ValueError as exc:
        raise ApiError(400, "InvalidParameterValue", str(exc)) from None
    return {"key": key, "name": body.name, "role": body.role, "region": body.region, "county": body.county}


@router.post("/admin/keys/{key_id}/revoke", tags=["accounts"], summary="Revoke an API key (admin; at once)")
def keys_revoke(request: Request, key_id: int = _id(), who: Principal = Depends(principal)):
    who.require("admin")
    with _engine(request).begin() as conn:
        if not revoke_key(conn, key_id):
            raise ApiError(404, "NotFound", f"没有编号为 {key_id} 的有效密钥")
        db.audit(conn, _actor(who), "keys.revoke", "api_keys", str(key_id), {})
    return {"id": key_id, "revoked": True}


# -- uploads and jobs ----------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[^\w.\-\u4e00-\u9fff]+")


def _save_upload(files: list[UploadFile], root: Path, max_bytes: int) -> tuple[Path, list[str]]:
    """Write the uploaded files (a zip is unpacked) into a fresh directory: (bundle dir, names).

    A zip member with an absolute path or ``..`` is refused (it would write outside the
    directory); so is an upload larger than ``max_bytes``.
    """
    target = root / uuid.uuid4().hex
    target.mkdir(parents=True)
    names, total = [], 0
    for f in files:
        name = _SAFE_NAME.sub("_", Path(f.filename or "file").name).strip("._") or "file"
        dest = target / name
        with dest.open("wb") as out:
            while chunk := f.file.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    shutil.rmtree(target, ignore_errors=True)
                    raise ApiError(400, "InvalidParameterValue", f"上传文件超过 {max_bytes >> 20} MB 上限")
                out.write(chunk)
        if zipfile.is_zipfile(dest):
            try:
                _unzip(dest, target, max_bytes, names)
            except zipfile.BadZipFile as exc:
                shutil.rmtree(target, ignore_errors=True)
                raise ApiError(400, "InvalidParameterValue", f"压缩包 {name} 已损坏：{exc}") from None
            except ApiError:
                shutil.rmtree(target, ignore_errors=True)
                raise
        else:
            names.append(name)
    # A zip of the bundle's folder: the bundle is that one folder.
    entries = [p for p in target.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0], names
    return target, names


def _unzip(dest: Path, target: Path, max_bytes: int, names: list[str]) -> None:
    """Unpack ``dest`` into ``target`` and delete it; members' names go to ``names``.

    Raises :class:`ApiError` 400 for a member outside ``target`` (absolute, ``..``) or a zip that
    unpacks past ``max_bytes`` (a zip bomb), and ``zipfile.BadZipFile`` for a damaged zip.
    """
    with zipfile.ZipFile(dest) as z:
        members = z.infolist()
        if sum(m.file_size for m in members) > max_bytes:
            raise ApiError(400, "InvalidParameterValue", f"压缩包解压后超过 {max_bytes >> 20} MB 上限")
        for m in members:
            p = PurePosixPath(m.filename)
            if p.is_absolute() or ".." in p.parts:
                raise ApiError(400, "InvalidParameterValue", f"压缩包中的路径 {m.filename!r} 不安全")
        z.extractall(target)
        names.extend(sorted(m.filename for m in members if not m.is_dir()))
    dest.unlink()


@router.post("/workflow/uploads", tags=["workflow"], summary="Upload a bundle (zip or files); validation starts")
def upload(request: Request, files: list[UploadFile] = File(..., description="the bundle: one zip, or its files"),
           who: Principal = Depends(principal)):
    """Saves the bundle and starts a validation job (``GET /workflow/jobs/{id}`` for its progress,
    column mapping and rejected rows). Nothing is imported until ``POST /workflow/jobs/{id}/confirm``."""
    who.require("analyst")
    s = request.app.state.settings
    path, names = _save_upload(files, Path(s.data_dir) / "uploads", s.upload_max_mb << 20)
    job_id = jobs.submit(_engine(request), "validate", {"path": str(path), "files": names[:200]}, _actor(who),
                         settings=s)
    with _engine(request).begin() as conn:
        db.audit(conn, _actor(who), "upload", "jobs", str(job_id), {"files": names[:50]})
    return jobs.get(_engine(request), job_id)


@router.get("/workflow/jobs", tags=["workflow"], summary="Recent jobs (validation, import, match, evaluation)")
def jobs_list(request: Request, who: Principal = Depends(principal)):
    who.require("analyst")
    return {"jobs": [_slim(j) for j in jobs.recent(_engine(request))]}


def _slim(job: dict) -> dict:
    j = dict(job)
    if isinstance(j.get("result"), dict):
        j["result"] = {k: v for k, v in j["result"].items() if k not in ("rejects", "column_map")}
    return j


@router.get("/workflow/jobs/{job_id}", tags=["workflow"], summary="A job: status, stage, rows read/rejected, report")
def job_get(request: Request, job_id: int = _id(), who: Principal = Depends(principal)):
    who.require("analyst")
    job = jobs.get(_engine(request), job_id)
    if job is None:
        raise ApiError(404, "NotFound", f"没有编号为 {job_id} 的任务")
    return job


class Confirm(BaseModel):
    partial: bool | None = Field(None, description="true: only add and change land (增量); default complete (全量)")
    allow_retire: bool = False
    year: int | None = Field(None, ge=1990, le=2100, description="the land delivery's year (default: manifest)")


@router.post("/workflow/jobs/{job_id}/confirm", tags=["workflow"],
             summary="Confirm a validated upload: import it (a job under the county's import lock)")
def job_confirm(request: Request, body: Confirm | None = None, job_id: int = _id(),
                who: Principal = Depends(principal)):
    """``partial``: only add and change land; ``allow_retire``: confirm a complete delivery that
    retires more than ``MUJUN_RETIRE_MAX_SHARE`` of the land (as ``mujun import`` options)."""
    who.require("analyst")
    body = body or Confirm()
    eng = _engine(request)
    job = jobs.get(eng, job_id)
    if job is None or job["kind"] != "validate":
        raise ApiError(404, "NotFound", f"没有编号为 {job_id} 的校验任务")
    if job["status"] != "done":
        raise ApiError(400, "InvalidParameterValue", f"校验任务 {job_id} 尚未完成（{job['status_zh']}），不能导入")
    with eng.connect() as conn:
        params = conn.execute(sa.text("SELECT params FROM jobs WHERE id = :i"), {"i": job_id}).scalar_one()
    new = jobs.submit(eng, "import", {"path": params["path"], "files": params.get("files", []),
                                      "validated_by_job": job_id, "actor": _actor(who), "partial": body.partial,
                                      "allow_retire": body.allow_retire, "year": body.year},
                      _actor(who), settings=request.app.state.settings)
    return jobs.get(eng, new)


class Evaluate(BaseModel):
    year: int = Field(..., ge=1990, le=2100)
    scheme: str = Field("zhejiang_default", min_length=1, max_length=100, pattern=r"^[a-z0-9_]+$")


@router.post("/workflow/match", tags=["workflow"], summary="Re-match land and enterprises (applies corrections)")
def match(request: Request, who: Principal = Depends(principal)):
    who.require("analyst")
    job_id = jobs.submit(_engine(request), "match", {"rule": "equal"}, _actor(who), settings=request.app.state.settings)
    return jobs.get(_engine(request), job_id)


@router.post("/workflow/evaluate", tags=["workflow"], summary="Evaluate a year: a draft run")
def evaluate(request: Request, body: Evaluate, who: Principal = Depends(principal)):
    who.require("analyst")
    job_id = jobs.submit(_engine(request), "evaluate", {"year": body.year, "scheme": body.scheme}, _actor(who),
                         settings=request.app.state.settings)
    return jobs.get(_engine(request), job_id)


# -- review and publish --------------------------------------------------------------------------
@router.get("/workflow/runs", tags=["workflow"], summary="Evaluation runs (drafts for analysts)")
def runs(request: Request, who: Principal = Depends(principal)):
    shown = ("draft", "published", "superseded") if who.sees_drafts else ("published",)
    with _engine(request).connect() as conn:
        rows = conn.execute(sa.select(evaluation_runs.c.id, evaluation_runs.c.year, evaluation_runs.c.status,
                                      evaluation_runs.c.scheme_name, evaluation_runs.c.created_at,
                                      evaluation_runs.c.published_at)
                            .where(evaluation_runs.c.status.in_(shown))
                            .order_by(evaluation_runs.c.year.desc(), evaluation_runs.c.id.desc())).all()
    return {"runs": _iso([dict(r._mapping) for r in rows])}


_DIFF_ENT = """
    SELECT d.uscc, e.name, e.township, p.grade AS old_grade, d.grade AS new_grade
    FROM enterprise_ratings d
    LEFT JOIN enterprise_ratings p ON p.run_id = :base AND p.uscc = d.uscc
    LEFT JOIN enterprises e ON e.uscc = d.uscc
    WHERE d.run_id = :run AND d.grade IS DISTINCT FROM p.grade AND {region}
    ORDER BY (d.grade = 'D') DESC, d.uscc"""

_DIFF_LAND = """
    SELECT d.identity_code, d.low_yield_years, p.low_yield_years AS old_low_yield_years, d.grade,
           (SELECT township FROM parcels x WHERE x.identity_code = d.identity_code
            ORDER BY x.valid_to DESC NULLS FIRST LIMIT 1) AS township,
           (SELECT county FROM parcels x WHERE x.identity_code = d.identity_code
            ORDER BY x.valid_to DESC NULLS FIRST LIMIT 1) AS county
    FROM parcel_ratings d
    LEFT JOIN parcel_ratings p ON p.run_id = :base AND p.identity_code = d.identity_code
    WHERE d.run_id = :run AND coalesce(d.low_yield_years, 0) > 0 AND coalesce(p.low_yield_years, 0) = 0
    ORDER BY d.identity_code"""


@router.get("/workflow/runs/{run_id}/diff", tags=["workflow"],
            summary="A draft run against the published one: grade changes, new D, new low-yield land")
def run_diff(request: Request, run_id: int = _id(), limit: int = Query(500, ge=1, le=5000),
             who: Principal = Depends(principal)):
    """Compared with the published run of the same year, else of the year before (analysts: drafts
    are reviewed before they are published)."""
    who.require("analyst")
    with _engine(request).connect() as conn:
        run = conn.execute(sa.select(evaluation_runs).where(evaluation_runs.c.id == run_id)).first()
        if run is None:
            raise ApiError(404, "NotFound", f"没有编号为 {run_id} 的评价")
        base = conn.execute(sa.text(
            "SELECT id, year FROM evaluation_runs WHERE status = 'published' AND id <> :run AND year <= :y "
            "ORDER BY year DESC, id DESC LIMIT 1"), {"run": run_id, "y": run.year}).first()
        region, params = who.region_clause("e.township")
        changes = [dict(r._mapping) for r in conn.execute(sa.text(_DIFF_ENT.format(region=region)),
                                                           {"run": run_id, "base": base.id if base else 0, **params})]
        land = [dict(r._mapping) for r in conn.execute(sa.text(_DIFF_LAND), {"run": run_id, "base": base.id if base else 0})]
    land = [r for r in land if who.in_scope(r["township"], r.pop("county"))]
    new_d = [c for c in changes if c["new_grade"] == "D"]
    return {"run_id": run_id, "year": run.year, "status": run.status,
            "base_run_id": base.id if base else None, "base_year": base.year if base else None,
            "grade_changes": len(changes), "new_d": len(new_d), "new_low_yield": len(land),
            "changes": changes[:limit], "new_d_list": new_d[:limit], "new_low_yield_list": land[:limit]}


@router.post("/workflow/runs/{run_id}/publish", tags=["workflow"], summary="Publish a draft run (analyst)")
def run_publish(request: Request, run_id: int = _id(), who: Principal = Depends(principal)):
    who.require("analyst")
    if who.scoped:
        raise ApiError(403, "Forbidden", "发布评价结果需要全县范围的分析角色")
    from app.evaluation import publish_run

    try:
        # the public tiles and features are rendered in the background (served from the tables meanwhile)
        publish_run(_engine(request), run_id, actor=_actor(who), background=True,
                    settings=request.app.state.settings)
    except ValueError as exc:
        raise ApiError(404 if "no run" in str(exc) else 400,
                       "NotFound" if "no run" in str(exc) else "InvalidParameterValue", str(exc)) from None
    return {"run_id": run_id, "status": "published"}


# -- 纠偏 proposals ------------------------------------------------------------------------------
class Proposal(BaseModel):
    uscc: str = Field(..., min_length=1, max_length=64)
    parcel_code: str = Field(..., min_length=1, max_length=128, description="宗地代码 or 宗地身份码")
    action: Literal["add", "remove"] = Field(..., description="add: the enterprise is on this land; remove: it is not")
    share: float | None = Field(None, gt=0, le=1)
    reason: str = Field(..., **_TEXT)


class Decision(BaseModel):
    accept: bool
    answer: str | None = Field(None, max_length=2000)


def _land_township(conn: sa.Connection, code: str) -> tuple[str, str | None, str | None] | None:
    """The land's (identity code, township, county), or ``None``."""
    row = conn.execute(sa.text(
        "SELECT identity_code, township, county FROM parcels WHERE parcel_code = :c OR identity_code = :c "
        "ORDER BY (identity_code = :c) DESC, valid_to DESC NULLS FIRST LIMIT 1"), {"c": code}).first()
    return (row.identity_code, row.township, row.county) if row else None


def _audit_both(conn, who, action, ids: list[str], details: dict) -> None:
    for i in dict.fromkeys(x for x in ids if x):
        db.audit(conn, _actor(who), action, "workflow", i, details)


@router.get("/workflow/corrections", tags=["workflow"], summary="纠偏 proposals (own township for officers)")
def corrections_list(request: Request, who: Principal = Depends(principal)):
    _need_proposer(who)
    region, params = who.region_clause("township")
    with _engine(request).connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM correction_proposals WHERE {region} ORDER BY id DESC LIMIT 500"),
                            params).all()
    return {"proposals": _iso([dict(r._mapping) | {"attachments": attachments_of(request, "corrections", r.id)}
                               for r in rows])}


@router.post("/workflow/corrections", tags=["workflow"],
             summary="Propose a 纠偏 correction (township officer: own township only)")
def corrections_create(request: Request, body: Proposal, who: Principal = Depends(principal)):
    _need_proposer(who)
    uscc, code, reason = _clean(body.uscc), _clean(body.parcel_code), _clean(body.reason)
    with _engine(request).begin() as conn:
        land = _land_township(conn, code)
        if land is None or not who.in_scope(land[1], land[2]):
            raise ApiError(404, "NotFound", f"本{'镇街' if who.region else '县'}没有宗地 {code}")
        if not conn.execute(sa.text("SELECT 1 FROM enterprises WHERE uscc = :u"), {"u": uscc}).first():
            raise ApiError(404, "NotFound", f"没有统一社会信用代码为 {uscc} 的企业")
        pid = conn.execute(correction_proposals.insert().values(
            uscc=uscc, parcel_code=code, township=land[1], county=land[2], action=body.action, share=body.share, reason=reason,
            proposed_by=_actor(who)).returning(correction_proposals.c.id)).scalar_one()
        _audit_both(conn, who, "correction.proposed", [uscc, land[0]],
                    {"proposal": pid, "uscc": uscc, "parcel_code": code, "action": body.action, "share": body.share,
                     "reason": reason})
    return {"id": pid, "status": "proposed"}


def _decided_row(conn: sa.Connection, who: Principal, table: str, row_id: int, missing: str):
    """The proposal or appeal ``row_id`` of the caller's township, locked while it is decided;
    404 with ``missing`` when there is none (or it is another township's)."""
    region, params = who.region_clause("township")
    row = conn.execute(sa.text(f"SELECT * FROM {table} WHERE id = :i AND {region} FOR UPDATE"),
                       {"i": row_id, **params}).first()
    if row is None:
        raise ApiError(404, "NotFound", missing)
    return row


@router.post("/workflow/corrections/{proposal_id}/decide", tags=["workflow"],
             summary="Accept or reject a 纠偏 proposal (analyst); accepted ones apply on the next match")
def corrections_decide(request: Request, body: Decision, proposal_id: int = _id(), who: Principal = Depends(principal)):
    who.require("analyst")
    with _engine(request).begin() as conn:
        p = _decided_row(conn, who, "correction_proposals", proposal_id, f"没有编号为 {proposal_id} 的纠偏申请")
        if p.status != "proposed":
            raise ApiError(400, "InvalidParameterValue", f"纠偏申请 {proposal_id} 已处理（{p.status}）")
        status = "accepted" if body.accept else "rejected"
        conn.execute(correction_proposals.update().where(correction_proposals.c.id == proposal_id).values(
            status=status, answer=body.answer, decided_by=_actor(who), decided_at=sa.func.now()))
        if body.accept:  # one correction per (uscc, land): the newest decision wins
            conn.execute(sa.text(
                "INSERT INTO link_corrections (uscc, parcel_code, action, share, reason, \"by\") "
                "VALUES (:u, :c, :a, :s, :r, :b) ON CONFLICT (uscc, parcel_code) DO UPDATE SET "
                "action = EXCLUDED.action, share = EXCLUDED.share, reason = EXCLUDED.reason, \"by\" = EXCLUDED.\"by\", "
                "created_at = now()"),
                {"u": p.uscc, "c": p.parcel_code, "a": p.action, "s": p.share, "r": p.reason,
                 "b": f"{p.proposed_by} / {_actor(who)}"})
            db.bump_data_version(conn)
        land = _land_township(conn, p.parcel_code)
        _audit_both(conn, who, f"correction.{status}", [p.uscc, land[0] if land else None],
                    {"proposal": proposal_id, "answer": body.answer})
    return {"id": proposal_id, "status": status}


# -- appeals -------------------------------------------------------------------------------------
class NewAppeal(BaseModel):
    run_id: int = Field(..., ge=1, le=2 ** 63 - 1)
    uscc: str = Field(..., min_length=1, max_length=64)
    reason: str = Field(..., **_TEXT)


class AppealState(BaseModel):
    status: Literal["under_review", "accepted", "rejected"]
    answer: str | None = Field(None, max_length=2000)


#: submitted → under review → accepted | rejected (申诉 states).
_NEXT = {"submitted": {"under_review"}, "under_review": {"accepted", "rejected"}}
APPEAL_ZH = {"submitted": "已提交", "under_review": "审核中", "accepted": "已采纳", "rejected": "未采纳"}


@router.get("/workflow/appeals", tags=["workflow"], summary="Appeals against draft grades")
def appeals_list(request: Request, who: Principal = Depends(principal)):
    _need_proposer(who)
    region, params = who.region_clause("township")
    with _engine(request).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.text(f"SELECT * FROM appeals WHERE {region} ORDER BY id DESC LIMIT 500"), params)]
    for r in rows:
        r["status_zh"] = APPEAL_ZH[r["status"]]
        r["attachments"] = attachments_of(request, "appeals", r["id"])
        if not who.sees_drafts:
            r.pop("grade", None)
    return {"appeals": _iso(rows)}


@router.post("/workflow/appeals", tags=["workflow"], summary="Record an enterprise's appeal against a draft grade")
def appeals_create(request: Request, body: NewAppeal, who: Principal = Depends(principal)):
    _need_proposer(who)
    uscc, reason = _clean(body.uscc), _clean(body.reason)
    with _engine(request).begin() as conn:
        row = conn.execute(sa.text(
            "SELECT r.grade, e.township, e.county, run.status FROM enterprise_ratings r JOIN evaluation_runs run ON run.id = r.run_id "
            "LEFT JOIN enterprises e ON e.uscc = r.uscc WHERE r.run_id = :run AND r.uscc = :u"),
            {"run": body.run_id, "u": uscc}).first()
        if row is None or not who.in_scope(row.township, row.county):
            raise ApiError(404, "NotFound", f"评价 {body.run_id} 中没有本{'镇街' if who.region else '县'}的企业 {uscc}")
        if row.status != "draft":
            raise ApiError(400, "InvalidParameterValue", f"评价 {body.run_id} 不是待发布的草稿（{row.status}），不能申诉")
        aid = conn.execute(appeals.insert().values(run_id=body.run_id, uscc=uscc, township=row.township,
                                                   county=row.county,
                                                   grade=row.grade, reason=reason, submitted_by=_actor(who))
                           .returning(appeals.c.id)).scalar_one()
        _audit_both(conn, who, "appeal.submitted", [uscc], {"appeal": aid, "run_id": body.run_id, "reason": reason})
    return {"id": aid, "status": "submitted", "status_zh": APPEAL_ZH["submitted"]}


@router.post("/workflow/appeals/{appeal_id}/state", tags=["workflow"],
             summary="Move an appeal on: under review, then accepted or rejected with an answer (analyst)")
def appeals_state(request: Request, body: AppealState, appeal_id: int = _id(), who: Principal = Depends(principal)):
    who.require("analyst")
    with _engine(request).begin() as conn:
        a = _decided_row(conn, who, "appeals", appeal_id, f"没有编号为 {appeal_id} 的申诉")
        if body.status not in _NEXT.get(a.status, set()):
            raise ApiError(400, "InvalidParameterValue",
                           f"申诉 {appeal_id} 处于“{APPEAL_ZH[a.status]}”，不能改为“{APPEAL_ZH[body.status]}”")
        if body.status in ("accepted", "rejected") and not (body.answer or "").strip():
            raise ApiError(400, "InvalidParameterValue", "采纳或不采纳申诉时须填写答复")
        conn.execute(appeals.update().where(appeals.c.id == appeal_id).values(
            status=body.status, answer=body.answer if body.answer is not None else a.answer, updated_at=sa.func.now()))
        _audit_both(conn, who, f"appeal.{body.status}", [a.uscc], {"appeal": appeal_id, "answer": body.answer})
    return {"id": appeal_id, "status": body.status, "status_zh": APPEAL_ZH[body.status]}


# -- attachments (of 纠偏 proposals and appeals) -------------------------------------------------
_ATTACHABLE = {"corrections": "correction_proposals", "appeals": "appeals"}
MAX_ATTACHMENT_MB = 20


def _attachment_dir(request: Request, kind: str, item_id: int) -> Path:
    return Path(request.app.state.settings.data_dir) / "attachments" / kind / str(item_id)


def _visible_item(request: Request, kind: str, item_id: int, who: Principal):
    """The proposal or appeal if the caller may see it (its township), else 404."""
    _need_proposer(who)
    region, params = who.region_clause("township")
    with _engine(request).connect() as conn:
        row = conn.execute(sa.text(f"SELECT id, uscc FROM {_ATTACHABLE[kind]} WHERE id = :i AND {region}"),
                           {"i": item_id, **params}).first()
    if row is None:
        raise ApiError(404, "NotFound", f"没有编号为 {item_id} 的{'纠偏申请' if kind == 'corrections' else '申诉'}")
    return row


def attachments_of(request: Request, kind: str, item_id: int) -> list[str]:
    d = _attachment_dir(request, kind, item_id)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@router.post("/workflow/{kind}/{item_id}/attachments", tags=["workflow"],
             summary="Attach a file (photo, contract, certificate) to a 纠偏 proposal or an appeal")
def attachment_add(request: Request, kind: Literal["corrections", "appeals"], item_id: int = _id(),
                   file: UploadFile = File(..., description="at most 20 MB"), who: Principal = Depends(principal)):
    row = _visible_item(request, kind, item_id, who)
    name = _SAFE_NAME.sub("_", Path(file.filename or "file").name).strip("._") or "file"
    d = _attachment_dir(request, kind, item_id)
    d.mkdir(parents=True, exist_ok=True)
    data = file.file.read((MAX_ATTACHMENT_MB << 20) + 1)
    if len(data) > MAX_ATTACHMENT_MB << 20:
        raise ApiError(400, "InvalidParameterValue", f"附件超过 {MAX_ATTACHMENT_MB} MB 上限")
    (d / name).write_bytes(data)
    with _engine(request).begin() as conn:
        _audit_both(conn, who, f"{'correction' if kind == 'corrections' else 'appeal'}.attachment", [row.uscc],
                    {"id": item_id, "file": name, "bytes": len(data)})
    return {"id": item_id, "attachments": attachments_of(request, kind, item_id)}


@router.get("/workflow/{kind}/{item_id}/attachments/{name}", tags=["workflow"],
            summary="Download an attachment of a 纠偏 proposal or an appeal",
            responses={200: {"content": {"application/octet-stream": {}}}})
def attachment_get(request: Request, kind: Literal["corrections", "appeals"], name: str = PathParam(..., max_length=255),
                   item_id: int = _id(), who: Principal = Depends(principal)):
    _visible_item(request, kind, item_id, who)
    if name not in attachments_of(request, kind, item_id):
        raise ApiError(404, "NotFound", f"没有附件 {name}")
    return FileResponse(_attachment_dir(request, kind, item_id) / name, media_type="application/octet-stream",
                        filename=name)


# -- saved selections ----------------------------------------------------------------------------
class GroupFilter(BaseModel):
    township: str | None = Field(None, max_length=200)
    grade: Literal["A", "B", "C", "D"] | None = None
    year: int | None = Field(None, ge=1990, le=2100)


class NewGroup(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)
    kind: Literal["parcels", "enterprises"]
    members: list[str] | None = Field(None, max_length=100000, description="宗地身份码 or USCC")
    filter: GroupFilter | None = None
    shared: bool = False


def _published_run(conn, year: int | None):
    q = "SELECT id, year FROM evaluation_runs WHERE status = 'published'"
    q += " AND year = :y" if year else ""
    return conn.execute(sa.text(q + " ORDER BY year DESC, id DESC LIMIT 1"), {"y": year}).first()


def _members_from_filter(conn, kind: str, f: GroupFilter, who: Principal) -> list[str]:
    run = _published_run(conn, f.year)
    if kind == "parcels":
        region, params = who.region_clause("p.township")
        sql = (f"SELECT DISTINCT p.identity_code FROM parcels p "
               f"{'JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run' if f.grade else ''} "
               f"WHERE p.valid_to IS NULL AND {region}"
               + (" AND p.township = :t" if f.township else "") + (" AND r.grade = :g" if f.grade else ""))
    else:
        region, params = who.region_clause("e.township")
        sql = (f"SELECT DISTINCT e.uscc FROM enterprises e "
               f"{'JOIN enterprise_ratings r ON r.uscc = e.uscc AND r.run_id = :run' if f.grade else ''} "
               f"WHERE {region}" + (" AND e.township = :t" if f.township else "") + (" AND r.grade = :g" if f.grade else ""))
    return [c for (c,) in conn.execute(sa.text(sql + " ORDER BY 1 LIMIT 100000"),
                                       {**params, "t": f.township, "g": f.grade, "run": run.id if run else 0})]


def _scoped_members(conn, kind: str, codes: list[str], who: Principal) -> list[str]:
    """The codes that exist and that the caller may see (own township for a scoped caller)."""
    if kind == "parcels":
        region, params = who.region_clause("township")
        sql = f"SELECT DISTINCT identity_code FROM parcels WHERE identity_code = ANY(:c) AND {region}"
    else:
        region, params = who.region_clause("township")
        sql = f"SELECT uscc FROM enterprises WHERE uscc = ANY(:c) AND {region}"
    return sorted(c for (c,) in conn.execute(sa.text(sql), {"c": codes, **params}))


def _group_years(conn, kind: str, members: list[str], who: Principal) -> list[dict]:
    """The group over the years (指标对比): per published run, grade counts and, for roles that see
    figures, the members' tax (万元) and 亩均税收 (万元/亩, tax over the rated land)."""
    if kind == "parcels":
        sql = """SELECT run.year, run.id AS run_id, r.grade, count(*) AS n, sum(m.tax_paid) AS tax,
                        sum(p.area_mu) AS mu
                 FROM evaluation_runs run JOIN parcel_ratings r ON r.run_id = run.id
                 LEFT JOIN parcel_metrics m ON m.identity_code = r.identity_code AND m.year = run.year
                 LEFT JOIN LATERAL (SELECT area_mu FROM parcels x WHERE x.identity_code = r.identity_code
                                    ORDER BY x.valid_to DESC NULLS FIRST LIMIT 1) p ON TRUE
                 WHERE run.status = 'published' AND r.identity_code = ANY(:m)
                 GROUP BY run.year, run.id, r.grade ORDER BY run.year, r.grade"""
    else:
        sql = """SELECT run.year, run.id AS run_id, r.grade, count(*) AS n, sum(m.tax_paid) AS tax,
                        sum(r.land_area_mu) AS mu
                 FROM evaluation_runs run JOIN enterprise_ratings r ON r.run_id = run.id
                 LEFT JOIN metrics m ON m.uscc = r.uscc AND m.year = run.year
                 WHERE run.status = 'published' AND r.uscc = ANY(:m)
                 GROUP BY run.year, run.id, r.grade ORDER BY run.year, r.grade"""
    years: dict[int, dict] = {}
    for row in conn.execute(sa.text(sql), {"m": members}):
        y = years.setdefault(row.year, {"year": row.year, "run_id": row.run_id, "grades": {}, "_tax": 0.0, "_mu": 0.0})
        y["grades"][row.grade or "未评"] = int(row.n)
        y["_tax"] += float(row.tax or 0.0)
        y["_mu"] += float(row.mu or 0.0)
    out = []
    for y in years.values():
        tax, mu = y.pop("_tax"), y.pop("_mu")
        if who.sees("total_tax_wan"):
            y["total_tax_wan"] = round(tax, 2)
            y["tax_per_mu"] = round(tax / mu, 2) if mu else None
        out.append(y)
    return out


@router.post("/workflow/groups", tags=["workflow"], summary="Save a 宗地组 / 企业组 (from codes or a filter)")
def groups_create(request: Request, body: NewGroup, who: Principal = Depends(principal)):
    who.require("viewer")
    with _engine(request).begin() as conn:
        if body.members:
            members = _scoped_members(conn, body.kind, [_clean(c) for c in body.members], who)
        elif body.filter is not None:
            members = _members_from_filter(conn, body.kind, body.filter, who)
        else:
            raise ApiError(400, "InvalidParameterValue", "请给出成员（members）或筛选条件（filter）")
        if not members:
            raise ApiError(400, "InvalidParameterValue", "没有符合条件（且在您范围内）的成员")
        gid = conn.execute(saved_groups.insert().values(
            name=_clean(body.name), kind=body.kind, members=members, township=who.region, county=who.county,
            shared=body.shared,
            created_by=_actor(who)).returning(saved_groups.c.id)).scalar_one()
        db.audit(conn, _actor(who), "group.create", "saved_groups", str(gid), {"name": body.name, "members": len(members)})
    return {"id": gid, "name": body.name, "kind": body.kind, "members": len(members)}


def _visible_groups(who: Principal) -> tuple[str, dict]:
    """Own groups, and shared ones made in the caller's scope or by a county-wide creator of its
    county (a province-wide creator's: everyone's)."""
    region, params = who.region_clause("township", "g_region")
    county = "county IS NULL" + (" OR county = :g_county" if who.county is not None else "")
    return (f"(created_by = :me OR (shared AND ({region} OR (township IS NULL AND ({county})))))",
            {"me": _actor(who), "g_county": who.county, **params})


@router.get("/workflow/groups", tags=["workflow"], summary="Saved groups: own and shared with the county")
def groups_list(request: Request, who: Principal = Depends(principal)):
    who.require("viewer")
    where, params = _visible_groups(who)
    with _engine(request).connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, name, kind, cardinality(members) AS size, township, shared, "
                                    f"created_by, created_at FROM saved_groups WHERE {where} ORDER BY id DESC"),
                            params).all()
    return {"groups": _iso([dict(r._mapping) for r in rows])}


@router.get("/workflow/groups/{group_id}", tags=["workflow"],
            summary="A group's totals: count, land area (亩), tax (万元, analysts), grade shares")
def group_get(request: Request, group_id: int = _id(), year: int | None = Query(None, ge=1990, le=2100),
              who: Principal = Depends(principal)):
    """Totals over the members the caller may see, for ``year``'s published run (default the newest)."""
    who.require("viewer")
    where, params = _visible_groups(who)
    with _engine(request).connect() as conn:
        g = conn.execute(sa.text(f"SELECT * FROM saved_groups WHERE id = :i AND {where}"), {"i": group_id, **params}).first()
        if g is None:
            raise ApiError(404, "NotFound", f"没有编号为 {group_id} 的分组")
        members = _scoped_members(conn, g.kind, list(g.members), who)
        run = _published_run(conn, year)
        rid = run.id if run else 0
        ryear = run.year if run else year
        if g.kind == "parcels":
            t = conn.execute(sa.text(
                "SELECT count(DISTINCT p.identity_code) AS n, sum(p.area_mu) AS area_mu FROM parcels p "
                "WHERE p.identity_code = ANY(:m) AND p.valid_to IS NULL"), {"m": members}).one()
            tax = conn.execute(sa.text("SELECT sum(tax_paid) FROM parcel_metrics WHERE identity_code = ANY(:m) "
                                       "AND year = :y"), {"m": members, "y": ryear}).scalar()
            grades = conn.execute(sa.text("SELECT grade, count(*) FROM parcel_ratings WHERE run_id = :r AND "
                                          "identity_code = ANY(:m) GROUP BY grade"), {"r": rid, "m": members}).all()
        else:
            t = conn.execute(sa.text(
                "SELECT count(*) AS n, sum(l.land_area_mu) AS area_mu FROM enterprises e LEFT JOIN enterprise_land l "
                "ON l.uscc = e.uscc AND l.year = (SELECT max(year) FROM enterprise_land x WHERE x.uscc = e.uscc "
                "AND x.year <= coalesce(:y, x.year)) WHERE e.uscc = ANY(:m)"), {"m": members, "y": ryear}).one()
            tax = conn.execute(sa.text("SELECT sum(tax_paid) FROM metrics WHERE uscc = ANY(:m) AND year = :y"),
                               {"m": members, "y": ryear}).scalar()
            grades = conn.execute(sa.text("SELECT grade, count(*) FROM enterprise_ratings WHERE run_id = :r AND "
                                          "uscc = ANY(:m) GROUP BY grade"), {"r": rid, "m": members}).all()
        by_year = _group_years(conn, g.kind, members, who)
    rated = sum(c for _g, c in grades)
    shares = {(gr or "未评"): {"count": c, "share": round(c / rated, 4) if rated else 0.0} for gr, c in sorted(
        grades, key=lambda x: x[0] or "Z")}
    body = {"id": g.id, "name": g.name, "kind": g.kind, "shared": g.shared, "created_by": g.created_by,
            "year": ryear, "run_id": run.id if run else None, "count": int(t.n or 0),
            "area_mu": round(float(t.area_mu or 0.0), 2), "grades": shares, "members": members[:1000]}
    body["by_year"] = by_year
    if who.sees("total_tax_wan"):  # tax is a confidential figure (app/auth.py CONFIDENTIALITY: total_tax_wan)
        body["total_tax_wan"] = round(float(tax or 0.0), 2)
    return body
