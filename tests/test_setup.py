"""`envs/setup.sh` says first what it supports: the distribution (a warning
unless Debian >= 12 or Ubuntu >= 24.04) and /usr/bin/python3 (an error below
3.11, which the pins need), before it installs anything.

No other OS is needed: XDPLAB_OS_RELEASE and XDPLAB_SYSTEM_PYTHON stand in a fake
os-release and python, and a fake apt-get, dpkg-query and `id` on PATH record
any attempt to install and stop the script right after its checks (not root).

Then, on this machine after `make setup`: xdplab imports from .venv without PYTHONPATH
(the editable install), and a second setup has nothing to do and says nothing."""

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

OS_RELEASE = {
    "debian11": 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nID=debian\nVERSION_ID="11"\n',
    "debian12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "ubuntu2204": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n',
    "ubuntu2404": 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n',
    "fedora40": 'PRETTY_NAME="Fedora Linux 40"\nID=fedora\nVERSION_ID=40\n',
}


def setup_sh(tmp_path, os_release, python_version):
    """Run `bash envs/setup.sh` as if on that system, with that python3."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("apt-get", "apt-cache", "dpkg-query", "dpkg", "pip"):
        (fake / tool).write_text('#!/bin/sh\necho "%s $*" >> %s\nexit 1\n'
                                 % (tool, tmp_path / "installed"))
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")          # stops it at "must run as root"
    python = fake / "python3"
    python.write_text("#!/bin/sh\necho %s\n" % python_version if python_version
                      else "#!/bin/sh\nexit 127\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    release = tmp_path / "os-release"
    if os_release:
        release.write_text(OS_RELEASE[os_release])
    env = dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"]),
               XDPLAB_OS_RELEASE=str(release), XDPLAB_SYSTEM_PYTHON=str(python))
    t0 = time.monotonic()
    r = subprocess.run(["bash", "envs/setup.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=30)
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "installed").exists(), (tmp_path / "installed").read_text()
    assert r.returncode != 0 and r.stdout == "", r
    return r.stderr


@pytest.mark.parametrize("os_release, python_version, name", [
    ("debian11", "3.9.2", "Debian GNU/Linux 11 (bullseye)"),
    ("ubuntu2204", "3.10.12", "Ubuntu 22.04.4 LTS"),
])
def test_old_debian_or_ubuntu_fails_first_saying_what_is_supported(
        tmp_path, os_release, python_version, name):
    err = setup_sh(tmp_path, os_release, python_version)
    assert "warning: this is %s; xdplab is known to work on Debian 12 or later, " \
           "Ubuntu 24.04 or later" % name in err
    assert "is Python %s;" % python_version in err and "need Python >= 3.11" in err
    assert "upgrade %s, or run xdplab on one of these" % name in err
    assert "must run as root" not in err


@pytest.mark.parametrize("os_release", ["debian12", "ubuntu2404"])
def test_supported_system_with_a_too_old_python_fails_without_a_warning(tmp_path, os_release):
    err = setup_sh(tmp_path, os_release, "3.10.1")
    assert "warning" not in err and "is Python 3.10.1;" in err


def test_python_that_does_not_run_is_named(tmp_path):
    err = setup_sh(tmp_path, "debian12", None)
    assert "python3 does not run; xdplab needs the distribution's python3 >= 3.11" in err


@pytest.mark.parametrize("os_release, python_version, warned", [
    ("debian12", "3.11.2", False), ("ubuntu2404", "3.12.3", False),
    ("fedora40", "3.12.3", True), (None, "3.11.2", True),
])
def test_checks_pass_then_setup_goes_on(tmp_path, os_release, python_version, warned):
    err = setup_sh(tmp_path, os_release, python_version)
    assert ("warning: this is " in err) == warned, err
    assert err.splitlines()[-1].startswith("setup: error: must run as root")


# -- the machine this runs on, after `make setup` ----------------------------------------

VENV_PYTHON = REPO / ".venv" / "bin" / "python"


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv: run `make setup`")
def test_xdplab_imports_from_the_venv_without_pythonpath(tmp_path):
    """The editable install: a notebook or script in .venv imports this clone's xdplab."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(VENV_PYTHON), "-c", "import xdplab.experiment; print(xdplab.__file__)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(REPO / "workflow/xdplab/__init__.py")


@pytest.mark.skipif(os.geteuid() != 0 or not VENV_PYTHON.exists(),
                    reason="needs root and a .venv made by `make setup`")
def test_setup_again_does_nothing_quickly():
    """Every `make run` and `make test` starts with it: when all is there, it says nothing."""
    t0 = time.monotonic()
    r = subprocess.run(["bash", "envs/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    assert took < 3, f"setup took {took:.1f} s with nothing to do"
