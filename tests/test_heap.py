"""patchbay.heap: a stage process's collector schedule."""

from __future__ import annotations

import subprocess
import sys

from patchbay.heap import MIDDLE, OLD, YOUNG


def test_collect_rarely_freezes_the_heap_and_raises_the_thresholds() -> None:
    # (in a process of its own: the test process keeps Python's schedule)
    code = (
        "import gc; from patchbay.heap import collect_rarely;"
        " assert gc.get_freeze_count() == 0; collect_rarely();"
        " print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(")")[0] + ")" == str((YOUNG, MIDDLE, OLD))
    assert done.stdout.strip().endswith("True")


def test_cycles_are_still_collected_after_collect_rarely() -> None:
    code = (
        "import gc, weakref; from patchbay.heap import collect_rarely, YOUNG; collect_rarely()\n"
        "class Node: pass\n"
        "first = Node(); first.me = first; gone = weakref.ref(first); del first\n"
        "for _ in range(YOUNG):\n"
        "    n = Node(); n.me = n\n"  # more cycles: their count reaches the threshold
        "print(gone() is None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
