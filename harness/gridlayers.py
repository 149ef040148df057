"""The override layers of a grid, in the order they apply. Each later layer wins over
the earlier ones for the keys it sets:

1. sections: `--section NAME` merges the section over the grid's top level (the keys
   in MERGED_IN_SECTIONS are merged one level deep, the others replaced)
   -> apply_section, on the parsed document, before validation;
2. hparams: `hparams.<method>` gives a distiller's or pruner's defaults, under the
   options written in the method's own entry -> method_options, before option lists
   are swept (so a list in hparams sweeps too, and its keys are "shown");
3. method overrides: `overrides.<pruner>` then `overrides.<distiller>` (budget, train)
   over the grid's budget and train; a pruner's `distiller:` over its cells'
   distiller hyper-parameters;
4. model overrides: `overrides.<student model>` (budget, train, hparams of the
   distiller) over all of the above; an unset `budget.teacher_epochs` becomes the
   grid's `budget.epochs`;
5. teacher_train: the teacher's regime is the grid's `train`, then `teacher_train`,
   then `overrides.<teacher model>.train`, then `overrides.<teacher model>.teacher_train`.

Layers 3 to 5 are `layer_cell`, applied to each combination of the grid. Changing
this order changes cells' configs and therefore their ids (tests/test_grid_ids.py).

One of the three stages of loading a grid (see harness.grid.load_grid): parse
(harness.gridfile), layer (here), validate (harness.gridcheck).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError, closest
from .gridfile import Located

#: top-level keys whose mappings a section merges into (others it replaces)
MERGED_IN_SECTIONS = ("budget", "train", "teacher_train", "energy", "hparams", "overrides")


def apply_section(doc: Located, section: str | None) -> None:
    """Layer 1: merge the section `section` of the grid over its top level (in place), and point
    the section's line numbers at the merged keys, so errors name the section's lines."""
    data = doc.data
    sections = data.pop("sections", None) if isinstance(data, dict) else None
    if section is None:
        return
    if not isinstance(sections, dict) or section not in sections:
        known = ", ".join(sorted(sections)) if isinstance(sections, dict) else "none"
        raise UsageError(
            f"{doc.path}:1: no section {section!r} in this grid (sections: {known})"
            + (closest(section, sections) if isinstance(sections, dict) else "")
        )
    sec = sections[section]
    if not isinstance(sec, dict):
        raise UsageError(f"{doc.where('sections', section)}: expected a mapping of grid keys")
    for key, value in sec.items():
        if key == "sections":
            raise UsageError(f"{doc.where('sections', section, key)}: sections do not nest")
        base = data.get(key)
        if key in MERGED_IN_SECTIONS and isinstance(base, dict) and isinstance(value, dict):
            data[key] = {**base, **value}
        else:
            data[key] = value
    data.setdefault("name", None)
    if "name" not in sec:
        data["name"] = f"{data['name'] or Path(doc.path).stem}-{section}"
    prefix = ("sections", section)
    for path, line in list(doc.lines.items()):
        if path[:2] == prefix and len(path) > 2:
            doc.lines[path[2:]] = line


def method_options(hparams: dict[str, dict[str, Any]], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Layer 2: the grid's `hparams` for method `name`, under its entry's own options."""
    return {**hparams.get(name, {}), **options}


def layer_cell(
    budget: dict[str, Any],
    train: dict[str, Any],
    teacher_train: dict[str, Any],
    method_overrides: dict[str, dict[str, dict[str, Any]]],
    model_overrides: dict[str, dict[str, Any]],
    parts: dict[str, dict[str, Any]],
    registry: Any,
) -> dict[str, dict[str, Any]]:
    """Layers 3 to 5 for one combination: its budget, train, teacher_train and
    distiller (with its final hyper-parameters).

    budget, train: the grid's (every default filled in); teacher_train: the grid's as
    given (only the keys it sets); method_overrides / model_overrides: the checked
    `overrides` by method and by model name; parts: the combination's "teacher",
    "student", "distiller" and "pruner" entries; registry: resolves the distiller.
    """
    teacher, student, dist, prune = (parts[k] for k in ("teacher", "student", "distiller", "pruner"))
    b, t = dict(budget), dict(train)
    for m in (prune["name"], dist["name"]):  # layer 3: pruner's, then distiller's
        if m in method_overrides:
            b.update(method_overrides[m]["budget"])
            t.update(method_overrides[m]["train"])
    m_over = model_overrides.get(student["model"], {})  # layer 4: the student model's
    b.update(m_over.get("budget", {}))
    t.update(m_over.get("train", {}))
    if b["teacher_epochs"] is None:
        b["teacher_epochs"] = budget["epochs"]
    t_over = model_overrides.get(teacher["model"], {})  # layer 5: the teacher's regime
    teacher_t = {
        **train,
        **teacher_train,
        **t_over.get("train", {}),
        **t_over.get("teacher_train", {}),
    }
    cls = registry.get("distiller", dist["name"])
    d_over = {  # layer 3 (a pruner's distiller settings), then layer 4 (the student's)
        k: v
        for k, v in method_overrides.get(prune["name"], {}).get("distiller", {}).items()
        if k in cls.params
    }
    d_over.update(m_over.get("hparams", {}).get(dist["name"], {}))
    if d_over:  # the pruner's cells use their own distiller hyper-parameters
        dist = {
            "name": dist["name"],
            "params": cls.resolve_params({**dist["params"], **d_over}, "overrides"),
            "shown": list(dict.fromkeys([*dist["shown"], *d_over])),
        }
    return {"budget": b, "train": t, "teacher_train": teacher_t, "distiller": dist}
