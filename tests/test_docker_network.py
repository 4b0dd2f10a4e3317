"""The bridge gateway helper of the "remote engine" tests, on both layouts of `docker network inspect`."""

from __future__ import annotations

import pytest
from docker_network import bridge_gateway, interface_address

# Docker 24+: the IPAM config lists the gateway.
WITH_GATEWAY = {
    "Name": "bridge",
    "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]},
    "Options": {"com.docker.network.bridge.name": "docker0"},
}
# Debian 12's docker.io 20.10.24: only the subnet (as `docker network inspect bridge` shows on this machine).
SUBNET_ONLY = {
    "Name": "bridge",
    "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "172.17.0.0/16"}]},
    "Options": {"com.docker.network.bridge.default_bridge": "true", "com.docker.network.bridge.name": "docker0"},
}


def test_the_ipam_gateway_wins_when_listed():
    assert bridge_gateway(WITH_GATEWAY, lambda name: pytest.fail("the interface need not be read")) == "172.18.0.1"


def test_without_a_gateway_the_bridge_interface_address_is_read():
    asked = []
    assert bridge_gateway(SUBNET_ONLY, lambda name: asked.append(name) or "172.17.0.9") == "172.17.0.9"
    assert asked == ["docker0"]


def test_without_gateway_or_interface_the_subnet_first_host_is_used():
    assert bridge_gateway(SUBNET_ONLY, lambda name: None) == "172.17.0.1"
    ipv6_first = {"IPAM": {"Config": [{"Subnet": "fd00::/64"}, {"Subnet": "10.9.0.0/24"}]}}
    assert bridge_gateway(ipv6_first, lambda name: None) == "10.9.0.1"


def test_nothing_to_go_by_is_an_error_that_names_the_network():
    with pytest.raises(LookupError, match="'none'"):
        bridge_gateway({"Name": "none", "IPAM": {"Config": []}, "Options": {}})


def test_interface_address_reads_loopback_and_knows_no_missing_interface():
    assert interface_address("lo") == "127.0.0.1"
    assert interface_address("no-such-if0") is None
