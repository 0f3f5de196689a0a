"""``hub.py``: the hub probe answers within its timeout and honours the offline switches
(probed against sockets on this machine's loopback only)."""

from __future__ import annotations

import socket

import pytest

from compbench import hub


@pytest.mark.parametrize("name", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_switches_mean_unreachable_without_probing(monkeypatch, name):
    for other in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(other, raising=False)
    assert not hub.offline_requested()
    monkeypatch.setenv(name, "1")
    monkeypatch.setattr(hub, "host_reachable", lambda *a, **k: pytest.fail("probed although offline"))
    assert hub.offline_requested() and not hub.hub_reachable()


def test_a_listening_loopback_port_is_reachable_and_a_closed_one_is_not():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert hub.host_reachable(f"http://127.0.0.1:{port}", timeout=2.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]  # bound, never listening: connections are refused
        assert not hub.host_reachable(f"http://127.0.0.1:{free}", timeout=2.0)
