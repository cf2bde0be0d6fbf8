"""The API reference is generated from docstrings: every public name must have one.

Public: what a module lists in ``__all__`` (or, without ``__all__``, its classes and
functions not named with a leading underscore), and the methods and properties of those
classes; in modules not named with a leading underscore. Aliases (re-exports) are checked
where they are defined.
"""

from __future__ import annotations

from pathlib import Path

import griffe

REPO = Path(__file__).resolve().parents[2]


def undocumented() -> list[str]:
    package = griffe.load(
        "prefect_agent_runs",
        search_paths=[str(REPO)],
        docstring_parser=griffe.Parser.google,
        resolve_aliases=False,
    )
    missing: list[str] = []

    def documented(obj: griffe.Object) -> bool:
        return bool(obj.docstring and obj.docstring.value.strip())

    def visit(obj: griffe.Object) -> None:
        exported = obj.exports if obj.is_module else None
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            assert isinstance(member, griffe.Object)
            if member.is_module:
                if not documented(member):
                    missing.append(member.path)
                visit(member)
                continue
            if exported is not None and name not in exported:
                continue
            if member.is_class or member.is_function:
                if not documented(member):
                    missing.append(member.path)
                if member.is_class:
                    visit(member)
            elif (
                member.is_attribute
                and obj.is_module
                and exported is not None
                and not documented(member)
            ):
                missing.append(member.path)

    visit(package)
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = undocumented()
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_every_docs_page_in_the_nav_exists() -> None:
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = _nav_pages(config["nav"])
    assert len(listed) > 15
    for page in listed:
        assert (REPO / "docs" / page).is_file(), page


def test_every_docs_page_is_in_the_nav() -> None:
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = set(str(p) for p in _nav_pages(config["nav"]))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert pages - listed == set()


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_every_backend_page_has_its_capability_matrix_and_status_mapping() -> None:
    from prefect_agent_runs.backends import registry

    for spec in registry.specs():
        if not spec.client.__module__.startswith("prefect_agent_runs.backends."):
            continue  # a backend defined by a test
        page = (REPO / "docs" / "backends" / f"{spec.name}.md").read_text()
        assert "\n## Capability matrix\n" in page, spec.name
        mapping = page.split("\n## Status mapping\n", 1)[1].split("\n## ", 1)[0]
        for raw in spec.status_map:
            assert f"`{raw}`" in mapping, (spec.name, raw)
