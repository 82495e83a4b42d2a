"""Network namespaces for the partition suite: one per node, veth links between them.

``Net(nodes=3)`` makes, for a tag of its own (a few random hex digits, so that two runs
on one machine do not meet):

* a namespace per node, ``jkp-<tag>-n<i>``, whose node address ``10.<a>.<b>.<i>/32``
  sits on its loopback;
* a veth pair between every two nodes (the mesh), ``j<tag>m<i><j>`` in node i's
  namespace facing node j, with a /32 route to the peer's address through it;
* a veth pair from the root namespace (where the client runs) to each node,
  ``j<tag>c<i>`` (root side, holding the client's address ``10.<a>.<b>.100/32``) and
  ``j<tag>k<i>`` (node side).

A link is cut by setting both its ends down (netem is not available here) and healed
by setting them up again. ``remove()`` deletes the namespaces (which deletes every veth
with an end in them) and checks that nothing of the tag is left; it is safe to call
twice and after a half-made ``create()``.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import shutil
import subprocess

CLIENT_HOST = 100  # the client's address: 10.<a>.<b>.100


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def _route(verb: str, to: str, end: str, src: str, netns: str | None = None) -> None:
    """``ip route add|replace TO/32 dev END src SRC``: a host route over one link."""
    _ip("route", verb, f"{to}/32", "dev", end, "src", src, netns=netns)


def unavailable() -> str | None:
    """Why the partition suite cannot run here, or None when it can."""
    import os

    if os.geteuid() != 0:
        return "the partition suite needs root (network namespaces and veth links)"
    if shutil.which("ip") is None:
        return "the partition suite needs iproute2's `ip`"
    probe = f"jkp-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    try:
        _ip("link", "add", "jkprobe0", "type", "veth", "peer", "name", "jkprobe1", netns=probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"veth links do not work here: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Net:
    """The namespaces and links of one test (see the module's docstring)."""

    def __init__(self, nodes: int = 3) -> None:
        self.size = nodes
        self.tag = secrets.token_hex(2)
        b = int(self.tag, 16)
        self.prefix = f"10.{200 + b % 50}.{b % 251}"  # 10.200-249.x: private, ours
        self.namespaces = [f"jkp-{self.tag}-n{i}" for i in range(1, nodes + 1)]

    def address(self, node: int) -> str:
        """Node ``node``'s (1-based) address."""
        return f"{self.prefix}.{node}"

    @property
    def client_address(self) -> str:
        return f"{self.prefix}.{CLIENT_HOST}"

    def namespace(self, node: int) -> str:
        return self.namespaces[node - 1]

    def _mesh(self, i: int, j: int) -> str:
        return f"j{self.tag}m{i}{j}"

    def _client_end(self, i: int) -> str:
        return f"j{self.tag}c{i}"

    def _node_end(self, i: int) -> str:
        return f"j{self.tag}k{i}"

    def create(self) -> None:
        for i, ns in enumerate(self.namespaces, 1):
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", netns=ns)
            _ip("addr", "add", f"{self.address(i)}/32", "dev", "lo", netns=ns)
        for i, j in itertools.combinations(range(1, self.size + 1), 2):
            a, b = self._mesh(i, j), self._mesh(j, i)
            _ip(
                "link",
                "add",
                a,
                "netns",
                self.namespace(i),
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                self.namespace(j),
            )
            for end, here, there in ((a, i, j), (b, j, i)):
                ns = self.namespace(here)
                _ip("link", "set", end, "up", netns=ns)
                _route("add", self.address(there), end, self.address(here), netns=ns)
        for i in range(1, self.size + 1):
            root, node = self._client_end(i), self._node_end(i)
            ns = self.namespace(i)
            _ip("link", "add", root, "type", "veth", "peer", "name", node, "netns", ns)
            _ip("addr", "add", f"{self.client_address}/32", "dev", root)
            _ip("link", "set", root, "up")
            _route("replace", self.address(i), root, self.client_address)
            _ip("link", "set", node, "up", netns=ns)
            _route("add", self.client_address, node, self.address(i), netns=ns)

    # -- cutting and healing -------------------------------------------------------------

    def _set_mesh(self, node: int, state: str) -> None:
        for other in (n for n in range(1, self.size + 1) if n != node):
            for here, there in ((node, other), (other, node)):
                end, ns = self._mesh(here, there), self.namespace(here)
                _ip("link", "set", end, state, netns=ns)
                if state == "up":  # a link set down loses its routes: they come back
                    _route("replace", self.address(there), end, self.address(here), netns=ns)

    def isolate(self, node: int) -> None:
        """Cut ``node`` off from every other node (the client still reaches it)."""
        self._set_mesh(node, "down")

    def rejoin(self, node: int) -> None:
        """Undo ``isolate``."""
        self._set_mesh(node, "up")

    def heal(self) -> None:
        """Every mesh link up again."""
        for node in range(1, self.size + 1):
            self._set_mesh(node, "up")

    def link_states(self) -> dict[str, str]:
        """Every mesh end's state, by name (for a failure's message)."""
        states = {}
        for i, ns in enumerate(self.namespaces, 1):
            for line in _ip("-br", "link", netns=ns, check=False).splitlines():
                name = line.split()[0].split("@")[0]
                if name.startswith(f"j{self.tag}m{i}"):
                    states[name] = line.split()[1]
        return states

    # -- removal -------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """Namespaces and root links of this tag that still exist."""
        left = [ns for ns in _ip("netns", "list", check=False).split() if f"-{self.tag}-" in ns]
        for line in _ip("-br", "link", check=False).splitlines():
            name = line.split()[0].split("@")[0] if line.strip() else ""
            if name.startswith(f"j{self.tag}"):
                left.append(name)
        return left

    def remove(self) -> None:
        """Delete every namespace and link of this tag; raise if any is left."""
        for i in range(1, self.size + 1):
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", self._client_end(i), check=False)
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        left = self.leftovers()
        if left:
            raise RuntimeError(f"left behind after the partition test: {left}")
