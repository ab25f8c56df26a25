"""People who sign in to the web app: users, passwords, sessions in signed cookies, CSRF.

A user has an account role and, optionally, a county (县级行政区划代码) and/or a township (镇街)
it is limited to (a scope, as an API key's: :mod:`app.auth`):

==========  =====================  ==============================================================
account     Principal role         may also
==========  =====================  ==============================================================
viewer      viewer                 —
officer     viewer (own township)  propose 纠偏 corrections and appeals for its township's land
analyst     analyst                upload and import bundles, evaluate, publish, decide proposals
admin       admin                  manage users and API keys
==========  =====================  ==============================================================

A signed-in user becomes an :class:`app.auth.Principal` with the same role and region semantics
as an API key, so what it sees is decided by the one table (:data:`app.auth.CONFIDENTIALITY`) and
the one region filter (:meth:`app.auth.Principal.region_clause`). The user row is read on every
request: a disabled user is refused on its next request.

Passwords are hashed with argon2id (argon2-cffi); the password itself is never stored nor logged.
The session cookie (``mujun_session``, HttpOnly, SameSite=Lax) is signed with itsdangerous and
holds the user id and a CSRF token; every state-changing request that carries the cookie must
send that token back in the ``X-CSRF-Token`` header (:class:`CsrfGuard`) — a forged cross-site
form cannot read it. Requests authenticated by an API key carry no ambient credential and need no
token.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.auth import Principal, check_scope, key_from_request
from app.models import users
from app.settings import Settings

ACCOUNT_ROLES = ("viewer", "officer", "analyst", "admin")
#: account role → the Principal role it reads data with (app/auth.py).
PRINCIPAL_ROLE = {"viewer": "viewer", "officer": "viewer", "analyst": "analyst", "admin": "admin"}
ROLE_ZH = {"viewer": "查看", "officer": "镇街专管员", "analyst": "分析", "admin": "管理"}
SESSION_COOKIE = "mujun_session"
CSRF_HEADER = "x-csrf-token"
MIN_PASSWORD = 8
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters
_DUMMY_HASH = _hasher.hash("mujun-no-such-user")


# -- users ---------------------------------------------------------------------------------------
def create_user(conn: sa.Connection, username: str, password: str, role: str, township: str | None = None,
                display_name: str | None = None, county: str | None = None) -> int:
    """Store a user with an argon2id hash of ``password``; returns its id.

    Raises ``ValueError`` (Chinese) for an unknown role, a taken or blank user name, a password
    shorter than :data:`MIN_PASSWORD`, an officer without a township, or a scope the database does
    not have (:func:`app.auth.check_scope`: on a province database a township needs its county).
    """
    if role not in ACCOUNT_ROLES:
        raise ValueError(f"角色必须是 viewer（查看）、officer（镇街专管员）、analyst（分析）、admin（管理）之一，而不是 {role!r}")
    if not username or username != username.strip():
        raise ValueError("用户名不能为空，首尾不能有空格")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"密码至少 {MIN_PASSWORD} 个字符")
    if role == "officer" and township is None:
        raise ValueError("镇街专管员必须指定镇街（--township）")
    township, county = check_scope(conn, township, county)
    if conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
        raise ValueError(f"用户名 {username!r} 已存在")
    return conn.execute(users.insert().values(
        username=username, display_name=display_name, password_hash=_hasher.hash(password),
        role=role, township=township, county=county).returning(users.c.id)).scalar_one()


def list_users(conn: sa.Connection) -> list[dict]:
    """Every user (never a hash): id, username, display_name, role, township, county, created, last
    login, disabled."""
    return [dict(r._mapping) for r in conn.execute(sa.select(
        users.c.id, users.c.username, users.c.display_name, users.c.role, users.c.township, users.c.county,
        users.c.created_at, users.c.last_login_at, users.c.disabled_at).order_by(users.c.id))]


def disable_user(conn: sa.Connection, username: str) -> bool:
    """Disable a user: refused from its next request on. False if no such enabled user."""
    return conn.execute(users.update().where(users.c.username == username, users.c.disabled_at.is_(None))
                        .values(disabled_at=sa.func.now())).rowcount == 1


def authenticate(conn: sa.Connection, username: str, password: str) -> int | None:
    """The user id when ``username`` / ``password`` match an enabled user, else ``None``.

    An unknown name costs one hash verification too, so timing does not tell which names exist.
    """
    row = conn.execute(sa.select(users.c.id, users.c.password_hash)
                       .where(users.c.username == username, users.c.disabled_at.is_(None))).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(users.update().where(users.c.id == row.id).values(password_hash=_hasher.hash(password)))
    conn.execute(users.update().where(users.c.id == row.id).values(last_login_at=sa.func.now()))
    return row.id


def user_principal(conn: sa.Connection, user_id: int, *, publish_links: bool = False) -> Principal | None:
    """The Principal of an enabled user (``None`` when unknown or disabled)."""
    row = conn.execute(sa.select(users.c.id, users.c.username, users.c.role, users.c.township, users.c.county)
                       .where(users.c.id == user_id, users.c.disabled_at.is_(None))).first()
    if row is None:
        return None
    return Principal(PRINCIPAL_ROLE[row.role], row.township, None, row.username, publish_links=publish_links,
                     user_id=row.id, account_role=row.role, county=row.county)


# -- sessions ------------------------------------------------------------------------------------
def session_secret(settings: Settings) -> str:
    """``settings.session_secret``, else one made once and kept in ``data_dir/session_secret``
    (mode 0600), so sessions survive a restart and every worker signs alike."""
    if settings.session_secret:
        return settings.session_secret
    path = Path(settings.data_dir) / "session_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def _serializer(request: Request) -> URLSafeTimedSerializer:
    state = request.app.state
    if getattr(state, "session_serializer", None) is None:
        state.session_serializer = URLSafeTimedSerializer(session_secret(state.settings), salt="mujun-session")
    return state.session_serializer


def read_session(request: Request) -> dict | None:
    """The signed session (``{"uid": int | None, "csrf": str}``) of the request, or ``None``."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request).loads(raw, max_age=request.app.state.settings.session_max_age_s)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None


def session_cookie(request: Request, uid: int | None) -> tuple[str, dict]:
    """A fresh session for ``uid`` (None = signed out) with a new CSRF token: (cookie value, data)."""
    data = {"uid": uid, "csrf": secrets.token_urlsafe(24)}
    return _serializer(request).dumps(data), data


def set_session(response, request: Request, value: str) -> None:
    s = request.app.state.settings
    response.set_cookie(SESSION_COOKIE, value, max_age=s.session_max_age_s, httponly=True, samesite="lax",
                        secure=s.cookie_secure, path="/")


def session_principal(request: Request) -> Principal | None:
    """The signed-in user's Principal, or ``None`` (no, bad, expired session, or disabled user)."""
    data = read_session(request)
    if not data or not isinstance(data.get("uid"), int):
        return None
    keys = request.app.state.keys
    with request.app.state.engine.connect() as conn:
        return user_principal(conn, data["uid"], publish_links=keys.publish_links)


# -- CSRF ----------------------------------------------------------------------------------------
class CsrfGuard:
    """ASGI middleware: a state-changing request (POST/PUT/PATCH/DELETE) that carries a session
    cookie and no API key must send the session's CSRF token in ``X-CSRF-Token``; else 403.

    Pure ASGI (not ``BaseHTTPMiddleware``) so streamed bodies pass through untouched.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in _UNSAFE:
            request = Request(scope)
            if SESSION_COOKIE in request.cookies and not key_from_request(request):
                data = read_session(request)
                sent = request.headers.get(CSRF_HEADER, "")
                if not data or not sent or not secrets.compare_digest(sent, data["csrf"]):
                    from app.api.common import json_error

                    await json_error(403, "Forbidden", "CSRF 校验失败：请刷新页面后重试 "
                                     "(missing or wrong X-CSRF-Token for this session)")(scope, receive, send)
                    return
        await self.app(scope, receive, send)
