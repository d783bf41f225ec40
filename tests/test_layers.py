"""The layer rule of docs/design.md, enforced with import-linter (contracts in pyproject.toml, [tool.importlinter]):
packages import downwards only, and no package below the entry points imports Hydra or OmegaConf."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _lint(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": ""})


def test_every_contract_is_kept(repo_root: Path) -> None:
    done = _lint(repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in done.stdout


def test_an_upward_import_breaks_the_layer_contract(repo_root: Path, tmp_path: Path) -> None:
    """The contract is not vacuous: chestx.data importing chestx.runs (the arrow issue 16 removed) is reported."""
    shutil.copytree(repo_root / "chestx", tmp_path / "chestx", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    stats = tmp_path / "chestx" / "data" / "labels" / "stats.py"
    stats.write_text(stats.read_text() + "\n\ndef _upward():\n    from chestx.runs.figures import plot_reliability\n")
    done = _lint(tmp_path)
    assert done.returncode != 0 and "packages import downwards only BROKEN" in done.stdout, done.stdout[-3000:]
    assert "chestx.data.labels.stats -> chestx.runs.figures" in done.stdout


def test_a_package_importing_an_entry_point_breaks_its_contract(repo_root: Path, tmp_path: Path) -> None:
    """Entry points sit on top: chestx.runs importing chestx.train is reported."""
    shutil.copytree(repo_root / "chestx", tmp_path / "chestx", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    scoring = tmp_path / "chestx" / "runs" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\n\ndef _entry():\n    from chestx.train import train\n")
    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "entry points sit on top" in done.stdout and "BROKEN" in done.stdout, done.stdout[-3000:]
    assert "chestx.runs.scoring -> chestx.train" in done.stdout


def test_the_data_wing_imports_downwards_only(repo_root: Path, tmp_path: Path) -> None:
    """loading > datasets > labels | images > errors: a label module importing the loaders, or an image module
    importing the labels, is reported."""
    shutil.copytree(repo_root / "chestx", tmp_path / "chestx", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    table = tmp_path / "chestx" / "data" / "labels" / "table.py"
    table.write_text(table.read_text() + "\n\ndef _upward():\n    from chestx.data.loading.sampling import item_seed\n")
    check = tmp_path / "chestx" / "data" / "images" / "check.py"
    check.write_text(check.read_text() + "\n\ndef _sideways():\n    from chestx.data.labels.table import LabelTable\n")
    done = _lint(tmp_path)
    assert done.returncode != 0 and "the data wing: loading > datasets > labels | images > errors BROKEN" in done.stdout
    assert "chestx.data.labels.table -> chestx.data.loading.sampling" in done.stdout, done.stdout[-3000:]
    assert "chestx.data.images.check -> chestx.data.labels.table" in done.stdout, done.stdout[-3000:]


def test_labels_load_no_opencv_and_no_torch() -> None:
    """`import chestx.data.labels.table` (and the package chestx.data) stays light."""
    code = ("import sys, chestx.data, chestx.data.labels.table, chestx.data.labels.splits; "
            "print(sorted(m for m in ('cv2', 'torch', 'albumentations') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
