"""Named prune-while-distilling recipes as ordinary `prune` keys.

A preset is only a label: `prune.recipe: sparsebert` requires the keys below to hold these values
(the schema says which do not), so every setting is in params.yaml and shows in `dvc params diff`.
Write a preset's keys into a params file with

    python -m pipeline.training.recipes sparsebert [params.yaml]

Step counts and learning rates are left to the profile: they depend on the data size. Sources and
what each recipe does: docs/recipes.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pipeline.core.presets import RECIPES


def _yaml(v) -> str:
    return {True: "true", False: "false"}.get(v, str(v)) if isinstance(v, bool) else str(v)


def apply(name: str, params_path: str = "params.yaml") -> list[str]:
    """Set `prune.recipe` and the preset's keys in place, line by line, so comments stay."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)}")
    path = Path(params_path)
    lines, inside, changed, end = path.read_text().splitlines(), False, [], None
    want = {"recipe": name, **{k: _yaml(v) for k, v in RECIPES[name].items()}}
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            inside = line.startswith("prune:")
        m = re.match(r"^(  )(\w+):(\s*)([^#\n]*?)(\s*#.*)?$", line) if inside else None
        if inside and line.strip():
            end = i
        if m and m.group(2) in want:
            lines[i] = f"{m.group(1)}{m.group(2)}: {want[m.group(2)]}{m.group(5) or ''}"
            changed.append(m.group(2))
    if end is None:
        raise KeyError(f"{path} has no prune section to set recipe {name!r} in")
    missing = [k for k in want if k not in changed]  # keys the file leaves to their defaults
    lines[end + 1 : end + 1] = [f"  {k}: {want[k]}" for k in missing]
    changed += missing
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return changed


if __name__ == "__main__":
    print("set:", ", ".join(apply(*sys.argv[1:])))
