"""Ports handed to test servers are reserved between their pick and their bind."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.cluster import redis as servers


@pytest.fixture
def few_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> range:
    ports = range(29990, 29993)
    monkeypatch.setattr(servers, "LISTEN_PORTS", ports)
    monkeypatch.setattr(servers, "PORT_RESERVATIONS", tmp_path / "ports")
    return ports


def test_a_port_is_never_handed_out_twice_before_it_is_bound(few_ports: range) -> None:
    """Nothing binds the ports here: only the reservations keep the picks apart."""
    taken = {servers.free_port() for _ in few_ports}
    assert taken == set(few_ports)
    with pytest.raises(RuntimeError, match="no free port"):
        servers.free_port()


def test_a_reservation_of_a_dead_process_or_an_old_one_is_taken_over(few_ports: range) -> None:
    reservations = servers.PORT_RESERVATIONS
    reservations.mkdir()
    (reservations / str(few_ports[0])).write_text("999999999")  # no such process
    for port in few_ports[1:]:
        (reservations / str(port)).write_text("1")  # pid 1 is alive
    assert servers.free_port() == few_ports[0]
    with pytest.raises(RuntimeError, match="no free port"):
        servers.free_port()
