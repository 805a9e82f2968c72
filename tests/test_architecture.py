"""The layout's rules, checked: no first-party import cycle; the agent imports no WebRTC (aiohttp
only in its one HTTP client for remote engines, PyAV only in its resampler); agent/runtime/ sits
below the brains, voices and tools; nothing imports the benchmark; every event type is
documented in the README and handled by the page; BENCHMARKS.md is generated text only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from agent.events import EVENTS, event_table

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "signaling", "bench")
HTTP_CLIENT_MODULE = "agent.runtime.openai_api"  # the one agent module that may import aiohttp (a client)
RESAMPLER_MODULE = "agent.pipeline.audio"  # the one agent module that may import av: StreamResampler is PyAV's


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found["run"] = ROOT / "run.py"
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules `name` imports (anywhere in the file, lazy imports included), plus the
    parent packages each import executes."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # a submodule, or a name defined by the module `base`
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else base)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}
    found = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            # A module's own ancestor packages are initialised before it runs: no edge to them
            # unless it imports them by name.
            implicit = candidate in ancestors and candidate != target
            if candidate in modules and candidate != name and not implicit:
                found.add(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_first_party_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_agent_imports_no_webrtc_and_nothing_imports_the_benchmark():
    modules = first_party_modules()
    for name, path in modules.items():
        source = path.read_text()
        if name.startswith("agent"):
            assert not re.search(r"^\s*(from|import) (aiortc|aioice|signaling|bench)\b", source, re.M), name
            # aiohttp only as the HTTP client of the OpenAI-compatible engines, in one module
            if name != HTTP_CLIENT_MODULE:
                assert not re.search(r"^\s*(from|import) aiohttp\b", source, re.M), name
            # PyAV for resampling only; what handles aiortc's frames belongs to signaling/
            if name != RESAMPLER_MODULE:
                assert not re.search(r"^\s*(from|import) av\b", source, re.M), name
        if name.startswith(("agent", "signaling")):
            assert not re.search(r"^\s*(from|import) bench\b", source, re.M), name
            # and keeps no helper of the benchmark's (bench_config lives in bench/runner.py)
            assert not re.search(r"^(def|class) _?bench", source, re.M | re.I), name


def test_runtime_sits_below_the_brains_voices_and_tools():
    """agent/runtime/ runs models for the brains and voices (threads, the scheduler, model files,
    the engines' HTTP client): it imports none of them, nor the tools (a `ToolCall` an engine
    yields is `agent.runtime.tool_call`'s, re-exported by `agent.tools`)."""
    above = ("agent.brains", "agent.voices", "agent.tools")
    for name, imported in import_graph().items():
        if name == "agent.runtime" or name.startswith("agent.runtime."):
            wrong = sorted(m for m in imported if m.startswith(above))
            assert not wrong, f"{name} imports {wrong}"


def test_readme_event_table_is_generated_from_the_event_types():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- events:begin -->\n", 1)[1].split("\n<!-- events:end -->", 1)[0]
    assert table == event_table(), "README's event table is stale: paste event_table() from agent/events.py"


def test_benchmarks_md_is_written_from_the_committed_results():
    """BENCHMARKS.md (and each run's page beside its results) is exactly what bench/standard.py
    writes from the result files in docs/benchmarks/: no text in it that the generator did not write."""
    from bench.report import markdown
    from bench.standard import RESULTS, RUNS, benchmarks_markdown, load_bench_run

    how = ("regenerate it with `./dev.sh bench --report`; after changing only how it is written: "
           "python -c \"from bench.standard import benchmarks_markdown; "
           "open('BENCHMARKS.md', 'w').write(benchmarks_markdown())\"")
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks_markdown(RESULTS), "BENCHMARKS.md is not generated: " + how
    for stem, _ in RUNS:
        page = markdown(load_bench_run(RESULTS / f"{stem}.json"), f"{stem}.png", heading="#")
        assert (RESULTS / f"{stem}.md").read_text() == page, f"docs/benchmarks/{stem}.md is not generated: " + how


def test_the_web_page_handles_every_event_type():
    app_js = (ROOT / "web" / "app.js").read_text()
    handled = set(re.findall(r'case "([a-z_]+)":', app_js))
    assert {cls.type for cls in EVENTS} <= handled, {cls.type for cls in EVENTS} - handled


ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
DOCUMENTED_PACKAGES = ("agent", "signaling")


def named_paths(text: str) -> set[str]:
    """Repository paths the text names in backticks (`agent/session/session.py`, `bench/`)."""
    found = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split(":")[0].rstrip(".,")
        if "/" in token and re.fullmatch(r"[\w./-]+", token) and token.split("/")[0] in {
                "agent", "signaling", "bench", "web", "tests", "docs", "config", "scripts", "examples"}:
            found.add(token)
    return found


def test_every_file_architecture_md_names_exists():
    missing = sorted(p for p in named_paths(ARCHITECTURE.read_text()) if not (ROOT / p).exists())
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_architecture_md_names_every_module_of_the_agent_and_signaling():
    named = named_paths(ARCHITECTURE.read_text())
    modules = [p.relative_to(ROOT).as_posix() for pkg in DOCUMENTED_PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts]
    # An __init__.py that only re-exports (or is empty) is its package; one with code of its own
    # (a registry) is a module to name.
    unnamed = [m for m in modules
               if m not in named and not (m.endswith("__init__.py") and not has_code((ROOT / m).read_text()))]
    assert not unnamed, f"docs/ARCHITECTURE.md does not name: {unnamed}"


def has_code(source: str) -> bool:
    """Does a module define anything (beyond a docstring, imports and __all__)?"""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]:
            continue
        return True
    return False
