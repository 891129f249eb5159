# SPDX-License-Identifier: Apache-2.0
"""pytest wiring for the end-to-end suite: a SIGALRM time limit on every test phase, the
markers, and the fixtures that start slbd and echo backends and check slbd after each test."""

import contextlib
import math
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import slbd_harness as h  # noqa: E402

# Every phase (setup, call, teardown) of every test gets this many seconds, scaled for
# sanitizer builds; @pytest.mark.timeout(N) changes it for one test. pytest-timeout is not
# packaged with Debian's pytest, and a hung test must not hang CI.
DEFAULT_TIMEOUT_S = 60


class PhaseTimeout(BaseException):
    """Raised from SIGALRM. A BaseException so a test's `except Exception` cannot swallow it;
    pytest still reports it as the test's failure."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slbd(workers=N, log_level=L, nofile=N, extra_args=[...]): options for the "
        "slbd fixture's daemon")
    config.addinivalue_line(
        "markers", "timeout(seconds): time limit per test phase (default 60, x3 under ASan)")


def _limit(item):
    m = item.get_closest_marker("timeout")
    secs = m.args[0] if m and m.args else DEFAULT_TIMEOUT_S
    return max(1, int(math.ceil(secs * h.slow_factor())))


@contextlib.contextmanager
def _alarm(item, phase):
    secs = _limit(item)

    def on_alarm(signum, frame):
        raise PhaseTimeout(f"{item.nodeid}: {phase} took longer than {secs} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(secs)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _alarm(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _alarm(item, "test"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _alarm(item, "teardown"):
        yield


def pytest_sessionfinish(session, exitstatus):
    h.kill_leftovers()


def pytest_report_header(config):
    return [f"slbd build: {h.build_dir()} (sanitizers: {'yes' if h.is_sanitized() else 'no'})"]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path):
    """A fresh directory for this test's state dirs, logs and recordings."""
    return tmp_path


@pytest.fixture
def backend(workdir):
    """Factory: backend("a", mode="tcp", proxy_protocol=False, delay_ms=0) starts an
    echo-backend on a free port and returns it once it printed "ready". All are stopped after
    the test (after slbd's checks, since slbd depends on this fixture)."""
    started = []

    def make(name, mode="tcp", **kw):
        b = h.EchoBackend(workdir, name, mode=mode, **kw)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def slbd_factory(workdir, backend):
    """Factory for extra daemons (own state dirs): slbd_factory(name=..., workers=...,
    state_dir=..., start=True). Each gets the same post-test checks as the main one."""
    made = []

    def make(start=True, **kw):
        kw.setdefault("name", f"slbd{len(made)}")
        d = h.Slbd(workdir, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    errors = []
    for d in made:
        try:
            d.teardown()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def slbd(request, slbd_factory):
    """slbd running in a fresh state dir with its admin API ready (.api is the client,
    .clients tracks client sockets). Options from @pytest.mark.slbd(workers=..., ...)."""
    m = request.node.get_closest_marker("slbd")
    opts = dict(m.kwargs) if m else {}
    opts.setdefault("workers", 2)
    return slbd_factory(name="slbd", **opts)


@pytest.fixture
def api(slbd):
    return slbd.api


@pytest.fixture
def clients(slbd):
    return slbd.clients
