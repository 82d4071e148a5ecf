#!/usr/bin/env bash
# Mutation testing (mutmut) of the pure modules, each against only the tests that concern it.
#
# Usage: scripts/mutation.sh [MODULE...]
#   MODULE: a path (src/patchbay/resolve/resolver.py) or a short name (resolver, filters,
#   permissions, ingest), or a target of several modules mutated together (segment: the
#   audience evaluation, evaluate.py and tallies.py); default: all of them, one after the other.
#   MUTATION_JOBS=N   test processes per module (default 2)
#
# Each module (or target) runs in its own copy of the project, .mutation/<name>/ (ignored by
# git, wiped at the start of the module's next run, left behind for `mutmut show` / `mutmut
# browse`): the copy's pyproject.toml gets the [tool.mutmut] of this one plus `only_mutate` (the
# module, or the target's modules) and `pytest_add_cli_args_test_selection` (its tests). Prints
# per module the score (killed / total, and killed / non-equivalent), and a target's total,
# and each surviving mutant with its file:line and diff.
# Exits non-zero when mutmut, pytest or the set-up fails (including failing clean tests), not
# because mutants survive. Needs `scripts/setup.sh --dev`. How to read the output, and why
# the mutants listed as equivalent below are: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# module -> the pytest arguments that select its tests. The `slow` tests start `patchbay serve`
# in another process, which imports the original source rather than the mutant: they could not
# kill a mutant and only make the run longer, so every module leaves them out.
declare -A TESTS=(
  [src/patchbay/resolve/resolver.py]="tests/resolve"
  [src/patchbay/activate/filters.py]="tests/activate"
  [src/patchbay/activate/permissions.py]="tests/activate"
  [src/patchbay/collect/ingest.py]="tests/collect"
  [segment]="tests/segment/test_evaluate.py tests/segment/test_tallies.py tests/segment/test_catalog.py"
)
# Targets of several modules, mutated together in one run against the same tests: the
# evaluation functions are what both the tallies and the tests of every operator exercise.
declare -A MODULES_OF=(
  [segment]="src/patchbay/segment/evaluate.py src/patchbay/segment/tallies.py"
)
DEFAULT_MODULES=(
  src/patchbay/resolve/resolver.py
  src/patchbay/activate/filters.py
  src/patchbay/activate/permissions.py
  src/patchbay/collect/ingest.py
  segment
)

# Mutants reviewed as equivalent (no test can tell them from the original), one a line:
#   MUTANT-NAME FINGERPRINT REASON
# The fingerprint (printed beside each survivor) is a hash of the mutant's diff: an entry whose
# mutant changed (the function was edited and the numbering moved) no longer matches, and the
# survivor is reported again for review. docs/testing.md gives the reasons in full.
EQUIVALENT=$(cat <<'EOF'
patchbay.activate.filters.x_sampled_in__mutmut_1 80ab1e05 percent > 100: at 100 every bucket (< 10000) is below 100*100
patchbay.activate.filters.x_sampled_in__mutmut_2 7feabb18 percent >= 101: below 101 every bucket is below percent*100 anyway
patchbay.activate.filters.x_sampled_in__mutmut_4 242d4a80 percent < 0: at 0 no bucket is below 0 anyway
patchbay.activate.filters.x_sampled_in__mutmut_15 a6730097 int.from_bytes without "big": big is the default since Python 3.11
patchbay.activate.filters.x_sampled_in__mutmut_21 460724c1 round(..., None): percents come in 0.01 % steps (validated), so percent*100 is an integer give or take float error
patchbay.activate.filters.x_sampled_in__mutmut_23 f7f875a4 round() without digits: as round(..., None)
patchbay.activate.filters.x_sampled_in__mutmut_27 1d32341f round(..., 7): float error (1e-12 at most) is gone at 6 digits or 7
patchbay.activate.filters.x_consented__mutmut_13 7c1db5dd get(..., None): all() treats None as False
patchbay.activate.filters.x_consented__mutmut_15 b57f6863 get() without default: None, which all() treats as False
patchbay.activate.filters.x_apply_filters__mutmut_33 efab2496 zip strict=None: the lengths were just compared equal
patchbay.activate.filters.x_apply_filters__mutmut_36 53d15401 zip without strict: the lengths were just compared equal
patchbay.activate.filters.x_apply_filters__mutmut_37 f4d81d83 zip strict=False: the lengths were just compared equal
patchbay.activate.permissions.x_encode__mutmut_11 d4b73818 "UTF-8" for "utf-8": the same codec
patchbay.activate.permissions.x_meets_required__mutmut_2 6634ab37 required = None: only ever set to True, and `not None` is `not False`
patchbay.resolve.resolver.x_derived_mpid__mutmut_9 64860b92 int.from_bytes without "big": big is the default since Python 3.11
patchbay.resolve.resolver.x_live_mpid__mutmut_15 21b28766 seen.add(None): only a cycle of merges needs it, and merge() cannot make one
patchbay.resolve.resolver.x_live_mpid__mutmut_20 b8e58e4a `or True`: merged_into always names a stored profile (merge() needs both)
patchbay.resolve.resolver.xǁResolverǁresolve__mutmut_19 c541af43 live_mpid(state, None) is None: no profile has mpid None
patchbay.resolve.resolver.xǁResolverǁ_first_match__mutmut_9 0347d0c7 unique = None: a unique identity has one user at most, so the limit and live[0]/live[-1] agree
patchbay.resolve.resolver.xǁResolverǁ_first_match__mutmut_25 57846437 `not live` -> break: every link names a stored profile, so live is never empty
patchbay.resolve.resolver.xǁResolverǁ_first_match__mutmut_27 7ee96545 always live[-1]: a unique identity has one user at most
patchbay.resolve.resolver.xǁResolverǁ_conflicts__mutmut_4 22acca50 profile None -> True: callers pass live users, whose profile exists
patchbay.collect.ingest.x_new_batch_ids__mutmut_4 ee5f48c4 urandom(17 * count): the ids still take 16 bytes each from the start; one more random byte each, unused
patchbay.collect.ingest.x__check__mutmut_10 088d9e58 rpartition(": "): every message of historical_problem has exactly one ": "
patchbay.collect.ingest.x_prepare_single__mutmut_8 91deffde new_batch_ids(2)[0]: a random id either way, the second unused
patchbay.segment.evaluate.x__equal__mutmut_4 60cffc89 numbers `or`: one side a number and the other not, the text comparison after it is false too
patchbay.segment.evaluate.x__equal__mutmut_11 8bc9becc dates `or`: one side a date and the other not, the text comparison after it is false too
patchbay.segment.tallies.x_add_event__mutmut_27 6938c4a0 len >= MAX_EVENTS: at exactly MAX_EVENTS it deletes events[:0], nothing
patchbay.segment.tallies.x_expire__mutmut_1 0ed1a1cd window None `and` no events: with no window nothing is outside it, so the loop keeps all and answers False
EOF
)

mutmut=$root/.venv/bin/mutmut
python=$root/.venv/bin/python
if [[ ! -x $mutmut ]]; then
  echo "mutation: $mutmut is missing; run scripts/setup.sh --dev" >&2
  exit 2
fi

if (($#)); then args=("$@"); else args=("${DEFAULT_MODULES[@]}"); fi
modules=()
for arg in "${args[@]}"; do
  found=""
  for module in "${!TESTS[@]}"; do
    if [[ $arg == "$module" || $arg == "$(basename "$module" .py)" ]]; then
      found=$module
    fi
  done
  if [[ -z $found ]]; then
    echo "mutation: unknown module '$arg'; known: ${DEFAULT_MODULES[*]}" >&2
    exit 2
  fi
  modules+=("$found")
done

jobs=${MUTATION_JOBS:-2}
status=0
for module in "${modules[@]}"; do
  name=$(basename "$module" .py)
  work=$root/.mutation/$name
  files=${MODULES_OF[$module]:-$module}
  if [[ $files != "$module" ]]; then
    echo "== $module: $files (tests: ${TESTS[$module]}, -m 'not slow')"
  else
    echo "== $module (tests: ${TESTS[$module]}, -m 'not slow')"
  fi
  started=$SECONDS

  # A fresh copy: results of an earlier run are never reused.
  rm -rf "$work"
  mkdir -p "$work"
  "$python" - "$root" "$work" "$files" "${TESTS[$module]}" <<'PY'
import json, re, shutil, sys, tomllib
from pathlib import Path

root, work, modules, tests = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
text = (root / "pyproject.toml").read_text()
config = tomllib.loads(text).get("tool", {}).get("mutmut", {})
ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "*.pyc")
for folder in ["src", "tests", *config.get("also_copy", [])]:
    if (root / folder).is_dir():
        shutil.copytree(root / folder, work / folder, ignore=ignore)
    elif (root / folder).is_file():
        shutil.copy2(root / folder, work / folder)
config["only_mutate"] = modules
config["pytest_add_cli_args_test_selection"] = tests
# Drop the [tool.mutmut] table (up to the next table header) and append the module's own.
text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
(work / "pyproject.toml").write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
PY

  set +e
  (cd "$work" && "$mutmut" run --max-children "$jobs") >"$work/mutmut.log" 2>&1
  rc=$?
  set -e
  elapsed=$((SECONDS - started))
  if [[ $rc != 0 ]]; then
    echo "mutation: mutmut failed on $module (exit $rc); the end of $work/mutmut.log:" >&2
    tail -n 40 "$work/mutmut.log" | tr '\r' '\n' | tail -n 40 >&2
    status=1
    continue
  fi

  set +e
  (cd "$work" && "$python" - "$module" "$elapsed" "$EQUIVALENT" $files) <<'PY'
import ast, hashlib, sys
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.format_utils import orig_function_and_class_names_from_key

target, elapsed, equivalent_text, modules = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
equivalent = {}
for line in equivalent_text.splitlines():
    if line.strip():
        name, fingerprint, reason = line.split(None, 2)
        equivalent[name] = (fingerprint, reason)
pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "n/a"


def report(module):
    """Print the survivors and the score of one module; its (killed, total, equivalent,
    skipped)."""
    data = SourceFileMutationData(path=Path(module))
    data.load()
    results = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
    if not results:
        sys.exit(f"mutation: no mutants were generated or recorded for {module}")
    unfinished = {n: s for n, s in results.items() if s in ("not checked", "check was interrupted by user")}
    if unfinished:
        sys.exit(f"mutation: {len(unfinished)} mutants of {module} were not run: {sorted(unfinished)[:5]}")

    source = Path(module).read_text().splitlines()
    spans = {}  # "Class.method" or "function" -> (first line, last line), 1-based
    for node in ast.walk(ast.parse("\n".join(source))):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    spans[f"{node.name}.{item.name}"] = (item.lineno, item.end_lineno)
    for node in ast.parse("\n".join(source)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans[node.name] = (node.lineno, node.end_lineno)

    def locate(name, diff):
        """The line of the source the mutant changes: its first removed line inside the function."""
        function, class_name = orig_function_and_class_names_from_key(name)
        key = f"{class_name}.{function.rpartition('.')[-1]}" if class_name else function.rpartition(".")[-1]
        first, last = spans.get(key, (1, len(source)))
        # The diff is of the function's code alone: its hunk header counts from the `def` line.
        guess, removed = first, None
        for line in diff.splitlines()[2:]:
            if line.startswith("@@"):
                guess = first + int(line.split()[1].lstrip("-").split(",")[0]) - 1
            elif line.startswith("-"):
                removed = line[1:].strip()
                break
            elif line.startswith(" "):
                guess += 1
        matches = [n for n in range(first, last + 1) if source[n - 1].strip() == removed]
        return min(matches, key=lambda n: abs(n - guess)) if matches else guess

    killed = survived = skipped = 0
    survivors, stale = [], []
    for name, status in sorted(results.items()):
        if status == "skipped":
            skipped += 1
        elif status in ("killed", "timeout", "caught by type check", "segfault"):
            killed += 1
        else:  # survived, no tests, suspicious
            survived += 1
            diff = get_diff_for_mutant(name, path=module)
            changed = "\n".join(l for l in diff.splitlines()[2:] if l[:1] in "+-")
            fingerprint = hashlib.sha256(changed.encode()).hexdigest()[:8]
            entry = equivalent.get(name)
            if entry and entry[0] != fingerprint:
                stale.append(name)
                entry = None
            survivors.append((locate(name, diff), name, status, fingerprint, entry, diff))

    total = killed + survived
    n_equivalent = sum(1 for s in survivors if s[4])
    real = total - n_equivalent
    if len(modules) > 1:
        print(f"\n - {module}")
    print(f"   {len(survivors) - n_equivalent} survivors to look at, {n_equivalent} equivalent")
    for number, name, status, fingerprint, entry, diff in sorted(survivors):
        mark = f"equivalent: {entry[1]}" if entry else status
        print(f"\n-- {module}:{number}  {name}  {fingerprint}  ({mark})")
        if not entry:
            for line in diff.splitlines()[2:]:
                if line[:1] in "+-":
                    print(f"   {line}")
    for name in stale:
        print(f"\n!! {name}: listed as equivalent, but the mutant is no longer the one reviewed")
    when = "" if len(modules) > 1 else f"; {elapsed // 60}m{elapsed % 60:02d}s"
    print(
        f"\nSCORE {module}: killed {killed}/{total} ({pct(killed, total)}); "
        f"non-equivalent: {killed}/{real} ({pct(killed, real)}); "
        f"equivalent {n_equivalent}, skipped {skipped}{when}"
    )
    return killed, total, n_equivalent, skipped


sums = [sum(column) for column in zip(*(report(module) for module in modules))]
if len(modules) > 1:
    killed, total, n_equivalent, skipped = sums
    real = total - n_equivalent
    print(
        f"\nSCORE {target}: killed {killed}/{total} ({pct(killed, total)}); "
        f"non-equivalent: {killed}/{real} ({pct(killed, real)}); "
        f"equivalent {n_equivalent}, skipped {skipped}; {elapsed // 60}m{elapsed % 60:02d}s"
    )
PY
  rc=$?
  set -e
  if [[ $rc != 0 ]]; then
    echo "mutation: reading the results of $module failed (exit $rc)" >&2
    status=1
  fi
  echo
done
exit $status
