"""Write one API page per module of pyro_vae/ when the manual is built (mkdocs-gen-files runs this file), and
put the tutorial notebook (examples/tutorial.ipynb, which CI runs with nbmake) among the pages, where mkdocs-jupyter
renders it as it is stored.

The pages are generated, not kept in the repository: a module added, moved or split gets its page at the
next build without any edit here. Each page holds one ``::: module`` directive, which mkdocstrings fills
from the module's docstrings; ``reference/SUMMARY.md`` is the section's navigation (mkdocs-literate-nav).
"""
from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyro_vae"


def modules(package: Path):
    """(dotted name, page path) of every module of the package, in path order; ``__main__`` is left out."""
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = relative.parts
        # only what Python can import as part of the package: every folder on the way is a package
        if any(not (ROOT.joinpath(*parts[:depth]) / "__init__.py").exists() for depth in range(1, len(parts))):
            continue
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            yield parts[:-1], Path(*parts[:-1], "index.md")
        else:
            yield parts, Path(*parts).with_suffix(".md")


nav = mkdocs_gen_files.Nav()
for parts, page in modules(PACKAGE):
    name = ".".join(parts)
    nav[parts] = page.as_posix()
    with mkdocs_gen_files.open(Path("reference", page), "w") as file:
        file.write(f"# `{name}`\n\n::: {name}\n")
with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as file:
    file.writelines(nav.build_literate_nav())
with mkdocs_gen_files.open("tutorial.ipynb", "w") as file:
    file.write((ROOT / "examples" / "tutorial.ipynb").read_text())
