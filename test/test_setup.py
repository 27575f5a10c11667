"""`make setup` is idempotent, quick when nothing changed, and names the step that failed."""
import os
import subprocess

from ros_helpers import REPO


def run_setup(**env_overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_overrides)
    return subprocess.run(['bash', 'tools/setup.sh'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_second_setup_does_no_heavy_work():
    result = run_setup()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert 'all ' in out and ' present' in out, out  # Debian packages: nothing to install
    assert out.count('up to date') >= 3, out  # requirements, vision_msgs, the package
    assert 'setup: done' in out


def test_setup_names_the_failed_step_for_a_bad_python():
    result = run_setup(PYTHON='/nonexistent/python3')
    assert result.returncode != 0
    assert "setup failed at step 'Python virtual environment" in result.stderr, result.stderr
    assert '/nonexistent/python3 is missing or older than 3.10' in result.stderr
