"""The console's composition root and its pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import approvals, charts, db, projection, users, views
from services.console.backend import Answer, Backend
from services.console.i18n import DEFAULT, LANGUAGES, Formats, translator
from services.console.settings import ConsoleSettings
from services.console.users import Session, User
from shared.auth import Role
from shared.contracts.groups import LPJ_RETURN_REASONS
from shared.contracts.mentoring import PRODUCTION_UNITS

log = logging.getLogger("tkm.console")
HERE = Path(__file__).parent
SESSION_COOKIE = "tkm_console_session"
LOGIN_CSRF_COOKIE = "tkm_console_login_csrf"
LANG_COOKIE = "tkm_console_lang"
ROLES_OF_QUEUES = (Role.ADMIN, Role.PROVINCE)
FUNDING_DEFAULT = 20_000_000  # the 2023 guideline's assistance per group (DOMAIN)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'; object-src 'none'")

templates = Jinja2Templates(directory=str(HERE / "templates"))


class LoginRequiredError(Exception):
    pass


class ForbiddenPageError(Exception):
    pass


class NotFoundPageError(Exception):
    pass


def today() -> date:
    return datetime.now(UTC).date()


def create_app(settings: ConsoleSettings, *, kafka_client: dict[str, Any] | None = None,
               follow_topics: bool = True) -> FastAPI:
    """`kafka_client`: aiokafka security kwargs of the console's principal (default:
    `CONSOLE_KAFKA_*`, else `KAFKA_*`, through shared.kafka_security)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await db.connect(settings.database_url)
        app.state.backend = Backend(settings.service_urls,
                                    settings.auth_signing_key.get_secret_value(),
                                    settings.service_token_minutes)
        app.state.reader = projection.ReaderState()
        task = None
        if follow_topics:
            client = kafka_client
            if client is None:
                from shared.kafka_security import kafka_security
                client = kafka_security(service="console").consumer_kwargs()
            task = asyncio.create_task(projection.follow(
                app.state.pool, settings.kafka_bootstrap_servers, settings.group_id, client,
                app.state.reader))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.backend.close()
            await app.state.pool.close()

    app = FastAPI(title="TKS/TKM programme console", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_handlers(app)
    _install_headers(app)
    _routes(app, settings)
    return app


# ---------------------------------------------------------------- request helpers

def lang_of(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


async def current_session(request: Request) -> Session | None:
    if not hasattr(request.state, "session"):
        request.state.session = await users.find_session(request.app.state.pool,
                                                         request.cookies.get(SESSION_COOKIE))
    return request.state.session


async def signed_in(request: Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise LoginRequiredError()
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def allow(session: Session, *roles: Role) -> User:
    if session.user.role not in roles:
        raise ForbiddenPageError()
    return session.user


def check_province(user: User, province_code: str | None) -> None:
    """A provincial officer sees its own province only; everyone else every province."""
    if user.role is Role.PROVINCE and province_code != user.province_code:
        raise ForbiddenPageError()


def scope_of(user: User) -> str | None:
    return user.province_code if user.role is Role.PROVINCE else None


def check_csrf(request: Request, session: Session, token: str | None) -> None:
    if not users.same_token(session.csrf_token, token):
        raise ForbiddenPageError()
    _check_origin(request)


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ForbiddenPageError()


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path of this site: never `//host` or a scheme (no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def page(request: Request, name: str, session: Session | None, status: int = 200,
         **context: Any) -> HTMLResponse:
    lang = lang_of(request)
    return templates.TemplateResponse(request, name, {
        "t": translator(lang), "f": Formats(lang), "lang": lang, "session": session,
        "user": session.user if session else None, "csrf": session.csrf_token if session else "",
        "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "notice": request.query_params.get("notice"), "error": request.query_params.get("error"),
        "error_key": request.query_params.get("error_key"),
        "pending_request": approvals.request_uuid(request.query_params.get("request", "")),
        "province_name": views.province_name, **context}, status_code=status)


def back(next_path: str, answer=None, notice: str = "done") -> RedirectResponse:
    """Back to the page the form was on, with what became of the command: done, refused (the
    service's reason), or waiting for a checker (a four-eyes request: its id)."""
    sep = "&" if "?" in next_path else "?"
    if answer is not None and answer.pending is not None:
        return RedirectResponse(f"{next_path}{sep}notice=pending&request="
                                f"{quote(answer.pending)}", 303)
    if answer is not None and not answer.ok:
        if answer.status == 403 and answer.field == "checker":  # the maker checking themself
            return RedirectResponse(f"{next_path}{sep}error_key=self_check", 303)
        return RedirectResponse(f"{next_path}{sep}error={quote(answer.message)}", 303)
    return RedirectResponse(f"{next_path}{sep}notice={notice}", 303)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequiredError)
    async def login_required(request: Request, exc: LoginRequiredError) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", 303)

    @app.exception_handler(ForbiddenPageError)
    async def forbidden(request: Request, exc: ForbiddenPageError) -> Response:
        return page(request, "message.html", await current_session(request), 403,
                    title_key="forbidden")

    @app.exception_handler(NotFoundPageError)
    async def not_found(request: Request, exc: NotFoundPageError) -> Response:
        return page(request, "message.html", await current_session(request), 404,
                    title_key="not_found")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and not request.url.path.startswith(("/static", "/api")):
            return page(request, "message.html", await current_session(request), 404,
                        title_key="not_found")
        return JSONResponse({"detail": exc.detail}, exc.status_code)


def _install_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _cookie(response: Response, settings: ConsoleSettings, name: str, value: str,
            max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True,
                        secure=settings.cookie_secure, samesite="strict", path="/")


# ---------------------------------------------------------------- routes

def _routes(app: FastAPI, settings: ConsoleSettings) -> None:
    @app.get("/healthz")
    async def healthz(request: Request) -> dict:
        reader = request.app.state.reader
        return {"service": "console", "status": "stopped" if reader.stopped else "ok",
                "events_applied": reader.applied, "lag": reader.lag,
                "reader_error": reader.error,
                "reader_stopped": reader.stopped}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        try:
            await request.app.state.pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 (any database failure is "not ready")
            return JSONResponse({"service": "console", "ready": False,
                                 "reason": type(exc).__name__}, 503)
        return JSONResponse({"service": "console", "ready": True})

    @app.get("/sw.js")
    async def service_worker() -> Response:
        # served from the root so its scope covers the report form
        return FileResponse(HERE / "static" / "sw.js", media_type="text/javascript",
                            headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"})

    @app.get("/lang/{code}")
    async def set_language(code: str, next: str | None = None) -> Response:
        response = RedirectResponse(safe_next(next), 303)
        if code in LANGUAGES:
            _cookie(response, settings, LANG_COOKIE, code, 365 * 24 * 3600)
        return response

    @app.get("/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", None, login_csrf=token, next=safe_next(next))
        _cookie(response, settings, LOGIN_CSRF_COOKIE, token, 3600)
        return response

    @app.post("/login")
    async def login(request: Request, email: Annotated[str, Form(max_length=254)],
                    password: Annotated[str, Form(max_length=1024)],
                    csrf: Annotated[str, Form(max_length=100)] = "",
                    next: Annotated[str, Form(max_length=500)] = "/") -> Response:
        _check_origin(request)
        if not users.same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
            token = secrets.token_urlsafe(32)
            response = page(request, "login.html", None, 400, login_csrf=token,
                            next=safe_next(next), login_error="bad_csrf")
            _cookie(response, settings, LOGIN_CSRF_COOKIE, token, 3600)
            return response
        user = await users.authenticate(request.app.state.pool, email, password)
        if user is None:
            token = secrets.token_urlsafe(32)
            response = page(request, "login.html", None, 401, login_csrf=token,
                            next=safe_next(next), login_error="bad_login", email=email)
            _cookie(response, settings, LOGIN_CSRF_COOKIE, token, 3600)
            return response
        token = await users.open_session(request.app.state.pool, user, settings.session_hours)
        response = RedirectResponse(safe_next(next), 303)
        _cookie(response, settings, SESSION_COOKIE, token, int(settings.session_hours * 3600))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request, session: SignedIn,
                     csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
        check_csrf(request, session, csrf)
        await users.close_session(request.app.state.pool, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=settings.cookie_secure,
                               httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def home(session: SignedIn) -> Response:
        user = session.user
        if user.role is Role.TKS:
            return RedirectResponse("/report", 303)
        if user.role is Role.PROVINCE:
            return RedirectResponse(f"/provinces/{user.province_code}", 303)
        return RedirectResponse("/dashboard", 303)

    async def _year(pool, year: int | None) -> tuple[int, list[int]]:
        known = await views.years(pool)
        if year is None:
            year = known[0] if known else today().year
        return year, known

    @app.get("/dashboard")
    async def dashboard(request: Request, session: SignedIn, year: int | None = None) -> Response:
        allow(session, Role.ADMIN, Role.AGENCY)
        pool = request.app.state.pool
        year, known = await _year(pool, year)
        stages = await views.by_stage(pool, year)
        provinces = await views.by_province(pool, year)
        lang = lang_of(request)
        t, f = translator(lang), Formats(lang)
        return page(request, "dashboard.html", session, year=year, years=known, stages=stages,
                    provinces=provinces,
                    stage_total=views.totals(stages, STAGE_SUMS),
                    province_total=views.totals(provinces, PROVINCE_SUMS),
                    chart_money=charts.bars([(r["province"], r["rupiah_disbursed"])
                                             for r in provinces], f.rp, t("chart_disbursed")),
                    chart_stages=charts.bars([(f"{t('tahap')} {roman(r['stage'])}",
                                               r["groups_mentored"]) for r in stages], f.num,
                                             t("chart_groups")),
                    reader=request.app.state.reader,
                    applied=await views.reader_status(pool))

    @app.get("/provinces/{code}")
    async def province_page(request: Request, code: str, session: SignedIn,
                            year: int | None = None) -> Response:
        user = allow(session, Role.ADMIN, Role.AGENCY, Role.PROVINCE)
        check_province(user, code)
        if views.province_name(code) == code:
            raise NotFoundPageError()
        pool = request.app.state.pool
        year, known = await _year(pool, year)
        stages = await views.by_stage(pool, year, code)
        totals = await views.by_province(pool, year, code)
        lang = lang_of(request)
        f = Formats(lang)
        regencies = await views.regencies(pool, year, code)
        return page(request, "province.html", session, code=code, year=year, years=known,
                    stages=stages, stage_total=views.totals(stages, STAGE_SUMS),
                    summary=totals[0] if totals else None, regencies=regencies,
                    chart_regencies=charts.bars([(r["regency_code"], r["disbursed"])
                                                 for r in regencies], f.rp,
                                                translator(lang)("disbursed")),
                    groups=await views.groups_list(pool, code, year=year, limit=200),
                    counts=await views.queue_counts(pool, code))

    @app.get("/groups/{group_id}")
    async def group_page(request: Request, group_id: str, session: SignedIn) -> Response:
        user = session.user
        pool = request.app.state.pool
        group = await views.group(pool, group_id[:100])
        if group is None:
            raise NotFoundPageError()
        check_province(user, group["province_code"])
        if user.role is Role.TKS and all(m["tks_id"] != user.tks_id or m["unassigned_on"]
                                         for m in group["mentors"]):
            raise ForbiddenPageError()
        members = None
        waiting: dict[str, dict] = {}
        if user.role in (Role.ADMIN, Role.PROVINCE):  # personal data: from the owning service
            backend = request.app.state.backend
            answer = await backend.call(user, "GET", "groups", f"/groups/{group_id}")
            members = answer.body.get("members") if answer.ok else None
            waiting = await _waiting(backend, user, group["province_code"])
        return page(request, "group.html", session, g=group, members=members,
                    pending_fund=waiting["fund"].get(group["group_id"]) if waiting else None,
                    pending_lpj=waiting.get("accept_lpj", {}),
                    idem=str(uuid.uuid4()), today=today(), funding_default=FUNDING_DEFAULT,
                    lpj_reasons=LPJ_RETURN_REASONS)

    @app.get("/tks/{tks_id}")
    async def tks_page(request: Request, tks_id: str, session: SignedIn) -> Response:
        user = session.user
        if user.role is Role.TKS and user.tks_id != tks_id:
            raise ForbiddenPageError()
        found = await views.tks(request.app.state.pool, tks_id[:100])
        if found is None:
            raise NotFoundPageError()
        check_province(user, found["province_code"])
        return page(request, "tks.html", session, k=found)

    @app.get("/queues")
    async def queues(request: Request, session: SignedIn) -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        found = await views.queues(request.app.state.pool, scope_of(user))
        waiting = await _waiting(request.app.state.backend, user, scope_of(user))
        return page(request, "queues.html", session, q=found, today=today(),
                    pending_fund=waiting["fund"], pending_lpj=waiting["accept_lpj"],
                    funding_default=FUNDING_DEFAULT, lpj_reasons=LPJ_RETURN_REASONS,
                    idem=lambda: str(uuid.uuid4()))

    async def _waiting(backend: Backend, user: User, province: str | None
                       ) -> dict[str, dict[str, dict]]:
        """The four-eyes requests already waiting for a checker, so a page shows them instead
        of a second button to ask again: funding (and tranche changes) by group, LPJ
        acceptances by report."""
        fund: dict[str, dict] = {}
        for command in ("fund", "change_tranche"):
            for item in await approvals.waiting_for(backend, user, command, province=province):
                fund.setdefault(approvals.group_of(item) or "", item)
        lpj = {str((item.get("payload") or {}).get("report_id")): item
               for item in await approvals.waiting_for(backend, user, "accept_lpj",
                                                       province=province)}
        return {"fund": fund, "accept_lpj": lpj}

    # ------------------------------------------------------------ commands (forms)

    async def _group_scope(request: Request, user: User, group_id: str) -> dict:
        group = await views.group(request.app.state.pool, group_id[:100])
        if group is None:
            raise NotFoundPageError()
        check_province(user, group["province_code"])
        return group

    @app.post("/groups/{group_id}/approve")
    async def approve(request: Request, group_id: str, session: SignedIn,
                      csrf: Annotated[str, Form(max_length=100)],
                      idem: Annotated[str, Form(min_length=8, max_length=100)],
                      next: Annotated[str, Form(max_length=500)] = "/queues") -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        await _group_scope(request, user, group_id)
        answer = await request.app.state.backend.call(
            user, "POST", "groups", f"/groups/{quote(group_id)}/approval", idempotency_key=idem)
        return back(safe_next(next, "/queues"), answer, "approved")

    @app.post("/groups/{group_id}/fund")
    async def fund(request: Request, group_id: str, session: SignedIn,
                   csrf: Annotated[str, Form(max_length=100)],
                   idem: Annotated[str, Form(min_length=8, max_length=100)],
                   amount: Annotated[int, Form(ge=1)], disbursed_on: Annotated[date, Form()],
                   budget_year: Annotated[int, Form(ge=2000, le=2100)],
                   tranche: Annotated[int, Form(ge=1, le=10)] = 1,
                   next: Annotated[str, Form(max_length=500)] = "/queues") -> Response:
        user = allow(session, Role.ADMIN)
        check_csrf(request, session, csrf)
        await _group_scope(request, user, group_id)
        answer = await request.app.state.backend.call(
            user, "POST", "groups", f"/groups/{quote(group_id)}/funding", idempotency_key=idem,
            json={"tranche": tranche, "amount": amount, "disbursed_on": disbursed_on.isoformat(),
                  "budget_year": budget_year})
        return back(safe_next(next, "/queues"), answer, "funded")

    @app.post("/groups/{group_id}/lpj/{report_id}/{verdict}")
    async def review_lpj(request: Request, group_id: str, report_id: str, verdict: str,
                         session: SignedIn, csrf: Annotated[str, Form(max_length=100)],
                         idem: Annotated[str, Form(min_length=8, max_length=100)],
                         reason_code: Annotated[str, Form(max_length=40)] = "other",
                         next: Annotated[str, Form(max_length=500)] = "/queues") -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        await _group_scope(request, user, group_id)
        if verdict not in ("acceptance", "return"):
            raise NotFoundPageError()
        body = {"reason_code": reason_code} if verdict == "return" else None
        answer = await request.app.state.backend.call(
            user, "POST", "groups", f"/groups/{quote(group_id)}/lpj/{quote(report_id)}/{verdict}",
            json=body, idempotency_key=idem)
        return back(safe_next(next, "/queues"), answer, verdict)

    # ------------------------------------------------------------ four eyes (approvals)

    @app.get("/approvals")
    async def approvals_page(request: Request, session: SignedIn,
                             decided: str | None = None) -> Response:
        """Persetujuan: the pending requests this user may grant or reject (the services'
        `GET /approvals?checkable=true`, a provincial officer's province only), those waiting
        for someone else, and the request just decided with its maker and checker."""
        user = allow(session, *ROLES_OF_QUEUES)
        backend = request.app.state.backend
        found = await approvals.listings(backend, user)
        codes: dict[tuple[str, int | None], list[str]] = {}
        for listing in found:
            for item in listing.checkable:
                item["reason_codes"] = await approvals.reason_codes(
                    backend, user, listing.service, item.get("year"), codes)
        shown = None
        service, _, request_id = (decided or "").partition(":")
        if service in approvals.SERVICES and approvals.request_uuid(request_id):
            shown = await approvals.one(backend, user, service,
                                        approvals.request_uuid(request_id))
        return page(request, "approvals.html", session, listings=found, decided=shown,
                    idem=lambda: str(uuid.uuid4()))

    def _approval(service: str, request_id: str) -> str:
        found = approvals.request_uuid(request_id)
        if service not in approvals.SERVICES or found is None:
            raise NotFoundPageError()
        return found

    @app.post("/approvals/{service}/{request_id}/grant")
    async def grant(request: Request, service: str, request_id: str, session: SignedIn,
                    csrf: Annotated[str, Form(max_length=100)],
                    idem: Annotated[str, Form(min_length=8, max_length=100)]) -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        found = _approval(service, request_id)
        answer = await request.app.state.backend.call(
            user, "POST", service, f"/approvals/{found}/grant", idempotency_key=idem)
        return back(f"/approvals?decided={service}:{found}" if answer.ok else "/approvals",
                    answer, "granted")

    @app.post("/approvals/{service}/{request_id}/reject")
    async def reject(request: Request, service: str, request_id: str, session: SignedIn,
                     csrf: Annotated[str, Form(max_length=100)],
                     idem: Annotated[str, Form(min_length=8, max_length=100)],
                     reason_code: Annotated[str, Form(min_length=1, max_length=40)],
                     note: Annotated[str, Form(max_length=500)] = "") -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        found = _approval(service, request_id)
        body: dict[str, Any] = {"reason_code": reason_code}
        if note.strip():
            body["note"] = note.strip()
        answer = await request.app.state.backend.call(
            user, "POST", service, f"/approvals/{found}/reject", json=body,
            idempotency_key=idem)
        return back(f"/approvals?decided={service}:{found}" if answer.ok else "/approvals",
                    answer, "rejected")

    @app.post("/approvals/{service}/grant")
    async def grant_many(request: Request, service: str, session: SignedIn,
                         csrf: Annotated[str, Form(max_length=100)],
                         idem: Annotated[str, Form(min_length=8, max_length=100)],
                         request_id: Annotated[list[str] | None, Form()] = None
                         ) -> Response:
        """The selected requests granted one by one (`POST /approvals/grant`: each in its own
        transaction, with its own result or refusal)."""
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        if not request_id:
            return RedirectResponse("/approvals?error_key=none_selected", 303)
        ids = [_approval(service, r) for r in request_id[:500]]
        answer = await request.app.state.backend.call(
            user, "POST", service, "/approvals/grant", json={"request_ids": ids},
            idempotency_key=idem)
        if not answer.ok or not isinstance(answer.body, dict):
            return back("/approvals", answer)
        refused = [r for r in answer.body.get("results", []) if r.get("status") != 200]
        if refused:
            first = Answer(int(refused[0].get("status") or 409), refused[0])
            if first.status == 403 and first.field == "checker":
                return RedirectResponse("/approvals?error_key=self_check", 303)
            text = (f"{answer.body.get('granted', 0)}/{len(ids)}; "
                    f"{refused[0].get('request_id', '')[:8]}: {first.message}")
            return RedirectResponse(f"/approvals?error={quote(text[:300])}", 303)
        return RedirectResponse("/approvals?notice=granted_many", 303)

    # ------------------------------------------------------------ evaluation

    @app.get("/evaluation")
    async def evaluation(request: Request, session: SignedIn, year: int | None = None) -> Response:
        user = allow(session, Role.ADMIN, Role.PROVINCE, Role.AGENCY)
        pool = request.app.state.pool
        year, known = await _year(pool, year)
        backend = request.app.state.backend
        # the cycle's state from its owner (what the buttons act on); the topics' record of it
        # when the service cannot be asked
        owner = await backend.call(user, "GET", "evaluation", f"/evaluations/{year}")
        if owner.ok:
            cycle = owner.body
        elif owner.status == 404:
            cycle = None
        else:
            cycle = {c["year"]: c for c in await views.evaluation_cycles(pool)}.get(year)
        answer = await backend.call(
            user, "GET", "evaluation", f"/evaluations/{year}/preview",
            params={"limit": 200, **({"province_code": user.province_code}
                                     if user.province_code else {})})
        closing = None
        if user.role is Role.ADMIN:
            closing = next((i for i in await approvals.waiting_for(backend, user, "close_year")
                            if i.get("year") == year), None)
        return page(request, "evaluation.html", session, year=year, years=known,
                    cycle=cycle, preview=answer.body if answer.ok else None, closing=closing,
                    preview_error=None if answer.ok else answer.message, idem=str(uuid.uuid4()))

    @app.post("/evaluation/{year}/{action}")
    async def evaluation_action(request: Request, year: int, action: str, session: SignedIn,
                                csrf: Annotated[str, Form(max_length=100)],
                                idem: Annotated[str, Form(min_length=8, max_length=100)],
                                confirm: Annotated[str, Form(max_length=10)] = "") -> Response:
        user = allow(session, Role.ADMIN)
        check_csrf(request, session, csrf)
        if action not in ("open", "close"):
            raise NotFoundPageError()
        if action == "close" and confirm != "yes":
            return back(f"/evaluation?year={year}", None, "confirm_needed")
        answer = await request.app.state.backend.call(
            user, "POST", "evaluation", f"/evaluations/{year}/{action}", idempotency_key=idem)
        return back(f"/evaluation?year={year}", answer, action)

    # ------------------------------------------------------------ CSV import

    @app.get("/imports")
    async def import_form(request: Request, session: SignedIn) -> Response:
        allow(session, *ROLES_OF_QUEUES)
        return page(request, "imports.html", session, report=None, idem=str(uuid.uuid4()))

    @app.post("/imports")
    async def import_csv(request: Request, session: SignedIn,
                         csrf: Annotated[str, Form(max_length=100)],
                         idem: Annotated[str, Form(min_length=8, max_length=100)],
                         file: Annotated[UploadFile, File()]) -> Response:
        user = allow(session, *ROLES_OF_QUEUES)
        check_csrf(request, session, csrf)
        content = await file.read(32 * 1024 * 1024 + 1)
        answer = await request.app.state.backend.call(
            user, "POST", "groups", "/groups/imports", content=content,
            content_type="text/csv", idempotency_key=idem)
        return page(request, "imports.html", session, 200 if answer.ok else answer.status,
                    report=answer.body if answer.ok else None,
                    import_error=None if answer.ok else answer.message, idem=str(uuid.uuid4()))

    # ------------------------------------------------------------ the TKS's monthly report

    @app.get("/report")
    async def report_form(request: Request, session: SignedIn) -> Response:
        user = allow(session, Role.TKS)
        period, due = await views.due_this_month(request.app.state.pool, user.tks_id,
                                                 datetime.now(UTC))
        return page(request, "report.html", session, period=period, due=due,
                    units=PRODUCTION_UNITS, supports=("partnership", "capital_access",
                                                      "market_access"))

    @app.post("/api/reports")
    async def file_report(request: Request, session: SignedIn) -> Response:
        """The report form's submission (JSON, from report.js, now or when back online): the
        draft's own idempotency key, so a draft sent twice is filed once."""
        user = allow(session, Role.TKS)
        check_csrf(request, session, request.headers.get("x-csrf-token"))
        try:
            body = await request.json()
            group_id, key = str(body.pop("group_id")), str(body.pop("idempotency_key"))
        except (ValueError, KeyError, AttributeError):
            return JSONResponse({"status": 400, "message": "group_id and idempotency_key are "
                                                           "required"}, 400)
        if not 8 <= len(key) <= 100:
            return JSONResponse({"status": 400, "message": "bad idempotency_key"}, 400)
        answer = await request.app.state.backend.call(
            user, "POST", "mentoring", f"/groups/{quote(group_id)}/reports", json=body,
            idempotency_key=key)
        return JSONResponse({"status": answer.status,
                             "message": "ok" if answer.ok else answer.message},
                            200 if answer.ok else answer.status)


STAGE_SUMS = ("tks", "regencies", "groups_mentored", "people_reached", "rupiah_disbursed",
              "rupiah_accounted", "reports_filed", "reports_overdue", "continued", "replaced",
              "resigned")
PROVINCE_SUMS = ("tks", "groups_funded", "people_reached", "rupiah_disbursed",
                 "rupiah_accounted", "continued", "replaced")


def roman(stage: int) -> str:
    return {1: "I", 2: "II", 3: "III"}.get(stage, str(stage))


templates.env.globals["roman"] = roman
