"""Per-name addresses for an enforced session's DNS: a connection to one is to that name.

An enforced sandbox resolves every name through guardproxy, which never looks the
name up: it answers with an address of its own from a reserved network, one per name,
and maps a connection to that address back to the name. The guard then connects
upstream by name, so the agent's DNS can neither leak nor lie about where a
connection goes. The rootless helper hands out loopback addresses (its namespace
routes everything to loopback); the root-mode guard hands out addresses from the
benchmarking network (RFC 2544), which the sandbox routes to its veth pair.

A leaf module: the in-sandbox helper imports it, and so does the proxy.
"""

from __future__ import annotations

import ipaddress

ROOTLESS_NETWORK = ipaddress.IPv4Network("127.209.0.0/16")
ROOT_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")


class NameAddresses:
    """The name <-> address table of one sandbox's DNS (lives as long as it).

    When the network is used up, the oldest addresses are given out again: a
    connection to one is then to its newest name.
    """

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._by_name: dict[str, ipaddress.IPv4Address] = {}
        self._by_address: dict[ipaddress.IPv4Address, str] = {}
        self._next = int(network.network_address) + 1

    def address(self, name: str) -> ipaddress.IPv4Address:
        key = name.rstrip(".").lower()
        found = self._by_name.get(key)
        if found is None:
            if self._next >= int(self.network.broadcast_address):
                self._next = int(self.network.network_address) + 1  # reuse the oldest
            found = ipaddress.IPv4Address(self._next)
            self._next += 1
            previous = self._by_address.pop(found, None)
            if previous is not None:
                del self._by_name[previous]
            self._by_name[key] = found
            self._by_address[found] = key
        return found

    def name(self, address: str) -> str | None:
        """The name ``address`` stands for; None if it was never handed out."""
        try:
            return self._by_address.get(ipaddress.IPv4Address(address))
        except ValueError:
            return None

    def covers(self, address: str) -> bool:
        """Whether ``address`` is in this table's network (handed out or not)."""
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


__all__ = ["ROOTLESS_NETWORK", "ROOT_NETWORK", "NameAddresses"]
