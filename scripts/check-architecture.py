#!/usr/bin/env python3
"""Checks the architecture rules of docs/architecture.md on src/.

1. No import cycles between files. An edge A -> B means a file A names an
   item that file B defines (re-exports are followed to the defining file;
   `mod` declarations are not imports).
2. Each layer imports only the layers below it (see LAYERS).
3. Only src/http (and the wiring in lib.rs/main.rs) knows HTTP: no file
   elsewhere names warp, hyper, the http crate or a `StatusCode`.
4. No file under src/ is longer than MAX_LINES.

Exits 1 and prints every violation; prints a summary line otherwise.
Run it with `python3 scripts/check-architecture.py` (make lint runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MAX_LINES = 600

# Layer of a module (first path segment under src/), lowest first. A file
# may import its own layer and any layer listed before it.
LAYERS = [
    {"domain", "metrics", "net", "secret"},
    {"store", "auth", "revocation", "limits", "config"},
    {"polling", "topics", "fanout", "streams", "rooms", "cluster", "status", "webhooks"},
    {"http"},
    {"lib", "main"},
]
HTTP_ONLY = re.compile(r"\b(warp::|hyper::|hyper_util::|http::|StatusCode\b|http_body)")
HTTP_ALLOWED = {"http", "lib", "main"}

ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:fn|struct|enum|trait|type|const|static|mod|union|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)",
    re.M,
)
USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M | re.S)
INLINE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def module_path(path: Path) -> tuple[str, ...]:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"]:
        return ()
    return tuple(parts)


def strip(text: str) -> str:
    """Source without comments, strings and the trailing test module."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: cut.start()] if cut else text


def expand(tree: str) -> list[tuple[list[str], str]]:
    """`a::{b, c::d as e}` -> [(path, alias)] for every leaf of a use tree."""
    tree = re.sub(r"\s+", "", tree)
    out: list[tuple[list[str], str]] = []

    def walk(prefix: list[str], rest: str) -> None:
        if "{" not in rest:
            for piece in split_top(rest):
                if not piece:
                    continue
                name, _, alias = piece.partition("as")
                parts = prefix + [p for p in name.split("::") if p]
                out.append((parts, alias or (parts[-1] if parts else "")))
            return
        head, _, body = rest.partition("{")
        body = body[: body.rfind("}")]
        base = prefix + [p for p in head.split("::") if p]
        for piece in split_top(body):
            if "{" in piece:
                walk(base, piece)
            elif piece:
                walk(base, piece)

    walk([], tree)
    return out


def split_top(text: str) -> list[str]:
    depth, start, pieces = 0, 0, []
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


class Crate:
    def __init__(self) -> None:
        self.files: dict[tuple[str, ...], Path] = {}
        self.items: dict[tuple[str, ...], set[str]] = {}
        self.reexports: dict[tuple[str, ...], dict[str, list[str]]] = {}
        self.globs: dict[tuple[str, ...], list[list[str]]] = {}
        self.text: dict[tuple[str, ...], str] = {}
        for path in sorted(SRC.rglob("*.rs")):
            if path.name == "main.rs":
                continue
            module = module_path(path)
            self.files[module] = path
            text = strip(path.read_text())
            self.text[module] = text
            self.items[module] = set(ITEM.findall(text))
        for module, text in self.text.items():
            exports: dict[str, list[str]] = {}
            globs: list[list[str]] = []
            for vis, tree in USE.findall(text):
                if not vis:
                    continue
                for parts, alias in expand(tree):
                    absolute = self.absolute(module, parts)
                    if absolute is None:
                        continue
                    if parts[-1] == "*":
                        globs.append(absolute[:-1])
                    else:
                        exports[alias] = absolute
            self.reexports[module] = exports
            self.globs[module] = globs

    def absolute(self, module: tuple[str, ...], parts: list[str]) -> list[str] | None:
        if not parts:
            return None
        base = list(module)
        if parts[0] == "crate":
            return parts[1:]
        if parts[0] in ("super", "self"):
            rest = list(parts)
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
            return base + rest
        if (tuple(base) + (parts[0],)) in self.files:
            return base + parts
        return None  # an external crate

    def defining_file(self, parts: list[str], depth: int = 0) -> tuple[str, ...] | None:
        """The module whose file defines the item a path names."""
        if depth > 20:
            return None
        # The longest prefix that is a file-backed module.
        for cut in range(len(parts), -1, -1):
            module = tuple(parts[:cut])
            if module in self.files:
                break
        else:
            return None
        rest = parts[cut:]
        if not rest:
            return module
        name = rest[0]
        if name in self.items[module]:
            return module
        target = self.reexports[module].get(name)
        if target is not None:
            return self.defining_file(target + rest[1:], depth + 1)
        for glob in self.globs[module]:
            found = self.defining_file(glob + rest, depth + 1)
            if found is not None:
                return found
        return module

    def edges(self) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
        graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in self.files}
        for module, text in self.text.items():
            paths: list[list[str]] = []
            for _vis, tree in USE.findall(text):
                for parts, _alias in expand(tree):
                    if parts and parts[-1] not in ("*", "self"):
                        paths.append(parts)
                    elif parts and parts[-1] == "self":
                        paths.append(parts[:-1])
            body = USE.sub("", text)
            for head, tail in INLINE.findall(body):
                paths.append([head] + [p for p in tail.split("::") if p])
            for parts in paths:
                absolute = self.absolute(module, parts)
                if absolute is None:
                    continue
                target = self.defining_file(absolute)
                if target is not None and target != module:
                    graph[module].add(target)
        return graph


def cycles(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[tuple[str, ...]]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found: list = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(node) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: tuple[str, ...]) -> int:
    top = module[0] if module else "lib"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return len(LAYERS)


def name(module: tuple[str, ...]) -> str:
    return str(Path("src") / Path(*module)) if module else "src/lib.rs"


def main() -> int:
    crate = Crate()
    graph = crate.edges()
    problems: list[str] = []
    for component in cycles(graph):
        inner = [f"{name(a)} -> {name(b)}" for a in component for b in sorted(graph[a]) if b in component]
        problems.append("import cycle among " + ", ".join(name(m) for m in component) + ":\n    " + "\n    ".join(inner))
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                problems.append(f"layering: {name(module)} (layer {layer_of(module)}) imports {name(target)} (layer {layer_of(target)})")
    for module, path in sorted(crate.files.items()):
        top = module[0] if module else "lib"
        if top not in HTTP_ALLOWED:
            for hit in sorted(set(HTTP_ONLY.findall(crate.text[module]))):
                problems.append(f"http outside src/http: {path.relative_to(ROOT)} names `{hit}`")
    for path in sorted(SRC.rglob("*.rs")):
        lines = sum(1 for _ in path.open())
        if lines > MAX_LINES:
            problems.append(f"size: {path.relative_to(ROOT)} has {lines} lines (more than {MAX_LINES})")
    if problems:
        print("\n".join(problems))
        print(f"check-architecture: {len(problems)} problem(s)")
        return 1
    edges = sum(len(t) for t in graph.values())
    print(f"check-architecture: {len(graph)} files, {edges} imports, no cycles, layers respected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
