"""The leak half of the masking check: production values of masked columns planted elsewhere on
production are found on staging, named by column and json path, and fail the refresh; what
counts as the same value, and what is too short to check."""

import re

import psycopg
from psycopg import sql

from muva_refresh.catalog import read_catalog
from muva_refresh.checks import CheckOutcome
from muva_refresh.endpoint import Endpoint
from muva_refresh.errors import BlockingCheckError, CopyError
from muva_refresh.leaks import keyed
from muva_refresh.policy import policy_path
from muva_refresh.refresh import RefreshOptions, refresh_events
from muva_refresh.settings import TableFilter
from muva_refresh.shaping import shaping_for

from .support import cli
from .test_policy import SALT, digest

FIRST = {  # one production value of a masked column each
    "guest_email": "SELECT guest_email FROM guest_reservations WHERE guest_email IS NOT NULL ORDER BY id LIMIT 1",
    "guest_name": "SELECT guest_name FROM guest_reservations ORDER BY id LIMIT 1",
    "staff_email": "SELECT email FROM staff_users ORDER BY id LIMIT 1",
    "guest_phone": "SELECT guest_phone FROM guest_conversations ORDER BY id LIMIT 1",
}


def values(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(query).fetchone()[0] for name, query in FIRST.items()}


def plant(dsn: str, statement: str, **params) -> None:
    """Run `statement` on production for one row (the first by id of the table it updates)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def reformatted(phone: str, separator: str) -> str:
    """'+57 3001234567' as '+57 (300) 123-4567' or '+57-300-123-4567'."""
    d = re.sub(r"\D", "", phone)
    if separator == "(":
        return f"+{d[:2]} ({d[2:5]}) {d[5:8]}-{d[8:]}"
    return separator.join([f"+{d[:2]}", d[2:5], d[5:8], d[8:]])


def policy_file(tmp_path, extra: str = "", without: str = "\0") -> str:
    """The demo policy, less the lines that hold `without`, plus `extra`."""
    lines = [line for line in policy_path("demo").read_text().splitlines(keepends=True) if without not in line]
    path = tmp_path / "policy.toml"
    path.write_text("".join(lines).replace("[mask]\n", "[mask]\n" + extra + "\n", 1))
    return str(path)


def masking_outcomes(source: str, target: str, policy: str, workers: int = 1) -> tuple[dict, BaseException | None]:
    """The masking check's outcome per table of an engine refresh, and what it raised."""
    with psycopg.connect(source) as conn:
        catalog = read_catalog(conn, TableFilter(("public",)))
    options = RefreshOptions(shaping=shaping_for(policy, catalog, SALT), workers=workers)
    found: dict[str, CheckOutcome] = {}
    try:
        for event in refresh_events(Endpoint("source", source), Endpoint("target", target), options):
            if isinstance(event, CheckOutcome) and event.check == "masking":
                found[event.table.name] = event
    except (BlockingCheckError, CopyError) as exc:
        return found, exc
    return found, None


def leaks(outcomes: dict) -> dict[str, dict[str, str]]:
    """Table -> {place: what was found there}, from the outcomes' metadata."""
    return {table: {k.removeprefix("leak."): v for k, v in o.metadata.items() if k.startswith("leak.")}
            for table, o in outcomes.items() if any(k.startswith("leak.") for k in o.metadata)}


# --- what counts as the same value, on the server -------------------------------------------------

def hashes(dsn: str, texts: list[str], checked: bool = True) -> set[int]:
    leaves = sql.SQL("SELECT 0, v FROM unnest(CAST({} AS text[])) AS v").format(sql.Literal(texts))
    with psycopg.connect(dsn) as conn:
        return {h for _, h in conn.execute(keyed(leaves, 42, checked))}


def test_the_same_email_and_phone_whatever_the_case_and_separators(pg):
    dsn = pg.admin_dsn
    email, phone = hashes(dsn, ["huesped1@correo.test"]), hashes(dsn, ["+57 300 123 4567"])
    assert len(email) == len(phone) == 1
    assert hashes(dsn, ["  HUESPED1@Correo.TEST "]) == email
    for written in ("+57 (300) 123-4567", "+57-300-123-4567", "+573001234567", "(+57) 300.123.4567", "573001234567"):
        assert hashes(dsn, [written]) == phone, written
    # inside free text, the e-mail and phone tokens besides the whole value
    assert email <= hashes(dsn, ["Reserved - Huesped1@correo.test"])
    assert phone <= hashes(dsn, ["Llamar al +57 (300) 123-4567 antes de las 8"])
    assert hashes(dsn, ["3001234567"]) <= hashes(dsn, ["call (300) 123-4567 today"])  # the NNN NNN NNNN form
    assert hashes(dsn, ["300 123 4567"]).isdisjoint(phone)  # a country code counts as written


def test_short_and_constant_values_are_not_checked(pg):
    too_little = ["unknown", "pending", "X", "es", "1234", "123456", "0000000", "aaaaaaaaaa", "--------", "", "   "]
    assert hashes(pg.admin_dsn, too_little) == set()
    enough = ["Ana Gómez", "a@b.co", "1234567", "+57 300 123 4567", "unknown guest"]
    assert len(hashes(pg.admin_dsn, enough)) == len(enough)
    # the target hashes unchecked keys too (only matches with the source's count), but not a leaf
    # shorter than the shortest checked key
    assert len(hashes(pg.admin_dsn, ["unknown", "pending", "X", "es"], checked=False)) == 2


def test_keys_hash_alike_on_postgresql_15_and_18(pg, pg15):
    texts = ["Huesped1@Correo.TEST", "+57 (300) 123-4567", "Reserved - a.b@c.example", "Ana Gómez", "Árbol Ñandú"]
    assert hashes(pg.admin_dsn, texts) == hashes(pg15.admin_dsn, texts)


# --- plants on production, caught on staging ------------------------------------------------------

def test_every_planted_value_is_caught_named_and_rolled_back(muva_env):
    source, target = muva_env
    v = values(source)
    plant(source, "UPDATE accommodations SET description = %(x)s WHERE id = (SELECT id FROM accommodations ORDER BY id LIMIT 1)",
          x=v["guest_name"])  # a whole value in another text column
    plant(source, "UPDATE calendar_events SET summary = 'Reserved - ' || %(x)s "
                  "WHERE id = (SELECT id FROM calendar_events ORDER BY id LIMIT 1)", x=v["guest_email"])  # a token in free text
    plant(source, "UPDATE airbnb_sync_log SET details = details || jsonb_build_object('operator', %(x)s::text) "
                  "WHERE id = (SELECT id FROM airbnb_sync_log ORDER BY id LIMIT 1)", x=v["staff_email"])
    plant(source, "UPDATE calendar_event_conflicts SET details = jsonb_build_object('guest', jsonb_build_object("
                  "'contact', jsonb_build_object('email', upper(%(x)s::text)))) "
                  "WHERE id = (SELECT id FROM calendar_event_conflicts ORDER BY id LIMIT 1)", x=v["guest_email"])  # nested, upper case
    plant(source, "UPDATE compliance_submissions SET response = jsonb_build_object('contacts', jsonb_build_array("
                  "jsonb_build_object('phone', %(x)s::text))) WHERE id = (SELECT id FROM compliance_submissions ORDER BY id LIMIT 1)",
          x=reformatted(v["guest_phone"], "("))  # inside an array, other separators
    plant(source, "UPDATE sire_content SET keywords = keywords || %(x)s::text "
                  "WHERE id = (SELECT id FROM sire_content ORDER BY id LIMIT 1)", x=v["staff_email"])  # an element of a text array
    plant(source, "UPDATE accommodation_units SET description = 'Llamar al ' || %(x)s || ' antes de llegar' "
                  "WHERE id = (SELECT id FROM accommodation_units ORDER BY id LIMIT 1)", x=reformatted(v["guest_phone"], "-"))
    before = {t: digest(target, t) for t in ("accommodations", "calendar_events", "airbnb_sync_log")}
    outcomes, raised = masking_outcomes(source, target, "demo")
    assert isinstance(raised, BlockingCheckError) and "rolled back" in str(raised)
    found = leaks(outcomes)
    assert found == {
        "accommodations": {"description": found["accommodations"]["description"]},
        "calendar_events": {"summary": "1 of public.guest_reservations.guest_email"},
        "airbnb_sync_log": {"details.operator": "1 of public.staff_users.email"},
        "calendar_event_conflicts": {"details.guest.contact.email": "1 of public.guest_reservations.guest_email"},
        "compliance_submissions": {"response.contacts[].phone": "1 of public.guest_conversations.guest_phone"},
        "sire_content": {"keywords[]": "1 of public.staff_users.email"},
        "accommodation_units": {"description": "1 of public.guest_conversations.guest_phone"},
    }
    assert "1 of public.guest_reservations.guest_name" in found["accommodations"]["description"]
    for table in found:
        assert outcomes[table].severity == "ERROR" and not outcomes[table].passed
    events = outcomes["airbnb_sync_log"]
    assert events.metadata["fix.details.operator"] == ('"public.airbnb_sync_log.details" = { rule = "json", paths = '
                                                       '{ "operator" = "email" } }, or "public.airbnb_sync_log.details"'
                                                       ' = "keep"')
    assert v["staff_email"] not in str(events.metadata) + events.summary  # only hashes crossed, names came back
    assert {t: digest(target, t) for t in before} == before


def test_the_issues_examples_fail_the_refresh_and_leave_staging_unchanged(muva_env, monkeypatch, tmp_path):
    """A hotel's contact phone as a business phone in muva_content, a guest's e-mail in an iCal
    summary, a staff e-mail in a sync log's json: the demo policy without its business phone rule."""
    source, target = muva_env
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    v = values(source)
    with psycopg.connect(source) as conn:
        hotel_phone = conn.execute("SELECT h.contact_phone FROM hotels h JOIN muva_content c "
                                   "ON c.business_info ->> 'phone' = h.contact_phone LIMIT 1").fetchone()
    assert hotel_phone is not None  # the demo data holds this one by itself
    plant(source, "UPDATE calendar_events SET summary = 'Reserved - ' || %(x)s "
                  "WHERE id = (SELECT id FROM calendar_events ORDER BY id LIMIT 1)", x=v["guest_email"])
    plant(source, "UPDATE airbnb_sync_log SET details = details || jsonb_build_object('operator', %(x)s::text) "
                  "WHERE id = (SELECT id FROM airbnb_sync_log ORDER BY id LIMIT 1)", x=v["staff_email"])
    before = {t: digest(target, t) for t in ("muva_content", "calendar_events", "airbnb_sync_log")}
    run = cli("refresh", "--policy", policy_file(tmp_path, without="business_info"), "--json")
    assert run.code == 1
    failed = {c["asset"]: c for c in run.json["checks"] if c["check"] == "masking" and not c["passed"]}
    assert set(failed) == {"muva_content", "calendar_events", "airbnb_sync_log"}
    assert all(c["severity"] == "ERROR" for c in failed.values())
    assert "leak.business_info.phone" in failed["muva_content"]["metadata"]
    assert "public.hotels.contact_phone" in failed["muva_content"]["metadata"]["leak.business_info.phone"]
    assert "calendar_events: production values of masked columns are in summary" in run.err
    assert "details.operator" in run.err and "rolled back, staging is unchanged" in run.err
    assert {t: digest(target, t) for t in before} == before


def test_a_leak_into_a_kept_column_is_a_warning(muva_env, monkeypatch, tmp_path):
    source, target = muva_env
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    plant(source, "UPDATE calendar_events SET summary = 'Reserved - ' || %(x)s "
                  "WHERE id = (SELECT id FROM calendar_events ORDER BY id LIMIT 1)", x=values(source)["guest_email"])
    run = cli("refresh", "--policy", policy_file(tmp_path, '"public.calendar_events.summary" = "keep"'), "--json")
    assert run.code == 0, run.err
    events = next(c for c in run.json["checks"] if c["asset"] == "calendar_events" and c["check"] == "masking")
    assert not events["passed"] and events["severity"] == "WARN"
    assert events["metadata"]["leak.summary"] == "1 of public.guest_reservations.guest_email"
    assert "which the policy keeps" in events["summary"]


def test_constants_shared_with_a_masked_column_do_not_fail_a_refresh(muva_env):
    source, target = muva_env
    plant(source, "UPDATE guest_reservations SET notes = (ARRAY['unknown', 'X', '0000000000'])[n] "
                  "FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM guest_reservations LIMIT 3) AS first "
                  "WHERE guest_reservations.id = first.id")
    plant(source, "UPDATE sync_status_log SET message = (ARRAY['unknown', 'X', '0000000000'])[1 + mod(id, 3)]")
    outcomes, raised = masking_outcomes(source, target, "demo")
    assert raised is None
    assert leaks(outcomes) == {} and outcomes["sync_status_log"].passed


def test_a_subset_sends_and_checks_only_its_rows(muva_env, tmp_path):
    source, target = muva_env
    email = values(source)["guest_email"]
    with psycopg.connect(source, autocommit=True) as conn:
        for subdomain in ("brisamar", "coralhouse"):
            conn.execute("UPDATE calendar_events SET summary = 'Reserved - ' || %s WHERE id = (SELECT e.id "
                         "FROM calendar_events e JOIN tenant_registry t ON t.id = e.tenant_id WHERE t.subdomain = %s "
                         "ORDER BY e.id LIMIT 1)", (email, subdomain))
        assert conn.execute("SELECT count(*) FROM calendar_events WHERE summary LIKE 'Reserved - %%@%%'").fetchone() == (2,)
    subset = policy_file(tmp_path)
    with open(subset, "a") as f:
        f.write("\n[subset]\n\"public.tenant_registry\" = \"subdomain = 'brisamar'\"\n")
    outcomes, raised = masking_outcomes(source, target, subset)  # the other tenant's row stays on production
    assert isinstance(raised, BlockingCheckError)
    assert leaks(outcomes) == {"calendar_events": {"summary": "1 of public.guest_reservations.guest_email"}}


def test_the_parallel_load_catches_a_leak_in_its_unit(muva_env):
    source, target = muva_env
    plant(source, "UPDATE calendar_events SET summary = 'Reserved - ' || %(x)s "
                  "WHERE id = (SELECT id FROM calendar_events ORDER BY id LIMIT 1)", x=values(source)["guest_email"])
    outcomes, raised = masking_outcomes(source, target, "demo", workers=2)
    assert isinstance(raised, CopyError) and "public.calendar_events" in str(raised)
    assert leaks(outcomes) == {"calendar_events": {"summary": "1 of public.guest_reservations.guest_email"}}


# --- the coverage warning inside json, and policy SQL checked first -------------------------------

def test_a_json_path_that_looks_personal_is_named_with_its_rule(muva_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    policy = tmp_path / "partial.toml"
    policy.write_text('[mask]\n"public.staff_users.password_hash" = { rule = "fixed", value = "x" }\n')
    run = cli("refresh", "--policy", str(policy), "--json")
    assert run.code == 0, run.err
    content = next(c for c in run.json["checks"] if c["asset"] == "muva_content" and c["check"] == "masking")
    assert content["severity"] == "WARN" and content["metadata"]["uncovered_personal_columns"] == "business_info.phone"
    assert '"public.muva_content.business_info" = { rule = "json", paths = { "phone" = "phone" } }' in content["summary"]


def test_policy_sql_that_fails_is_refused_before_the_first_write(muva_env, monkeypatch, tmp_path):
    source, target = muva_env
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    policy = tmp_path / "broken.toml"
    policy.write_text('[mask]\n"public.hotels.contact_phone" = { rule = "sql", expression = "{column} || no_such" }\n'
                      "[subset]\n\"public.tenant_registry\" = \"subdomain = 'brisamar';\"\n")
    before = {t: digest(target, t) for t in ("tenant_registry", "hotels", "accommodations")}
    run = cli("refresh", "--policy", str(policy))
    assert run.code == 2
    assert "the subset filter of public.tenant_registry: syntax error at or near \";\"" in run.err
    assert "the masking rules of public.hotels: column \"no_such\" does not exist" in run.err
    assert "nothing was touched" in run.err
    assert {t: digest(target, t) for t in before} == before
