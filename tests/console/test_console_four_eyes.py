"""The console's side of four eyes without a browser: how a service's answer becomes what the
user is told (done, refused, waiting for a checker with the request id, the maker's own
request), and whose pseudonym is "you"."""

from __future__ import annotations

import asyncio
import uuid

from services.console import approvals
from services.console.app import back
from services.console.backend import Answer, Backend
from services.console.i18n import Formats, translator
from services.console.users import User
from shared.auth import Role, decode_token

KEY = "k" * 40


def test_a_202_pending_answer_is_a_request_waiting_for_a_checker():
    request_id = str(uuid.uuid4())
    pending = Answer(202, {"state": "pending", "request_id": request_id,
                           "checker_roles": ["ministry_admin"]})
    assert pending.ok and pending.pending == request_id
    response = back("/queues", pending, "funded")
    assert response.status_code == 303
    assert response.headers["location"] == f"/queues?notice=pending&request={request_id}"
    # a direct answer (a service or year without four eyes) is done as before
    direct = Answer(200, {"group_id": "g", "status": "funded"})
    assert direct.pending is None
    assert back("/groups/g?x=1", direct, "funded").headers["location"] == \
        "/groups/g?x=1&notice=funded"
    # a 202 that is not a pending request (an accepted import, say) is not one
    assert Answer(202, {"state": "queued"}).pending is None


def test_a_makers_self_check_is_a_clear_message_other_refusals_the_services_reason():
    self_check = Answer(403, {"error": {"field": "checker", "reason": "a maker cannot check "
                                        "their own request: another person ..."}})
    assert self_check.field == "checker"
    assert back("/approvals", self_check).headers["location"] == \
        "/approvals?error_key=self_check"
    assert "Anda sendiri" in translator("id")("self_check")
    decided = Answer(409, {"error": {"field": "request_id", "reason": "already granted"}})
    location = back("/approvals", decided).headers["location"]
    assert location.startswith("/approvals?error=") and "already%20granted" in location


def test_request_ids_are_uuids_only_and_group_targets_name_the_group():
    rid = uuid.uuid4()
    assert approvals.request_uuid(str(rid).upper()) == str(rid)
    for bad in ("", "../x", "1 OR 1=1", None):
        assert approvals.request_uuid(bad) is None
    assert approvals.group_of({"target": "group-abc"}) == "abc"
    assert approvals.group_of({"target": "evaluation-2026"}) is None


def test_the_pseudonym_the_console_knows_is_the_one_the_services_record():
    backend = Backend({}, KEY, 5)
    try:
        admin = User("maker@kemnaker.example", "maker", Role.ADMIN)
        other = User("checker@kemnaker.example", "checker", Role.ADMIN)
        actor = decode_token(KEY, backend.token_for(admin))
        assert actor.alias == backend.pseudonym_of(admin)
        assert backend.pseudonym_of(other) != backend.pseudonym_of(admin)
    finally:
        asyncio.run(backend.close())


def test_a_provincial_officer_checks_groups_only_and_timestamps_show_in_utc():
    officer = User("jabar@kemnaker.example", "jabar", Role.PROVINCE, province_code="32")
    admin = User("admin@kemnaker.example", "admin", Role.ADMIN)
    assert approvals.services_for(officer) == ("groups",)
    assert approvals.services_for(admin) == ("groups", "evaluation")
    assert Formats("id").moment("2026-12-01T23:30:00+07:00") == "1 Des 2026 16.30 UTC"
    assert translator("en")("rc_unknown_code", "unknown_code") == "unknown_code"
