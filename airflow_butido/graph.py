"""The package dependency graph: one node per (name, version), edges dependent -> dependency.

A dependency shared by several packages (a diamond) is one node; several versions of
one package are separate nodes. Conditions are evaluated against the build image and
the ``-E`` environment; with ``env=None`` conditions that read the environment stay
undecided and travel on their edge, for whoever knows the environment later.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_butido.errors import ResolveError
from airflow_butido.recipes.dependency import Condition

if TYPE_CHECKING:
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

Key = tuple[str, str]


def label(key: Key) -> str:
    return f"{key[0]} {key[1]}"


class Edge(NamedTuple):
    """``condition`` is set only when it is still undecided (it depends on the env).

    A named tuple rather than a dataclass: a large graph creates many of them.
    """

    dependent: Key
    dependency: Key
    kind: str  # "build" | "runtime"
    condition: Condition | None = None


class PackageGraph:
    """An acyclic package graph; iteration orders are deterministic (sorted by key)."""

    def __init__(
        self, packages: Mapping[Key, Package], edges: Iterable[Edge], roots: Sequence[Key]
    ) -> None:
        self.packages: dict[Key, Package] = {k: packages[k] for k in sorted(packages)}
        self.edges: tuple[Edge, ...] = tuple(edges)
        self.roots: tuple[Key, ...] = tuple(roots)
        self._out: dict[Key, list[Edge]] = {k: [] for k in self.packages}
        self._in: dict[Key, list[Edge]] = {k: [] for k in self.packages}
        for edge in self.edges:
            self._out[edge.dependent].append(edge)
            self._in[edge.dependency].append(edge)

    def __len__(self) -> int:
        return len(self.packages)

    def __contains__(self, key: object) -> bool:
        return key in self.packages

    def dependencies(self, key: Key) -> list[Edge]:
        """Direct dependencies, in the order the package declares them."""
        return list(self._out[key])

    def dependents(self, key: Key) -> list[Edge]:
        return sorted(self._in[key], key=lambda e: (e.dependent, e.kind))

    def transitive_dependencies(self, key: Key) -> frozenset[Key]:
        seen: set[Key] = set()
        stack = [e.dependency for e in self._out[key]]
        while stack:
            k = stack.pop()
            if k not in seen:
                seen.add(k)
                stack.extend(e.dependency for e in self._out[k])
        return frozenset(seen)

    def build_order(self) -> list[Key]:
        """Dependencies before dependents; among ready packages the smallest key first."""
        waiting = {k: len({e.dependency for e in self._out[k]}) for k in self.packages}
        ready = [k for k, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order: list[Key] = []
        while ready:
            key = heapq.heappop(ready)
            order.append(key)
            for dependent in sorted({e.dependent for e in self._in[key]}):
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    heapq.heappush(ready, dependent)
        return order

    def subgraph_keys(self, root: Key) -> list[Key]:
        return sorted({root} | self.transitive_dependencies(root))

    def to_json(self, root_key: Key) -> dict[str, Any]:
        """``{"root", "packages", "edges": [{"from", "to", "kind"}]}`` below ``root_key``."""
        keys = self.subgraph_keys(root_key)
        return {
            "root": label(root_key),
            "packages": [label(k) for k in keys],
            "edges": [
                {"from": label(e.dependent), "to": label(e.dependency), "kind": e.kind}
                for k in keys
                for e in self._out[k]
            ],
        }


def _missing_message(repo: Repository, dependent: Package, name: str, version: str) -> str:
    versions = repo.versions_of(name)
    existing = (
        f"existing versions of {name}: {', '.join(versions)}"
        if versions
        else f"there is no package named {name!r}"
    )
    return (
        f"{dependent.label} ({dependent.path}) depends on {name} {version}, "
        f"which is not in the repository; {existing}"
    )


def resolve(
    repo: Repository,
    roots: Sequence[Package],
    *,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
) -> PackageGraph:
    """The graph of ``roots`` and everything they depend on.

    ``image`` is the full image name (``in_image`` is false without one). With
    ``env=None`` environment conditions are kept undecided on their edges.
    Raises ``ResolveError`` for missing dependencies (all of them) or a cycle.
    """
    packages: dict[Key, Package] = {}
    edges: list[Edge] = []
    missing: list[str] = []
    stack: list[Package] = []
    lookup = repo.packages.get
    for root in roots:
        if root.key not in packages:
            packages[root.key] = root
            stack.append(root)
    stack.reverse()
    while stack:
        package = stack.pop()
        source = package.key
        seen: set[tuple[str, str, str]] = set()
        new: list[Package] = []
        for dep in package.dependencies:
            ident = (dep.name, dep.version, dep.kind)
            if ident in seen:
                continue
            seen.add(ident)
            pending = None
            cond = dep.condition
            if cond is not None:
                if not cond.evaluate_image(image):
                    continue
                if cond.depends_on_env:
                    if env is None:
                        pending = cond
                    elif not cond.evaluate_env(env):
                        continue
            target = lookup((dep.name, dep.version))
            if target is None:
                missing.append(_missing_message(repo, package, dep.name, dep.version))
                continue
            key = target.key
            edges.append(Edge(source, key, dep.kind, pending))
            if key not in packages:
                packages[key] = target
                new.append(target)
        if new:
            new.reverse()
            stack.extend(new)
    if missing:
        raise ResolveError("\n".join(dict.fromkeys(missing)))
    edges.sort(key=lambda e: e.dependent)  # stable: keeps declaration order per package
    graph = PackageGraph(packages, edges, [r.key for r in roots])
    cycle = find_cycle(graph)
    if cycle:
        raise ResolveError("dependency cycle: " + " -> ".join(label(k) for k in cycle))
    return graph


def find_cycle(graph: PackageGraph) -> list[Key] | None:
    """A cycle as a closed path (first key repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph.packages, white)
    for start in graph.packages:
        if colour[start] != white:
            continue
        path: list[Key] = [start]
        out = graph._out
        iters = [iter(out[start])]
        colour[start] = grey
        while iters:
            edge = next(iters[-1], None)
            if edge is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            nxt = edge.dependency
            if colour[nxt] == grey:
                return path[path.index(nxt) :] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(out[nxt]))
    return None
