"""scripts/check_copies.py: the '# Copied from' markers hold, and the checker fails on a divergent copy
(issue 15.6); also no family imports another family's private helpers."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_copies.py"


def _run(root: Path):
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True)


def _tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "gpu_worker", tmp_path / "gpu_worker", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_repository_copies_match():
    r = _run(ROOT)
    assert r.returncode == 0, r.stdout
    copies = int(r.stdout.split("check_copies: ")[1].split()[0])
    assert copies >= 2


def test_a_divergent_copy_fails(tmp_path):
    root = _tree(tmp_path)
    lx = root / "gpu_worker" / "models" / "lxmert.py"
    text = lx.read_text()
    assert "* targets.shape[1]" in text
    lx.write_text(text.replace("* targets.shape[1]", "* 2.0", 1))
    r = _run(root)
    assert r.returncode == 1
    assert "training_loss differs from gpu_worker.models.visualbert.VisualBertAdapter.training_loss" in r.stdout


def test_a_changed_original_fails_too_and_a_missing_one_is_named(tmp_path):
    root = _tree(tmp_path)
    vb = root / "gpu_worker" / "models" / "visualbert.py"
    vb.write_text(vb.read_text().replace("return list(self.model.cls.parameters())",
                                         "return list(self.model.cls.parameters())[:1]", 1))
    lx = root / "gpu_worker" / "models" / "lxmert.py"
    lx.write_text(lx.read_text().replace("VisualBertAdapter.training_loss", "VisualBertAdapter.no_such_method", 1))
    r = _run(root)
    assert r.returncode == 1
    assert "trainable_parameters differs" in r.stdout and "no_such_method does not exist" in r.stdout


def test_private_imports_between_families_fail(tmp_path):
    root = _tree(tmp_path)
    fl = root / "gpu_worker" / "models" / "florence2.py"
    fl.write_text("from gpu_worker.models.blip import _same_length_groups  # noqa\n" + fl.read_text())
    r = _run(root)
    assert r.returncode == 1 and "imports _same_length_groups from the blip family" in r.stdout
