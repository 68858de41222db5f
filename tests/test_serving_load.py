"""The loopback load test (``benchmarks/serve_load.py``): failed requests are counted by type and kept out of the
latency figures, bounds are enforced, the server's RSS is sampled, and a small run against a real server is clean.
"""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip(
    "openenv.core.env_server.http_server",
    reason="openenv-core is not installed (optional extra 'serve': pip install 'aligngym[serve]')",
)

from aligngym.benchmarks import serve_load
from aligngym.envs.serving import (
    ServerRefusedError,
    ServerThread,
    SessionLostError,
    create_server_app,
)


def test_error_types_are_short_stable_names():
    assert serve_load._error_type(ServerRefusedError("x", status_code=503)) == "refused_http_503"
    assert serve_load._error_type(SessionLostError("x")) == "session_lost"
    assert serve_load._error_type(TimeoutError()) == "timeout"
    assert serve_load._error_type(ConnectionError("Failed to connect")) == "connect_failed"
    err = RuntimeError("Server error: boom (code: EXECUTION_ERROR)")
    assert serve_load._error_type(err) == "server_error_execution_error"
    assert serve_load._error_type(KeyError("k")) == "KeyError"


def test_failed_requests_are_counted_by_type_and_never_timed():
    """Against a server with a cap of 2, 3 sessions: one is refused; its requests are errors, not latencies."""
    with ServerThread(create_server_app("aligngym/Sentiment-Sequence-v0", max_concurrent_envs=2)) as srv:
        figures = asyncio.run(serve_load._run(srv.url, 3, 4, 8, 60.0, 8, raw=True))
    assert figures["errors_by_type"] == {"connect_refused_http_503": 1}
    assert figures["ok_requests"] == 2 * 5  # two sessions x (reset + 4 steps); the refused one timed nothing
    assert figures["p50_ms"] > 0 and figures["requests_per_s"] > 0


def test_rss_sampler_reads_this_process():
    sampler = serve_load.RssSampler(os.getpid(), interval_s=0.05).start()
    sampler.stop()
    assert sampler.peak_mb() > 10 and sampler.tree_cpu_s() > 0


def test_bounds_are_enforced():
    with pytest.raises(SystemExit):
        serve_load.main(["--sessions", str(serve_load.MAX_SESSIONS + 1)])
    with pytest.raises(SystemExit):
        serve_load.main(["--duration", "10", "--max-seconds", "5"])


@pytest.mark.slow
def test_small_run_against_a_two_worker_server_is_clean(tmp_path):
    out = tmp_path / "load.json"
    figures = serve_load.main(
        ["--sessions", "8", "--steps", "5", "--workers", "2", "--max-seconds", "120", "--json", str(out)]
    )
    assert figures["errors"] == 0 and figures["ok_requests"] == 8 * 6
    assert figures["server_peak_rss_mb"] > 50 and out.exists()
