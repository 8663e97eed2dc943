"""What a result file says of the tree it measured: the commit, and whether code differed from it; a benchmark's
own rewritten result files are its outputs, not a change to what was measured."""

import subprocess

from cnnkit.bench.env import provenance


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_rewritten_result_files_do_not_make_the_tree_unclean_and_changed_code_does(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = provenance(tmp_path)
    assert len(clean["commit"]) == 40 and clean["uncommitted_changes"] is False
    (tmp_path / "benchmarks" / "results" / "a.json").write_text('{"new": 1}')  # a run's own output
    assert provenance(tmp_path)["uncommitted_changes"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance(tmp_path)["uncommitted_changes"] is True
    assert provenance(tmp_path / "benchmarks")["commit"] is None  # not the checkout's root: no claim
