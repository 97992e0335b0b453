"""scripts/check_mutations.py stays runnable as the code moves: every mutation's source text is in its file
exactly once, its replacement differs, and the tests it names exist (the check itself, ~2 minutes, is
`make mutations`)."""

import os
import re

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
