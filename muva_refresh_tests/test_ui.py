"""The Dagster UI end to end: `dagster dev` on the demo pair, driven by a real browser and by GraphQL.

One `dagster dev` (webserver and daemon) and one demo pair serve every test here; see
muva_refresh/demo/dagster_dev.py for how the environment is kept away from the repo's own `.env`.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from muva_refresh.catalog import Catalog
from muva_refresh.demo import dagster_dev
from muva_refresh.demo.dagster_dev import DagsterDev
from muva_refresh.graph import make_plan
from muva_refresh.translator import PRODUCTION_GROUP, TableTranslator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = dagster_dev.REPO_ROOT / "artifacts" / "ui"
# Generous: a refresh run takes ~30 s from launch to SUCCESS, but over 90 s on a busy 2-core machine.
RUN_TIMEOUT_SECONDS = 180
CHECK_NAMES = {"row_count", "no_orphans", "rls", "unique_indexes", "matches_source", "masking"}

ASSET_NODES_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    dependencyKeys { path }
  }
}
"""

# The checks of one asset: the latest evaluation of each, plus the newest executions of two by name.
CHECK_EXECUTIONS_QUERY = """
query CheckExecutions($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name
            blocking
            executionForLatestMaterialization {
              runId
              status
              evaluation { success severity description }
            }
          }
        }
      }
    }
  }
  rls: assetCheckExecutions(assetKey: $assetKey, checkName: "rls", limit: 1) {
    runId
    status
    evaluation { success severity description }
  }
  rowCount: assetCheckExecutions(assetKey: $assetKey, checkName: "row_count", limit: 1) {
    runId
    status
    evaluation { success severity description }
  }
}
"""


@pytest.fixture(scope="module")
def dev() -> Iterator[DagsterDev]:
    root = dagster_dev.make_root()
    started = time.monotonic()
    try:
        env = dagster_dev.start_demo(root)
        demo_ready = time.monotonic()
        server = dagster_dev.start_dagster_dev(root, env)
        print(f"\n[ui] demo {demo_ready - started:.1f} s, dagster dev ready {time.monotonic() - demo_ready:.1f} s "
              f"on {server.url} (location {server.location})")
        try:
            yield server
        finally:
            dagster_dev.stop_dagster_dev(server)
    finally:
        dagster_dev.cleanup(root)


@pytest.fixture(scope="module")
def expected_graph(dev: DagsterDev) -> dict[str, tuple[str, set[str]]]:
    """asset key -> (group, upstream keys), computed from the same state file the UI loaded: each
    staging table reads its FK parents and its production table, which reads nothing."""
    catalog = Catalog.load(Path(dev.env["MUVA_STATE_PATH"]))
    plan = make_plan(catalog)
    translator = TableTranslator()
    key_of = translator.keys(catalog).key_of
    staging = {
        key_of[t.ref].to_user_string(): (
            translator.group_name(t, plan),
            {key_of[p].to_user_string() for p in plan.parents[t.ref]} | {translator.source_key(t.ref).to_user_string()},
        )
        for t in catalog.tables
    }
    production = {translator.source_key(t.ref).to_user_string(): (PRODUCTION_GROUP, set()) for t in catalog.tables}
    return {**staging, **production}


def asset_nodes(dev: DagsterDev) -> dict[str, tuple[str, set[str]]]:
    return {
        "/".join(n["assetKey"]["path"]): (n["groupName"], {"/".join(d["path"]) for d in n["dependencyKeys"]})
        for n in dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    }


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


def list_status(panel_text: str, check: str) -> str | None:
    """A check's status in the Checks tab's list; the UI may print the name twice (truncation helper)."""
    found = re.search(rf"^{re.escape(check)}\n(?:{re.escape(check)}\n)?(\w+)$", panel_text, re.MULTILINE)
    return found.group(1) if found else None


def test_asset_graph_matches_the_fk_plan(dev: DagsterDev, expected_graph) -> None:
    # The graph the UI draws comes from this query; it holds even where no browser is installed.
    nodes = asset_nodes(dev)
    assert nodes == expected_graph
    assert len(nodes) == 2 * 42
    assert {"guest_reservations", "accommodation_units"} <= nodes["reservation_accommodations"][1]


def test_asset_graph_materialize_all_and_checks_in_the_browser(dev: DagsterDev, expected_graph) -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1200})
            context.set_default_timeout(30_000)
            # The community sign-up modal covers the page on a fresh browser; mark it as seen.
            context.add_init_script("localStorage.setItem('communityNux', JSON.stringify('1'))")
            page = context.new_page()

            # The global asset lineage: one collapsed group per FK level.
            page.goto(f"{dev.url}/asset-groups")
            expect(page.get_by_text("Global asset lineage")).to_be_visible()
            groups = sorted({group for group, _ in expected_graph.values()})
            assert groups == [f"level_{n}" for n in range(5)] + [PRODUCTION_GROUP]
            for group in groups:
                expect(page.locator("svg foreignObject.group", has_text=group)).to_have_count(1)
            page.screenshot(path=str(SCREENSHOTS / "asset_graph.png"))

            # The sidebar lists each group's tables once the group is opened.
            rows = page.locator("[class*=AssetSidebarNode_itemContainer]")
            seen: dict[str, set[str]] = {}
            levels = [g for g in groups if g != PRODUCTION_GROUP]  # production's 42 rows outgrow the rendered list
            for group in levels:
                toggle = rows.filter(has=page.locator(f"[title='{group}']")).get_by_role("img", name="arrow_drop_down")
                toggle.click()
                expect(rows).to_have_count(len(groups) + sum(1 for g, _ in expected_graph.values() if g == group))
                seen[group] = {t for t in rows.locator("[title]").evaluate_all("els => els.map(e => e.title)")} - set(groups)
                if group == "level_1":
                    page.screenshot(path=str(SCREENSHOTS / "asset_graph_level_1_tables.png"))
                toggle.click()
                expect(rows).to_have_count(len(groups))
            assert seen == {g: {k for k, (kg, _) in expected_graph.items() if kg == g} for g in levels}
            assert "tenant_registry" in seen["level_0"] and "reservation_accommodations" in seen["level_4"]

            # Materialize all: the run it launches must succeed.
            known = {r["runId"] for r in dev.runs()}
            clicked = time.monotonic()
            page.get_by_role("button", name="Materialize all").click()
            run_id = wait_for_launch(dev, page, known)
            status = dev.wait_for_run(run_id, RUN_TIMEOUT_SECONDS)
            assert status == "SUCCESS", dev.run_errors(run_id)
            print(f"\n[ui] Materialize all: run {run_id} {status} {time.monotonic() - clicked:.1f} s after the click")

            # The FK edges as the UI draws them: a table's upstream lineage is exactly its FK parents.
            table = "reservation_accommodations"
            page.goto(f"{dev.url}/assets/{table}?view=lineage")
            page.get_by_role("button", name="Upstream").click()
            expect(page).to_have_url(re.compile(r"lineageScope=upstream"))
            names = page.locator("svg foreignObject [class*=AssetNode_assetName]")
            expect(names).to_have_count(len(expected_graph[table][1]) + 1)
            # A production table shows under its own name, as its staging table does.
            assert set(names.all_inner_texts()) == {table} | {k.split("/")[-1] for k in expected_graph[table][1]}
            node = page.locator("svg foreignObject", has=page.locator("[class*=AssetNode_assetName]", has_text=table))
            # Capital M: the status line once the run's materialization shows, not "Never materialized".
            # Its production table shows under the same name, observed rather than materialized.
            materialized = node.filter(has_text=re.compile("Materialized"))  # case-sensitive: not "Never materialized"
            expect_after_reloads(page, lambda timeout: expect(materialized).to_have_count(1, timeout=timeout))
            page.screenshot(path=str(SCREENSHOTS / f"lineage_{table}.png"))

            # code_embeddings' Checks tab: every check evaluated, rls failed at WARN severity.
            page.goto(f"{dev.url}/assets/code_embeddings?view=checks")
            expect(page.get_by_text(f"Checks ({len(CHECK_NAMES)})")).to_be_visible()
            page.get_by_text("rls", exact=True).first.click()
            expect(page).to_have_url(re.compile(r"checkDetail=rls"))
            expect(page.get_by_text("RLS is off on the source and the target")).to_be_visible()
            result = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
            expect(result).to_contain_text("Failed")
            # A WARN failure is drawn with the yellow warning icon; an ERROR one would not be.
            expect(result.get_by_role("img", name="warning_outline")).to_be_visible()
            panel = page.get_by_text(f"Checks ({len(CHECK_NAMES)})").locator("xpath=ancestor::*[contains(., 'unique_indexes')][1]")
            statuses = {name: list_status(panel.inner_text(), name) for name in CHECK_NAMES}
            # No policy in this run: the masking check is planned, then skipped.
            assert statuses == {**{n: "Succeeded" for n in CHECK_NAMES}, "rls": "Failed", "masking": "Skipped"}
            page.screenshot(path=str(SCREENSHOTS / "checks_code_embeddings_rls.png"))

            # guest_reservations: row_count passed.
            page.goto(f"{dev.url}/assets/guest_reservations?view=checks&checkDetail=row_count")
            expect(page.get_by_text(re.compile(r"guest_reservations: ")).first).to_be_visible()
            result = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
            expect(result).to_contain_text("Passed")
            panel = page.get_by_text(f"Checks ({len(CHECK_NAMES)})").locator("xpath=ancestor::*[contains(., 'unique_indexes')][1]")
            assert list_status(panel.inner_text(), "row_count") == "Succeeded"
            page.screenshot(path=str(SCREENSHOTS / "checks_guest_reservations_row_count.png"))
        finally:
            browser.close()


def expect_after_reloads(page, assertion, attempts: int = 3, timeout: float = 20_000) -> None:
    """Now and then a graph node's live data stays "Loading..." in a page opened after a run; a reload refetches it."""
    for attempt in range(attempts):
        try:
            assertion(timeout)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
            print(f"\n[ui] live data still loading after {timeout / 1000:.0f} s; reloading")
            page.reload()


def wait_for_launch(dev: DagsterDev, page, known: set[str]) -> str:
    """The run the click created; confirms a launch dialog should the UI show one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fresh = [r["runId"] for r in dev.runs() if r["runId"] not in known]
        if fresh:
            return fresh[0]
        dialog = page.get_by_role("dialog")
        if dialog.count() and dialog.first.is_visible():
            dialog.first.get_by_role("button", name=re.compile(r"^(Materialize|Launch|Confirm)")).first.click()
        page.wait_for_timeout(1000)
    raise TimeoutError("Materialize all created no run within 60 s")


def test_refresh_job_through_graphql(dev: DagsterDev) -> None:
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port)
    started = time.monotonic()
    run_id = client.submit_job_execution(
        "refresh_staging",
        repository_location_name=dev.location,
        repository_name=dev.repository,
        run_config={},
    )
    deadline = started + RUN_TIMEOUT_SECONDS
    status = client.get_run_status(run_id).value
    while status not in dagster_dev.TERMINAL_RUN_STATUSES and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_run_status(run_id).value
    assert status == "SUCCESS", f"run {run_id} is {status}:\n{dev.run_errors(run_id)}"
    print(f"\n[ui] refresh_staging through GraphQL: run {run_id} {status} in {time.monotonic() - started:.1f} s")

    data = dev.graphql(CHECK_EXECUTIONS_QUERY, {"assetKey": {"path": ["code_embeddings"]}})
    checks = {c["name"]: c for c in data["assetNodeOrError"]["assetChecksOrError"]["checks"]}
    assert set(checks) == CHECK_NAMES
    latest = {name: c["executionForLatestMaterialization"] for name, c in checks.items()}
    assert all(e is not None and e["runId"] == run_id for e in latest.values()), latest
    assert {c["name"] for c in checks.values() if c["blocking"]} == {"row_count", "no_orphans", "masking"}

    [rls] = data["rls"]
    assert rls["runId"] == run_id
    assert rls["status"] == "FAILED"
    assert rls["evaluation"]["success"] is False
    assert rls["evaluation"]["severity"] == "WARN"
    assert "RLS is off" in rls["evaluation"]["description"]

    [row_count] = data["rowCount"]
    assert row_count["runId"] == run_id
    assert row_count["status"] == "SUCCEEDED"
    assert row_count["evaluation"]["success"] is True
    assert row_count["evaluation"]["severity"] == "ERROR"
    # Every other check passed, but masking: without a policy it is planned and skipped, never passed.
    assert {n: e["status"] for n, e in latest.items() if e["evaluation"] is None} == {"masking": "SKIPPED"}
    assert {n for n, e in latest.items() if e["evaluation"] and not e["evaluation"]["success"]} == {"rls"}
