"""Fixtures for tests with real rclpy: own ROS_DOMAIN_ID, own context, node processes."""
import pytest

from ros_helpers import LOCALHOST_DISCOVERY, NodeLauncher, make_context, next_domain_id


@pytest.fixture
def ros_domain_id(monkeypatch: pytest.MonkeyPatch) -> int:
    """A domain id of this test's own; child processes inherit it through the environment."""
    domain_id = next_domain_id()
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    for name, value in LOCALHOST_DISCOVERY.items():  # loopback only, on every distro
        monkeypatch.setenv(name, value)
    return domain_id


@pytest.fixture
def ros_context(ros_domain_id: int):
    """An initialised rclpy context isolated from every other test."""
    context = make_context(ros_domain_id)
    yield context
    context.try_shutdown()


@pytest.fixture
def node_launcher(ros_domain_id: int, tmp_path, request):
    """Start nodes as processes; all are stopped at teardown, and their logs are printed
    when the test failed."""
    launcher = NodeLauncher(ros_domain_id, tmp_path)
    yield launcher
    launcher.stop_all()
    report = getattr(request.node, 'rep_call', None)
    if report is not None and report.failed:
        print(launcher.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item so fixtures can see whether it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f'rep_{report.when}', report)
