"""The README documents every setting the worker reads, with its real default."""

from __future__ import annotations

from pathlib import Path

from streamapp.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in README.splitlines()
            if line.startswith("| `STREAMAPP_")}
    for name, default, _ in Settings.describe():
        assert name in rows, f"{name} is not documented in README.md"
        if default and default != "None":
            shown = {"True": "true", "False": "false"}.get(default, default.removesuffix(".0"))
            assert f"`{shown}`" in rows[name], f"{name}: README does not show default {default}"
    documented = set(rows)
    assert documented == {n for n, _, _ in Settings.describe()}, "README lists unknown settings"
