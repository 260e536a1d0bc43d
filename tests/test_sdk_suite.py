"""The official SDK's own test suite passes against the sandbox, with only its host redirected.

``makeimpact`` 2.0.0 (a dev dependency) installs its test file as ``tests/test_client.py`` in
site-packages. It runs here as it is, in a child pytest with an empty configuration (not this
repository's: no warnings-as-errors, no doctests) and the plugin ``tests/sdk_host_redirect.py``,
which sends requests for the SDK's sandbox host to a local `SandboxServer` and refuses any other
host. ``TEST_API_KEY`` is the sandbox's key, as the suite's README asks. Nothing of the SDK is
copied into this repository.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from impactframe.sandbox import SandboxServer

HERE = Path(__file__).resolve().parent
SDK_TEST_FILE = "tests/test_client.py"
SDK_TESTS = 46  # in makeimpact 2.0.0
#: The paths the suite's live (not mocked) tests call.
CALLED = {
    "/v1/whoami",
    "/v1/impact",
    "/v1/impact/daily",
    "/v1/plant_tree",
    "/v1/clean_ocean",
    "/v1/capture_carbon",
    "/v1/donate_money",
    "/v1/projects",
    "/v1/records",
    "/v1/customer_records",
    "/v1/customers",
    "/v1/track",
}


def sdk_test_file() -> Path:
    """The SDK's test file, located from its installed distribution's list of files."""
    files = importlib.metadata.files("makeimpact") or []
    found = [f for f in files if f.as_posix() == SDK_TEST_FILE]
    assert len(found) == 1, [f.as_posix() for f in files]
    return Path(str(found[0].locate()))


def run_sdk_suite(server: SandboxServer, workdir: Path) -> tuple[dict[str, str], str]:
    """Run the SDK's suite against ``server``: each test's outcome by name, and the output."""
    (workdir / "pytest.ini").write_text("[pytest]\n")  # none of this repository's options
    report = workdir / "report.xml"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().endswith("_PROXY") and not name.startswith("PYTEST")
    }
    env.update(
        TEST_API_KEY=server.api_key,
        IMPACTFRAME_SDK_SANDBOX_URL=server.url,
        PYTHONPATH=str(HERE),  # for -p sdk_host_redirect
        PYTHONDONTWRITEBYTECODE="1",  # nothing written into site-packages
    )
    command = [
        *(sys.executable, "-m", "pytest", str(sdk_test_file())),
        *("-c", str(workdir / "pytest.ini"), "--rootdir", str(workdir)),
        *("-p", "no:cacheprovider", "-p", "sdk_host_redirect"),
        *("-q", "-rfE", f"--junitxml={report}"),
    ]
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout[-6000:] + done.stderr[-3000:]
    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname')}.{case.get('name')}"
            failed = [child.tag for child in case if child.tag in {"failure", "error", "skipped"}]
            outcomes[name] = failed[0] if failed else "passed"
    return outcomes, output


def test_the_sdk_suite_passes_against_the_sandbox(
    make_sandbox: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = make_sandbox(n_records=300, n_customer_records=300)
    outcomes, output = run_sdk_suite(server, tmp_path)
    not_passed = {name: outcome for name, outcome in outcomes.items() if outcome != "passed"}
    assert not_passed == {}, output
    assert len(outcomes) == SDK_TESTS, output
    # It ran against this sandbox, on the SDK's paths, its bad key included.
    logged = server.requests
    assert {entry.path for entry in logged} - {"/v1/projects/sbx-trees-madagascar"} == CALLED
    assert any(e.path == "/v1/whoami" and e.status == 401 for e in logged)
    assert all(e.status in (200, 401) for e in logged), [e for e in logged if e.status != 200]
    made = [e for e in logged if e.method == "POST"]
    served = len(server.served_records()) + len(server.served_records("customer_records"))
    assert made
    assert served == 600 + len(made)  # every impact the suite made is served


def test_the_redirect_refuses_other_hosts(
    make_sandbox: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    # A suite whose requests went anywhere but the sandbox host fails, proving nothing leaves.
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest, requests\n"
        "def test_production_is_refused():\n"
        "    with pytest.raises(requests.ConnectionError, match='sdk_host_redirect'):\n"
        "        requests.get('https://api.1clickimpact.com/v1/whoami', timeout=5)\n"
        "def test_sandbox_host_reaches_the_local_sandbox():\n"
        "    r = requests.get('https://sandbox.1clickimpact.com/v1/whoami', timeout=5)\n"
        "    assert r.status_code == 401 and r.json()['type'] == 'key_error'\n"
    )
    server = make_sandbox(n_records=0, n_customer_records=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(IMPACTFRAME_SDK_SANDBOX_URL=server.url, PYTHONPATH=str(HERE))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(probe), "-q", "-p", "sdk_host_redirect"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert [e.path for e in server.requests] == ["/v1/whoami"]


def test_our_tests_are_not_shadowed_by_the_sdk_tests_package() -> None:
    # The SDK installs a top-level package named "tests". This folder has no __init__.py, so
    # pytest imports our modules by their own names (rootdir-relative), never as "tests.*".
    assert not (HERE / "__init__.py").exists()
    assert Path(sys.modules["conftest"].__file__ or "").resolve().parent == HERE
    assert Path(__file__).resolve().parent == HERE
    assert sdk_test_file().parent.name == "tests"
    if "tests" in sys.modules:  # only the SDK's package can be "tests"
        assert Path(sys.modules["tests"].__file__ or "").parent != HERE


@pytest.mark.parametrize("name", ["plant_tree", "get_impact", "get_daily_impact", "who_am_i"])
def test_the_sdk_reads_the_sandbox_answers(
    name: str, make_sandbox: Callable[..., SandboxServer]
) -> None:
    # The same answers through the SDK in this process (its base URL set, as the benchmark does).
    from makeimpact import Environment, OneClickImpact

    server = make_sandbox(n_records=50, n_customer_records=50)
    sdk = OneClickImpact(server.api_key, Environment.SANDBOX)
    sdk.base_url = server.url
    if name == "plant_tree":
        made = sdk.plant_tree(amount=2, customer_email="ada@example.com", customer_name="Ada")
        served = server.served_records("customer_records")[-1]
        assert (made.time_utc, made.tree_planted) == (served["time_utc"], 2)
        assert made.customer is not None
        assert made.customer.customer_id == served["customer"]["customer_id"]
    elif name == "get_impact":
        impact = sdk.get_impact()
        trees = [r.get("tree_planted", 0) for r in server.served_records()]
        assert impact.user_impact.tree_planted == sum(trees)
        assert impact.tree_planted == (
            impact.user_impact.tree_planted + impact.customer_impact.tree_planted
        )
    elif name == "get_daily_impact":
        daily = sdk.get_daily_impact(start_date="2025-01-01", end_date="2025-12-31")
        assert daily.daily_impact
        assert all("2025-01-01" <= d.date <= "2025-12-31" for d in daily.daily_impact)
    else:
        assert sdk.who_am_i().user_id == server.served_records()[0]["user_id"]
