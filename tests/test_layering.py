"""Stage layering: no module imports from a later stage, checked on the source with ``ast`` (imports inside
functions count too).

The import order is the data flow of docs (data -> text -> generate -> models/losses -> train -> evaluation ->
search -> cli) with one swap: evaluation comes before train. Training validates with the evaluator, so the
metrics it selects checkpoints on are the ones ``tbpr eval`` reports, while evaluating a trained run needs only
its checkpoint file, not training code.
"""

import ast
from pathlib import Path

import tbpr

SRC = Path(tbpr.__file__).resolve().parent

# Each top-level module or package of tbpr in its stage; "" is the package's own __init__ (``tbpr.load``).
STAGES = [
    {"atomic", "config", "crashsafe", "devices", "errors", "redact"},  # shared plumbing, no domain
    {"data"},
    {"text"},
    {"generate"},
    {"models", "losses"},
    {"evaluation"},
    {"train"},
    {"search", "analysis", "api", "demo"},
    {"cli", "__main__", ""},
]
STAGE = {unit: level for level, units in enumerate(STAGES) for unit in units}

# (importing module, imported module) pairs allowed to go up a stage, each with its reason. None today.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """``tbpr.data.readers`` -> ``data``; the package itself -> ``""``."""
    return module.split(".")[1] if module.count(".") else ""


def tbpr_imports(path: Path, src: Path = SRC) -> set[str]:
    """The tbpr modules a source file imports (``from tbpr import api`` names ``tbpr.api``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tbpr"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tbpr":
                for a in node.names:
                    sub = src / a.name
                    found.add(
                        f"tbpr.{a.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() else "tbpr"
                    )
            elif node.module.startswith("tbpr."):
                found.add(node.module)
    return found


def upward_imports(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        importer = module_name(path, src)
        for imported in sorted(tbpr_imports(path, src)):
            if STAGE[unit(imported)] > STAGE[unit(importer)] and (importer, imported) not in EXCEPTIONS:
                bad.append(f"{importer} ({unit(importer) or 'tbpr'}) imports {imported}")
    return bad


def test_every_unit_has_a_stage():
    units = {unit(module_name(p)) for p in SRC.rglob("*.py")}
    assert units <= set(STAGE), f"put {sorted(units - set(STAGE))} into a stage in STAGES"


def test_no_module_imports_a_later_stage():
    assert upward_imports() == []


def test_exceptions_are_still_needed():
    """An exception whose import is gone is removed from the list, so the list stays the truth."""
    used = {(module_name(p), m) for p in SRC.rglob("*.py") for m in tbpr_imports(p)}
    assert set(EXCEPTIONS) <= used, sorted(set(EXCEPTIONS) - used)


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker flags an import from a later stage, also one inside a function."""
    fake = tmp_path / "tbpr"
    (fake / "data").mkdir(parents=True)
    (fake / "generate").mkdir()
    (fake / "data" / "bad.py").write_text("def f():\n    from tbpr.generate.store import CaptionStore\n")
    (fake / "generate" / "ok.py").write_text("import tbpr.data.bad\n")
    assert upward_imports(fake) == ["tbpr.data.bad (data) imports tbpr.generate.store"]


def test_run_config_defaults_are_the_training_configs():
    """Evaluation reads a run's saved config without tbpr.train; what it reads matches TrainConfig, saved or not."""
    from tbpr.config import to_dict
    from tbpr.evaluation.run_eval import RunConfig
    from tbpr.train.config import TrainConfig, load_config

    for saved, train in [
        ({}, TrainConfig()),
        (to_dict(load_config("irra-small")), load_config("irra-small")),
    ]:
        run = RunConfig.from_saved(saved)
        assert run.model == train.model
        assert (run.data.path, run.data.val_split, run.data.mean, run.data.std) == (
            train.data.path,
            train.data.val_split,
            train.data.mean,
            train.data.std,
        )
        assert run.init_from == train.init_from
