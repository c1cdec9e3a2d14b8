"""MkDocs hooks (``mkdocs.yml``: ``hooks:``), not part of the library: the figures join the documentation site.

The measuring scripts write their figures to ``notebooks/figures/`` at the repository root, outside the site's
``docs_dir`` (``syncsde/docs/``), and the pages link them as ``../../notebooks/figures/x.png``, the path that works
on GitHub. :func:`on_files` adds every figure to the site as ``notebooks/figures/x.png``, and
:func:`on_page_markdown` points the pages' links there, so ``mkdocs build --strict`` finds them. Standard library
only at import: the package imports every module of ``syncsde`` in its tests, with or without MkDocs installed.
"""

from __future__ import annotations

import re
from pathlib import Path

FIGURES = "notebooks/figures"
# a link target that leaves docs_dir (syncsde/docs/) for the repository root's notebooks/figures/
OUTSIDE = re.compile(r"\]\(\.\./\.\./" + re.escape(FIGURES) + "/")


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in sorted((_root(config) / FIGURES).glob("*.png")):
        files.append(
            File(
                f"{FIGURES}/{path.name}",
                src_dir=str(_root(config)),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    up = "../" * page.file.src_uri.count("/")  # pages in subfolders of docs_dir reach the site root through ../
    return OUTSIDE.sub(f"]({up}{FIGURES}/", markdown)
