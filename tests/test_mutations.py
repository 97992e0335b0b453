"""scripts/check_mutations.py stays runnable as the code moves: every mutation's source text is in its file
exactly once, its replacement differs, and the tests it names exist (the check itself, ~2 minutes, is
`make mutations`)."""

import os
import re

import pytest

from conftest import REPO, load_script

check_mutations = load_script("scripts/check_mutations.py")


def test_every_mutation_names_code_and_tests_that_exist():
    assert len(check_mutations.MUTATIONS) == len({m.name for m in check_mutations.MUTATIONS})
    for mutation in check_mutations.MUTATIONS:
        with open(os.path.join(REPO, mutation.file)) as handle:
            text = handle.read()
        for old, new in mutation.edits:
            assert text.count(old) == 1 and old != new, (mutation.name, old)
        for test in mutation.tests:
            path, _, function = test.partition("::")
            with open(os.path.join(REPO, path)) as handle:
                assert re.search(rf"^def {re.escape(function)}\(", handle.read(), flags=re.M), (mutation.name, test)


@pytest.mark.slow
def test_the_check_counts_a_caught_a_missed_and_a_stale_mutation(tmp_path, monkeypatch):
    """The script on a throwaway repository (its REPO and MUTATIONS swapped): a bug its test catches, one it
    misses, one whose source text is gone; each file is restored and the rows say which was which."""
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "test_mod.py").write_text("from mod import f\n\n\ndef test_f():\n    assert f() == 1\n")
    Mutation = check_mutations.Mutation
    monkeypatch.setattr(check_mutations, "REPO", str(tmp_path))
    monkeypatch.setattr(check_mutations, "MUTATIONS", (
        Mutation("caught", "f returns 2", "mod.py", (("return 1", "return 2"),), ("test_mod.py::test_f",)),
        Mutation("missed", "a comment", "mod.py", (("def f():", "def f():  # changed"),), ("test_mod.py::test_f",)),
        Mutation("stale", "gone", "mod.py", (("return 3", "return 4"),), ("test_mod.py::test_f",)),
    ))
    out = tmp_path / "rows.json"
    assert check_mutations.main(["--json", str(out), "--timeout", "120"]) == 1  # not every bug was caught
    rows = {row["name"]: row for row in __import__("json").loads(out.read_text())}
    assert rows["caught"]["caught"] is True and rows["missed"]["caught"] is False and rows["stale"]["caught"] is None
    assert all(row["clean_passes"] for row in rows.values()) and "occurs 0 times" in rows["stale"]["note"]
    assert (tmp_path / "mod.py").read_text() == "def f():\n    return 1\n"  # restored
    with pytest.raises(SystemExit):  # a name it does not know: the usage error lists the known ones
        check_mutations.main(["--only", "nope"])
