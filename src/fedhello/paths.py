"""Telling a local path from a Hugging Face hub name.

`model.name_or_path` and `data.path` take either. A hub id is `name` or `owner/name`: no leading `.`, `/` or
`~`, at most one `/`, no file extension. A value that cannot be one, or whose first folder exists here, is a
local path; when it does not exist it is refused at once as "not found" -- asking the hub for `data/train.csv`
only ends, after a minute of retries, in a message about the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedhello.errors import ConfigError

# suffixes of data and model files; a hub id never ends in one ("Qwen2.5-0.5B" ends in ".5B", which is no file type)
FILE_SUFFIXES = frozenset(
    {
        ".csv",
        ".tsv",
        ".txt",
        ".json",
        ".jsonl",
        ".parquet",
        ".arrow",
        ".zip",
        ".gz",
        ".tar",
        ".yaml",
        ".yml",
        ".bin",
        ".safetensors",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
        ".xlsx",
    }
)


def looks_local(name: str) -> bool:
    """Whether `name` can only be a local path: it starts with `.`, `/` or `~` (or a drive letter), has more
    than one `/`, a backslash or a file suffix, or its first folder exists in the current folder."""
    if name.startswith((".", "/", "~", "\\")) or (name[:1].isalpha() and name[1:3] in (":/", ":\\")):
        return True
    if name.count("/") > 1 or "\\" in name or (os.sep != "/" and os.sep in name):
        return True
    if Path(name).suffix.lower() in FILE_SUFFIXES:
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).is_dir()


def local_path(name: str) -> Path:
    """`name` as a path, `~` expanded."""
    return Path(name).expanduser()


def check_local(field: str, name: str, what: str) -> None:
    """Refuse, in one line, a `name` that looks local (`looks_local`) but does not exist: `field` and the path
    (and the folder it was looked for in) are named, so a typo is found at once instead of asked of the hub."""
    if looks_local(name) and not local_path(name).exists():
        absolute = local_path(name).absolute()
        where = f" (looked for {absolute})" if str(absolute) != name else ""
        raise ConfigError(
            field,
            f"{what} '{name}' not found{where}",
            "check the path (relative paths start from the current folder), or give a hub name such as owner/name",
        )
