"""Masking: the policy file, resolution and FK propagation, the refusals, and every rule's SQL
evaluated by a real server (keyed, deterministic, never the input, NULL kept, format kept)."""

import dataclasses
import re
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from muva_refresh.catalog import Column, Table, TableRef
from muva_refresh.checks import PERSONAL_NAME
from muva_refresh.masking import (
    FIRST_NAMES,
    LAST_NAMES,
    SET_MASK_KEY,
    MaskPlan,
    check_constraint_violations,
    mask_key,
    plan_masking,
)
from muva_refresh.policy import PolicyError, Rule, load_policy
from muva_refresh.settings import TableFilter

from .support import saved_catalog

PROBE = TableRef("public", "probe")
EMAILS = [f"guest{i}@hotel.example" for i in range(300)]
PHONES = [f"+34 ({i % 1000:03d}) {i:04d}-{i % 10}" for i in range(300)]
DOCS = [f"{i:04d}" for i in range(300)]
NAMES = [f"{FIRST_NAMES[i % 30]} {LAST_NAMES[i // 10 % 30]}" for i in range(300)]  # includes our own names
GUEST_JSON = Rule("json", paths=((("guest", "email"), Rule("email")), (("guest", "phone"), Rule("phone"))))
CASES = {  # (rule, column type, inputs)
    "hash text": (Rule("hash"), "text", EMAILS),
    "hash varchar(12)": (Rule("hash"), "character varying(12)", [f"c{i}" for i in range(300)]),
    "hash char(2)": (Rule("hash"), "character(2)", [f"{i:02x}" for i in range(256)]),
    "hash uuid": (Rule("hash"), "uuid", [str(uuid.UUID(int=i)) for i in range(300)]),
    "hash bytea": (Rule("hash"), "bytea", [f"\\x{i:04x}" for i in range(300)]),
    "hash smallint": (Rule("hash"), "smallint", [str(i) for i in range(-150, 150)]),
    "hash integer": (Rule("hash"), "integer", [str(i) for i in range(300)]),
    "hash bigint": (Rule("hash"), "bigint", [str(i * 10**12) for i in range(300)]),
    "email": (Rule("email"), "text", EMAILS),
    "phone": (Rule("phone"), "text", PHONES + ["", "no digits"]),
    "digits": (Rule("digits"), "character(4)", DOCS),
    "person_name": (Rule("person_name"), "character varying(40)", NAMES),
    "person_name varchar(3)": (Rule("person_name"), "character varying(3)", [n[:3] for n in NAMES]),
    "date_shift date": (Rule("date_shift", days=30), "date", [str(date(2024, 1, 1) + timedelta(i)) for i in range(300)]),
    "date_shift timestamptz": (Rule("date_shift", days=2), "timestamp with time zone",
                               [f"2024-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00+00" for i in range(300)]),
    "json jsonb": (GUEST_JSON, "jsonb", [f'{{"guest": {{"email": "g{i}@x.example", "phone": "555-{i}"}}, "n": {i}}}'
                                         for i in range(300)]),
    "json json": (GUEST_JSON, "json", [f'{{"guest": {{"email": "g{i}@x.example"}}}}' for i in range(300)]),
}


def masked(dsn: str, salt: str, rule: Rule, column_type: str, inputs: list) -> list[tuple]:
    """(input as text, masked as text, masked equals input) per input, evaluated on the server.

    The probe column is called "value", like the names the rules use inside, to show no name shadows it.
    """
    column = Column("value", column_type, False)
    expression = MaskPlan({PROBE: {"value": rule}}).select_expression(Table(PROBE, (column,)), column)
    same_as = sql.SQL("jsonb" if column_type == "json" else "text")
    query = sql.SQL(
        "SELECT CAST(t.value AS text), CAST({e} AS text), CAST(t.value AS {s}) IS NOT DISTINCT FROM CAST({e} AS {s}) "
        "FROM (SELECT CAST(u.v AS {type}) AS value, u.ord FROM unnest(CAST(%s AS text[])) WITH ORDINALITY AS u(v, ord)) AS t "
        "ORDER BY t.ord"
    ).format(e=expression, s=same_as, type=sql.SQL(column_type))
    with psycopg.connect(dsn) as conn:
        conn.read_only = True  # as the source session is
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET DateStyle = 'ISO'")
        conn.execute(SET_MASK_KEY, (mask_key(salt),))
        return [tuple(row) for row in conn.execute(query, (inputs,)).fetchall()]


def outputs(dsn: str, salt: str, case: str) -> list:
    return [out for _, out, _ in masked(dsn, salt, *CASES[case])]


@pytest.fixture(scope="module")
def source(pg) -> str:
    return pg.database_from_sql("mask", "masking.sql")


@pytest.fixture(scope="module")
def catalog(source):
    return saved_catalog(source, TableFilter(("public",)))


def policy_file(tmp_path, text: str, name: str = "policy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def plan(tmp_path, catalog, mask_lines: str) -> MaskPlan:
    return plan_masking(load_policy(policy_file(tmp_path, "[mask]\n" + mask_lines)), catalog)


def refusal(tmp_path, catalog, mask_lines: str) -> str:
    with pytest.raises(PolicyError) as raised:
        plan(tmp_path, catalog, mask_lines)
    return str(raised.value)


# --- the policy file ----------------------------------------------------------------------------

TOML = """
exclude = ["public.audit_*", '"Billing Ops".*']
[mask]
"public.guests.name" = "person_name"
"*.*.email" = "email"
"public.staff_users.password_hash" = { rule = "fixed", value = "masked" }
"public.guests.check_in" = { rule = "date_shift", days = 30 }
"public.guests.payload" = { rule = "json", paths = { "guest.email" = "email", 'guest."a.b"' = "phone" } }
"public.staff_notes.body" = { rule = "sql", expression = "left({column}, 1) || '***'" }
'"public"."guests"."doc"' = "keep"
[subset]
"public.staff_users" = "level < 10"
"""
YAML = """
exclude: [public.audit_*, '"Billing Ops".*']
mask:
  public.guests.name: person_name
  "*.*.email": email
  public.staff_users.password_hash: {rule: fixed, value: masked}
  public.guests.check_in: {rule: date_shift, days: 30}
  public.guests.payload:
    rule: json
    paths: {guest.email: email, 'guest."a.b"': phone}
  public.staff_notes.body: {rule: sql, expression: "left({column}, 1) || '***'"}
  '"public"."guests"."doc"': keep
subset:
  public.staff_users: level < 10
"""


def test_toml_and_yaml_policies_read_the_same(tmp_path):
    from_toml = load_policy(policy_file(tmp_path, TOML))
    from_yaml = load_policy(policy_file(tmp_path, YAML, "policy.yml"))
    assert from_toml.masks == from_yaml.masks and from_toml.subset == from_yaml.subset
    assert from_toml.exclude == from_yaml.exclude == ("public.audit_*", "Billing Ops.*")
    rules = dict(from_toml.masks)
    assert rules["public.guests.payload"] == Rule("json", paths=((("guest", "email"), Rule("email")),
                                                                 (("guest", "a.b"), Rule("phone"))))
    assert rules["public.guests.payload"].describe() == 'json guest.email=email, guest."a.b"=phone'
    assert rules["public.guests.check_in"].describe() == "date_shift ±30 days"
    assert from_toml.subset == ((TableRef("public", "staff_users"), "level < 10"),)
    assert load_policy(policy_file(tmp_path, "", "empty.yaml")).masks == ()


@pytest.mark.parametrize("text, expected", [
    ('[mask]\n"public.t.c" = "scramble"', "mask 'public.t.c': rule 'scramble' is unknown"),
    ('[mask]\n"public.t.c" = { rule = "fixed" }', "rule fixed needs option 'value'"),
    ('[mask]\n"public.t.c" = { rule = "date_shift" }', "rule date_shift needs option 'days'"),
    ('[mask]\n"public.t.c" = { rule = "json" }', "rule json needs option 'paths'"),
    ('[mask]\n"public.t.c" = { rule = "sql" }', "rule sql needs option 'expression'"),
    ('[mask]\n"public.t.c" = { rule = "hash", days = 3 }', "unknown option 'days' for rule hash"),
    ('[mask]\n"public.t.c" = { rule = "date_shift", days = "30" }', "expected a whole number of days, got a string"),
    ('[mask]\n"public.t.c" = { rule = "date_shift", days = 0 }', "'days' must be between 1"),
    ('[mask]\n"public.t.c" = { rule = "fixed", value = [1] }', "'value' must be a string or a number"),
    ('[mask]\n"public.t.c" = 3', "expected a rule name or a table"),
    ('[mask]\npublic.t.c = "email"', "mask 'public': missing option 'rule'"),
    ('[mask]\n"public.t.c" = { rule = "json", paths = { "a" = "date_shift" } }', "cannot mask a value inside JSON"),
    ('[mask]\n"public.t.c" = { rule = "json", paths = { "a" = "email", "a.b" = "email" } }', "overlaps path 'a'"),
    ('[mask]\n"public.t.c" = { rule = "sql", expression = "{col}" }', "placeholder other than {column}"),
    ('[mask]\n"public.t" = "email"', "\"public.t\" is not a schema.table.column pattern"),
    ('[mask]\n"\\"public.t.c" = "email"', "is not a schema.table.column pattern"),
    ('[mask]\n"public..c" = "email"', "is not a schema.table.column pattern"),
    ('exclude = ["public.t.c"]', "exclude 'public.t.c': \"public.t.c\" is not a schema.table pattern"),
    ('exclude = "public.t"', "exclude: expected a list"),
    ('[subset]\n"t" = "a = 1"', "subset 't': \"t\" is not a schema.table pattern"),
    ('[subset]\n"public.t*" = "a = 1"', "a subset root is one table"),
    ('[subset]\n"public.t" = 1', "expected an SQL condition"),
    ('masks = {}', "unknown top-level key 'masks'"),
    ('[mask\n', "not valid TOML"),
])
def test_a_malformed_policy_names_the_file_the_key_and_the_reason(tmp_path, text, expected):
    path = policy_file(tmp_path, text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(path) in str(raised.value) and expected in str(raised.value)


def test_malformed_yaml_and_unknown_formats_are_refused(tmp_path):
    for name, text, expected in [("p.yaml", "mask: [", "not valid YAML"), ("p.yaml", "- a", "must be a table"),
                                 ("p.yaml", "mask:\n  1: email", "expected a schema.table.column pattern"),
                                 ("p.json", "{}", "unknown policy format '.json'")]:
        with pytest.raises(PolicyError, match=re.escape(expected)):
            load_policy(policy_file(tmp_path, text, name))
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "missing.toml")


# --- resolution and FK propagation ---------------------------------------------------------------

def test_exact_keys_win_then_the_first_pattern_and_keep_unmasks(tmp_path, catalog):
    result = plan(tmp_path, catalog, """
"public.guests.[dp][oh]*" = "digits"
"public.*.doc" = "null"
"public.guests.phone" = "keep"
"public.staff_*.b?d*" = "hash"
"public.staff_notes.body" = "person_name"
""")
    rules = {str(ref): dict(by_column) for ref, by_column in result.columns.items()}
    assert rules == {"public.guests": {"doc": Rule("digits")}, "public.staff_users": {"badge": Rule("hash")},
                     "public.staff_notes": {"body": Rule("person_name")}}
    assert result.origin(TableRef("public", "guests"), "doc") == "public.guests.[dp][oh]*"
    assert result.needs_key and result.rules_of(TableRef("public", "mentors")) == {}
    assert result.kept == {TableRef("public", "guests"): frozenset({"phone"})}


def test_a_key_that_matches_no_column_is_refused(tmp_path, catalog):
    assert "'public.guests.emial' matches no copied column" in refusal(tmp_path, catalog, '"public.guests.emial" = "email"')
    generated = refusal(tmp_path, catalog, '"public.staff_users.email_lower" = "email"')
    assert "matches no copied column" in generated  # generated columns are not copied


def test_fk_children_follow_a_masked_parent_transitively(tmp_path, catalog):
    result = plan(tmp_path, catalog, '"public.staff_users.email" = "email"')
    assert {(str(ref), name) for ref, rules in result.columns.items() for name in rules} == {
        ("public.staff_users", "email"), ("public.staff_notes", "author_email"),
        ("public.mentors", "email"), ("public.mentor_sessions", "mentor_email")}
    assert all(rule == Rule("email") for rules in result.columns.values() for rule in rules.values())
    assert "public.mentors.email" in result.origin(TableRef("public", "mentor_sessions"), "mentor_email")


def test_an_fk_child_with_another_rule_or_without_its_parent_is_refused(tmp_path, catalog):
    other = refusal(tmp_path, catalog, '"public.staff_users.email" = "email"\n"public.staff_notes.author_email" = "hash"')
    assert "public.staff_notes.author_email has rule hash" in other and "public.staff_users.email" in other
    kept = refusal(tmp_path, catalog, '"public.staff_users.email" = "email"\n"public.mentors.email" = "keep"')
    assert "public.mentors.email has rule keep" in kept
    orphan = refusal(tmp_path, catalog, '"public.staff_notes.author_email" = "email"')
    assert "public.staff_notes.author_email is masked (email) but its FK parent public.staff_users.email" in orphan
    assert "fix: mask public.staff_users.email with the same rule (email)" in orphan
    nulled = plan(tmp_path, catalog, '"public.staff_notes.author_email" = "null"')  # NULL satisfies the FK
    assert nulled.rules_of(TableRef("public", "staff_notes")) == {"author_email": Rule("null")}
    both = plan(tmp_path, catalog, '"public.staff_users.email" = "email"\n"public.staff_notes.author_email" = "null"')
    assert both.rules_of(TableRef("public", "staff_notes")) == {"author_email": Rule("null")}


def test_a_hash_is_refused_across_fk_columns_of_different_lengths(tmp_path, catalog):
    notes = catalog.table(TableRef("public", "staff_notes"))
    columns = tuple(dataclasses.replace(c, type="character varying(20)") if c.name == "author_email" else c
                    for c in notes.columns)
    changed = dataclasses.replace(catalog, tables=tuple(dataclasses.replace(t, columns=columns) if t is notes else t
                                                        for t in catalog.tables))
    with pytest.raises(PolicyError, match="hashes of these two types differ"):
        plan(tmp_path, changed, '"public.staff_users.email" = "hash"')


@pytest.mark.parametrize("line, expected", [
    ('"public.staff_users.password_hash" = "null"', "public.staff_users.password_hash: rule null on a NOT NULL column"),
    ('"public.staff_users.short_code" = "phone"', "public.staff_users.short_code: rule phone can repeat values"),
    ('"public.staff_users.id" = { rule = "fixed", value = "00000000-0000-0000-0000-000000000000" }', "can repeat values"),
    ('"public.staff_users.level" = "hash"', "public.staff_users.level: rule hash on a unique integer column"),
    ('"public.staff_users.short_code" = "hash"', "short_code: rule hash cut to character varying(8) is too short"),
    ('"public.staff_users.badge" = "email"', "badge: rule email gives 33 characters, but the column is character varying(10)"),
    ('"public.staff_users.badge" = { rule = "fixed", value = "much too long" }', "gives 13 characters"),
    ('"public.staff_users.visits" = "email"', "visits: rule email does not apply to type integer"),
    ('"public.staff_users.born" = "hash"', "born: rule hash does not apply to type date"),
    ('"public.staff_users.full_name" = { rule = "date_shift", days = 3 }', "rule date_shift does not apply to type text"),
    ('"public.guests.phone" = { rule = "json", paths = { "a" = "email" } }', "rule json does not apply to type text"),
])
def test_a_rule_that_would_break_the_target_is_refused(tmp_path, catalog, line, expected):
    assert expected in refusal(tmp_path, catalog, line)


def test_what_passes_validation(tmp_path, catalog):
    result = plan(tmp_path, catalog, """
"public.staff_users.badge" = "hash"
"public.staff_users.short_code" = "keep"
"public.staff_users.visits" = "hash"
"public.staff_users.id" = "hash"
"public.staff_users.avatar" = "hash"
"public.staff_users.full_name" = "person_name"
"public.guests.legacy" = { rule = "json", paths = { "guest.email" = "email" } }
"public.staff_users.password_hash" = { rule = "fixed", value = "masked" }
""")
    assert len(result.rules_of(TableRef("public", "staff_users"))) == 6
    assert not plan(tmp_path, catalog, '"public.guests.doc" = "null"').needs_key
    assert [Rule(k).keeps_unique for k in ("keep", "hash", "email", "sql", "phone", "null")] == [True] * 4 + [False] * 2


# --- every rule's SQL, on the server ---------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_a_rule_is_keyed_deterministic_changes_every_value_and_keeps_null(source, case):
    rule, column_type, inputs = CASES[case]
    first = masked(source, "salt-one", rule, column_type, inputs + [None])
    assert masked(source, "salt-one", rule, column_type, inputs + [None]) == first  # another session
    other = outputs(source, "salt-two", case)
    assert sum(a != b for (_, a, _), b in zip(first, other)) > len(inputs) * 0.6  # ±2 days: 4 outputs
    assert first[-1][1] is None  # NULL in, NULL out
    unchanged = [original for original, _, same in first[:-1] if same]
    if case == "phone":  # nothing to change in these two
        assert unchanged == ["", "no digits"] and first[-3][1] == ""
    else:
        assert unchanged == []


def test_email_and_hash_stay_unique_and_fit_the_column(source):
    emails = outputs(source, "salt", "email")
    assert len(set(emails)) == len(emails) and all(re.fullmatch(r"u[0-9a-f]{16}@example\.invalid", e) for e in emails)
    for case, pattern in [("hash text", r"[0-9a-f]{64}"), ("hash varchar(12)", r"[0-9a-f]{12}")]:
        hashes = outputs(source, "salt", case)
        assert len(set(hashes)) == len(hashes) and all(re.fullmatch(pattern, h) for h in hashes)
    assert len(set(outputs(source, "salt", "hash uuid"))) == 300
    assert all(0 <= int(n) <= 32767 for n in outputs(source, "salt", "hash smallint"))


def test_phone_and_digits_keep_length_and_every_other_character(source):
    for case in ("phone", "digits"):
        for original, out, _ in masked(source, "salt", *CASES[case]):
            assert len(out) == len(original)
            for before, after in zip(original, out):
                assert (before == after) != before.isdigit(), (original, out)
    assert all(re.fullmatch(r"[0-9]{4}", out) for out in outputs(source, "salt", "digits"))


def test_person_names_come_from_the_lists_and_are_cut_to_the_limit(source):
    names = outputs(source, "salt", "person_name")
    assert all(first in FIRST_NAMES and last in LAST_NAMES for first, last in (n.split(" ") for n in names))
    assert len(set(names)) > 100
    assert all(len(n) <= 3 for n in outputs(source, "salt", "person_name varchar(3)"))


def test_date_shift_moves_by_one_to_days_whatever_the_session_time_zone(source):
    for case, days in [("date_shift date", 30), ("date_shift timestamptz", 2)]:
        rule, column_type, inputs = CASES[case]
        shifts = set()
        for original, out, _ in masked(source, "salt", rule, column_type, inputs):
            delta = (datetime.fromisoformat(out) - datetime.fromisoformat(original)) if "+" in out else \
                date.fromisoformat(out) - date.fromisoformat(original)
            assert 1 <= abs(delta.days) <= days and delta.seconds == 0, (original, out)
            shifts.add(delta.days)
        assert min(shifts) < 0 < max(shifts) and len(shifts) > days  # both ways, most offsets used
    rule, column_type, inputs = CASES["date_shift timestamptz"]
    column = Column("at", column_type, False)
    expression = MaskPlan({PROBE: {"at": rule}}).select_expression(Table(PROBE, (column,)), column)
    query = sql.SQL("SELECT {} FROM (SELECT CAST(%s AS timestamptz) AS at) AS t").format(expression)
    instants = []
    for zone in ("UTC", "America/Santiago"):
        with psycopg.connect(source) as conn:
            conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(zone)))
            conn.execute(SET_MASK_KEY, (mask_key("salt"),))
            instants.append(conn.execute(query, (inputs[7],)).fetchone()[0])
    assert instants[0] == instants[1]


def test_json_masks_the_paths_that_exist_and_leaves_the_rest(source):
    import json
    rule = Rule("json", paths=((("guest", "email"), Rule("email")), (("guest", "phone"), Rule("null")),
                               (("tags", "0"), Rule("fixed", value="x"))))
    inputs = ['{"guest": {"email": "a@b.example", "phone": "1"}, "tags": ["t", "u"], "n": 1}',
              '{"guest": {"email": null}, "other": "a@b.example"}', '"just a string"', "[1, 2]", "null"]
    out = [json.loads(o) for _, o, _ in masked(source, "salt", rule, "jsonb", inputs)]
    assert re.fullmatch(r"u[0-9a-f]{16}@example\.invalid", out[0]["guest"]["email"]) and out[0]["guest"]["phone"] is None
    assert out[0]["tags"] == ["x", "u"] and out[0]["n"] == 1
    assert out[1:] == [{"guest": {"email": None}, "other": "a@b.example"}, "just a string", [1, 2], None]
    same_email = masked(source, "salt", Rule("email"), "text", ["a@b.example"])[0][1]
    assert out[0]["guest"]["email"] == same_email  # the same value masks alike inside JSON and out


def test_masking_is_the_same_on_postgresql_15_and_18(source, pg15):
    for case in sorted(CASES):
        assert outputs(pg15.admin_dsn, "salt", case) == outputs(source, "salt", case), case


def test_an_unset_key_fails_loudly(source):
    column = Column("v", "text", False)
    expression = MaskPlan({PROBE: {"v": Rule("email")}}).select_expression(Table(PROBE, (column,)), column)
    with psycopg.connect(source) as conn:
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute(sql.SQL("SELECT {} FROM (SELECT 'a' AS v) AS t").format(expression))
        conn.rollback()
        conn.execute("SELECT set_config('muva.mask_key', '', false)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="muva.mask_key is not set"):
            conn.execute(sql.SQL("SELECT {} FROM (SELECT 'a' AS v) AS t").format(expression))


# --- CHECK constraints, the key, the names ----------------------------------------------------------

def test_check_constraint_violations_finds_a_sql_rule_breaking_a_check(tmp_path, source, catalog):
    guests = catalog.table(TableRef("public", "guests"))
    breaking = plan(tmp_path, catalog, '"public.guests.doc" = { rule = "sql", expression = "\'X\' || {column}" }')
    fine = plan(tmp_path, catalog, '"public.guests.doc" = "digits"\n"public.guests.name" = "person_name"')
    with psycopg.connect(source) as conn:
        conn.read_only = True
        conn.execute(SET_MASK_KEY, (mask_key("salt"),))
        assert check_constraint_violations(conn, breaking, guests) == [
            ("public.guests.doc: rule sql 'X' || {column} breaks CHECK constraint doc_is_four_digits "
             "(CHECK ((doc ~ '^[0-9]{4}$'::text)))")]
        assert check_constraint_violations(conn, fine, guests) == []
        users = catalog.table(TableRef("public", "staff_users"))
        assert check_constraint_violations(conn, breaking, users) == []


def test_the_mask_key_is_derived_from_the_salt():
    key = mask_key("my salt")
    assert re.fullmatch(r"[0-9a-f]{64}", key) and key == mask_key("my salt") != mask_key("my salt!")
    assert "my salt" not in key
    with pytest.raises(Exception, match="salt is empty"):
        mask_key("")


def test_personal_looking_column_names():
    personal = ["email", "guest_email", "e_mail", "mobileNumber", "phone_last_4", "document_number", "passport",
                "api_token", "client_secret", "password_hash", "credentials", "home_address", "date_of_birth",
                "ip", "last_login_ip", "first_name", "lastName", "full_name", "guest_name", "username"]
    plain = ["name", "display_name", "hotel_name", "table_name", "description", "zip", "shipping", "check_in",
             "document_type", "phone_number_id", "email_verified_at", "token_count"]
    assert [n for n in personal if not PERSONAL_NAME.search(n)] == []
    assert [n for n in plain if PERSONAL_NAME.search(n)] == []


def test_the_module_imports_neither_dagster_nor_pandas():
    code = "import sys, muva_refresh.masking; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'pandas')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
