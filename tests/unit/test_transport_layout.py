"""A transport is one folder under celeriac/transports/ (docs/transports.md): nothing outside it
imports a transport's modules or client library, and a new folder is found by its URL scheme
with nothing else changed."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import celeriac
from celeriac import Celeriac, transports
from celeriac.backends import create_result_store
from celeriac.brokers import create_broker
from celeriac.capabilities import keeps_results
from celeriac.exceptions import ImproperlyConfigured

PACKAGE = Path(celeriac.__file__).parent
CLIENT_LIBRARIES = {"redis", "pika", "aiormq", "psycopg", "psycopg_pool", "sqlite3"}


def _imported(module: str, is_package: bool, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree, relative ones resolved; for
    `from X import y` both X and X.y (y may be a module)."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, target
            yield from ((node.lineno, f"{target}.{alias.name}") for alias in node.names)


def _named_transport_strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String constants naming a transport module ("celeriac.transports.redis.broker:...")."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "celeriac.transports." in node.value:
            yield node.lineno, node.value


def _violations(module: str, is_package: bool, source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for line, name in _imported(module, is_package, tree):
        parts = name.split(".")
        if parts[:2] == ["celeriac", "transports"] and len(parts) > 2 and parts[2] in transports.discover():
            found.append(f"{module}:{line} imports {name}")
        elif parts[0] in CLIENT_LIBRARIES:
            found.append(f"{module}:{line} imports the client library {name}")
    found += [f"{module}:{line} names {text!r}" for line, text in _named_transport_strings(tree)]
    return found


def _modules_outside_transports() -> Iterator[tuple[str, bool, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        if relative.parts[:2] == ("celeriac", "transports") and len(relative.parts) > 3:
            continue  # inside a transport's folder: its own business
        is_package = path.name == "__init__.py"
        parts = relative.with_suffix("").parts
        yield ".".join(parts[:-1] if is_package else parts), is_package, path


def test_nothing_outside_the_transports_imports_one() -> None:
    checked = list(_modules_outside_transports())
    assert len(checked) > 50  # the walk found the package (a wrong path would pass vacuously)
    violations = [v for module, is_pkg, path in checked for v in _violations(module, is_pkg, path.read_text())]
    assert violations == [], "modules above the transports must ask celeriac.transports:\n" + "\n".join(violations)


def test_no_transport_imports_another() -> None:
    found = transports.discover()
    crossing = []
    for name in found:
        for path in sorted((PACKAGE / "transports" / name).rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            is_package = path.name == "__init__.py"
            module = ".".join(parts[:-1] if is_package else parts)
            for line, target in _imported(module, is_package, ast.parse(path.read_text())):
                other = target.split(".")
                if other[:2] == ["celeriac", "transports"] and len(other) > 2 and other[2] in found \
                        and other[2] != name:
                    crossing.append(f"{module}:{line} imports {target}")
    assert crossing == []


@pytest.mark.parametrize("source", [
    "from ..transports.redis import broker",
    "from ..transports.postgres.enqueue import transaction",
    "from .. import transports\nfrom ..transports import sqlite",
    "import celeriac.transports.amqp.wire",
    "def f():\n    import psycopg",
    "TABLE = {'redis': 'celeriac.transports.redis.broker:RedisBroker'}",
])
def test_the_check_sees_a_transport_import(source: str) -> None:
    assert _violations("celeriac.app.example", False, source)


def test_the_check_lets_the_registry_through() -> None:
    assert _violations("celeriac.app.example", False, "from .. import transports\n"
                       "from ..transports import Transport, discover") == []


def test_importing_celeriac_imports_no_client_library() -> None:
    code = ("import sys, celeriac, celeriac.transports as t; t.discover(); "
            f"print(sorted(m for m in {sorted(CLIENT_LIBRARIES)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_app_given_a_url_loads_that_transport_without_connecting() -> None:
    # The client library is imported where the app is configured, not by the first delay().
    code = textwrap.dedent("""
        import sys
        from celeriac import Celeriac
        from celeriac.exceptions import ImproperlyConfigured
        app = Celeriac("warm", broker="redis://127.0.0.1:1/0", backend="amqp://nobody@127.0.0.1:1//")
        print("redis" in sys.modules, "celeriac.transports.redis.broker" in sys.modules,
              "pika" in sys.modules, "psycopg" in sys.modules)
        app.conf.result_backend = "postgresql://u:secret@127.0.0.1:1/db"
        print("celeriac.transports.postgres.results" in sys.modules)
        odd = Celeriac("odd", broker="nope://somewhere")  # reported at first use, as before
        try:
            odd.broker
        except ImproperlyConfigured as exc:
            print("first use:", "nope://" in str(exc))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[:3] == ["True True False False", "True", "first use: True"], out.stderr


def test_every_declared_implementation_imports() -> None:
    found = transports.discover()
    assert {"sqlite", "redis", "amqp", "postgres", "memory"} <= set(found)
    for transport in found.values():
        for what in ("broker", "results", "async_broker", "async_results", "transaction", "canonical_url"):
            if getattr(transport, what) is not None:
                assert callable(transport.load(what)), (transport.name, what)


def test_no_scheme_belongs_to_two_transports() -> None:
    seen: dict[str, str] = {}
    for name, transport in transports.discover().items():
        for scheme in transport.schemes:
            assert scheme not in seen, f"{scheme}:// is declared by {seen[scheme]} and {name}"
            seen[scheme] = name


# --- a new transport: one folder, found by its scheme ---

_FAKE = '''
"""A transport that exists only in this test."""

from celeriac.transports import Transport

TRANSPORT = Transport(
    schemes=("{scheme}",),
    broker="celeriac.transports.{name}.broker:FakeBroker",
    results="celeriac.transports.{name}.results:FakeStore",
    canonical_url="celeriac.transports.{name}.broker:canonical",
    settings=("{name}_setting",),
)
'''

_FAKE_BROKER = '''
class FakeBroker:
    def __init__(self, url, options=None):
        self.url, self.options = url, options


def canonical(url):  # as the interface asks: settling a settled URL changes nothing
    return url if url.endswith("/settled") else url.rstrip("/") + "/settled"
'''

_FAKE_STORE = '''
class FakeStore:
    def __init__(self, url, **kwargs):
        self.url, self.kwargs = url, kwargs
'''


@pytest.fixture
def fake_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A transport package dropped into celeriac.transports (a folder on its search path)."""
    name = f"fake{uuid.uuid4().hex[:8]}"
    scheme = name + "+x"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent(_FAKE.format(name=name, scheme=scheme)))
    (folder / "broker.py").write_text(_FAKE_BROKER)
    (folder / "results.py").write_text(_FAKE_STORE)
    monkeypatch.setattr(transports, "__path__", [*transports.__path__, str(tmp_path)])
    transports.forget()
    try:
        yield name, scheme
    finally:
        transports.forget()
        for module in [m for m in sys.modules if m.startswith(f"celeriac.transports.{name}")]:
            del sys.modules[module]


def test_a_new_transport_folder_is_found_by_its_scheme(fake_transport: tuple[str, str]) -> None:
    name, scheme = fake_transport
    assert transports.discover()[name].schemes == (scheme,)
    broker = create_broker(f"{scheme}://host/1", {"a": 1})
    assert type(broker).__module__ == f"celeriac.transports.{name}.broker"
    assert (broker.url, broker.options) == (f"{scheme}://host/1", {"a": 1})  # type: ignore[attr-defined]
    store = create_result_store(f"{scheme}://host/1")
    assert type(store).__name__ == "FakeStore"
    assert keeps_results(f"{scheme}://host/1")  # it keeps results, so it is the default result store
    app = Celeriac("fake", broker=f"{scheme}://host/1", set_as_current=False)
    app.conf.update({f"{name}_setting": "from the app"})
    assert app.broker_url == f"{scheme}://host/1/settled"  # its own canonical_url, nothing else asked
    assert app.result_backend_url == app.broker_url
    assert type(app.broker).__name__ == "FakeBroker"
    assert app.broker.options[f"{name}_setting"] == "from the app"  # type: ignore[attr-defined]
    assert app.backend.kwargs["options"][f"{name}_setting"] == "from the app"  # type: ignore[attr-defined]


def test_without_the_folder_its_scheme_is_unknown(fake_transport: tuple[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    name, scheme = fake_transport
    with pytest.raises(ImproperlyConfigured, match=f"supported schemes are .*{scheme}://".replace("+", r"\+")):
        create_broker("nope://x")
    monkeypatch.setattr(transports, "__path__", transports.__path__[:-1])
    transports.forget()
    assert name not in transports.discover()
    with pytest.raises(ImproperlyConfigured, match="unsupported broker URL") as raised:
        create_broker(f"{scheme}://host/1")
    supported = str(raised.value).split("supported schemes are", 1)[1]
    assert "sqlite://" in supported and f"{scheme}://" not in supported


def test_a_folder_that_declares_nothing_is_an_error_naming_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"empty{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text('"""Declares no TRANSPORT."""\n')
    monkeypatch.setattr(transports, "__path__", [*transports.__path__, str(tmp_path)])
    transports.forget()
    try:
        with pytest.raises(ImproperlyConfigured, match=f"celeriac.transports.{name} declares no TRANSPORT"):
            transports.discover()
    finally:
        transports.forget()
        sys.modules.pop(f"celeriac.transports.{name}", None)
