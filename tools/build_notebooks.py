"""Execute the walkthrough notebooks (jupytext `py:percent` sources) and write them as .ipynb with outputs.

    python tools/build_notebooks.py                 # every notebooks/NN_*.py -> notebooks/NN_*.ipynb
    python tools/build_notebooks.py 03_grouping     # only the named ones (file stem, or a prefix like 03)
    python tools/build_notebooks.py --check         # execute, write nothing; exit 1 if a cell fails or the
                                                    # committed .ipynb shows other text outputs (stale)
    GROUPVIT_WEIGHTS=/path/to/groupvit-gcc-yfcc python tools/build_notebooks.py --out /tmp/nb   # other weights

Needs the `notebooks` extra (jupytext, nbclient, ipykernel, matplotlib). Each notebook runs top to bottom in a
fresh kernel started in notebooks/, with this repository first on PYTHONPATH; a failing cell stops the build and
nothing is written for that notebook. Files are written atomically (temporary file, then rename), without timing
metadata, so a rebuild with unchanged results changes nothing. GROUPVIT_WEIGHTS picks other weights (see
notebooks/_common.py).

Staleness: `output_texts` reduces a notebook to the text its cells printed (streams, the text/plain of results and
displays, error names), normalised so that only real changes show: memory addresses, timings and rounding-level
floats (scientific notation with an exponent of -9 or below, or a zero so written: float64 noise that differs
between BLAS builds) are replaced by placeholders. `stale_outputs` compares a fresh execution with the committed
file; the notebook test and `--check` use it, so a committed output that no longer matches the code fails CI.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SIZE_WARNING = 1_000_000  # bytes: an executed notebook larger than this has too many or too large figures


def sources(names: list[str] | None = None) -> list[Path]:
    """The notebook sources, in reading order, optionally only those whose stem starts with one of `names`."""
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if not names:
        return found
    picked = [p for p in found if any(p.stem.startswith(n.removesuffix(".py")) for n in names)]
    if not picked:
        raise SystemExit(f"no notebook matches {names}; have {[p.stem for p in found]}")
    return picked


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this interpreter first on PATH, the repository first on PYTHONPATH, Agg plots."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "2")  # the notebooks are small; be kind to shared machines
    env["PYTHONHASHSEED"] = "0"
    return env


def execute(source: Path, timeout: int = 300):
    """Read a py:percent source and run it in a fresh python3 kernel; returns (executed notebook, seconds)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for i, cell in enumerate(nb.cells):  # jupytext draws random cell ids; fixed ones keep rebuilds identical
        cell["id"] = f"cell-{i}"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps: rebuilding with the same results gives the same file
        resources={"metadata": {"path": str(source.parent)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    return nb, time.perf_counter() - start


def plain(text: str) -> str:
    """A kernel traceback without its terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


TINY_EXPONENT = 9  # numbers like 1.2e-09 or smaller are rounding noise: they differ between BLAS builds
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]+\b")
_TIME = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|µs|us|ns|s|sec|seconds|min)\b")
_SCIENTIFIC = re.compile(r"[-+]?\d+(?:\.\d*)?[eE]([-+]?\d+)")


def _is_tiny(match: re.Match) -> bool:
    """A float in scientific notation that is rounding-level: exponent <= -9, or zero (a check that came out exact
    here may come out 1e-16 on another machine)."""
    return int(match.group(1)) <= -TINY_EXPONENT or float(match.group(0)) == 0.0


def normalise(text: str) -> str:
    """Text output without what legitimately changes between runs and machines (see the module docstring)."""
    text = plain(text)
    text = _ADDRESS.sub("0x<address>", text)
    text = _TIME.sub("<time>", text)
    text = _SCIENTIFIC.sub(lambda m: "<tiny>" if _is_tiny(m) else m.group(0), text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def output_texts(nb) -> list[dict[str, object]]:
    """Per code cell, its normalised text outputs: {"cell" (its index), "stdout", "stderr", "display", "error"}.

    Stream chunks are joined per stream (the kernel splits them by timing), and streams are kept apart from
    displayed results, whose relative order depends on when the kernel flushes stdout. Images are not compared.
    """
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        streams: dict[str, str] = {"stdout": "", "stderr": ""}
        display, errors = [], []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                streams[out.name] = streams.get(out.name, "") + out.text
            elif out.output_type in ("execute_result", "display_data"):
                display.append(normalise(out.get("data", {}).get("text/plain", "")))
            elif out.output_type == "error":
                errors.append(out.ename)
        cells.append({"cell": index, **{k: normalise(v) for k, v in streams.items()}, "display": display,
                      "error": errors})  # fmt: skip
    return cells


def stale_outputs(fresh, committed) -> list[str]:
    """How the committed notebook's text outputs differ from a fresh execution's; empty when they agree."""
    import difflib

    new, old = output_texts(fresh), output_texts(committed)
    if len(new) != len(old):
        return [f"{len(old)} code cells committed, {len(new)} executed"]
    problems = []
    for a, b in zip(old, new, strict=True):
        for key in ("stdout", "stderr", "display", "error"):
            if a[key] == b[key]:
                continue
            was = a[key] if isinstance(a[key], str) else "\n".join(map(str, a[key]))
            now = b[key] if isinstance(b[key], str) else "\n".join(map(str, b[key]))
            diff = difflib.unified_diff(was.splitlines(), now.splitlines(), "committed", "fresh", lineterm="", n=1)
            problems.append(f"cell {a['cell']} ({key}):\n" + "\n".join(diff))
    return problems


def write_atomic(nb, target: Path) -> int:
    """Write the notebook through a temporary file and a rename; returns its size in bytes."""
    import nbformat

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="notebook stems or prefixes (default: all)")
    parser.add_argument("--check", action="store_true", help="execute, write nothing; compare outputs")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    parser.add_argument("--out", type=Path, help="write the .ipynb files here instead of notebooks/")
    args = parser.parse_args(argv)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    try:
        import nbformat
        from nbclient.exceptions import CellExecutionError
    except ImportError:
        print("build_notebooks needs the notebooks extra: pip install -e '.[notebooks]'", file=sys.stderr)
        return 2
    failed = []
    for source in sources(args.names):
        try:
            nb, seconds = execute(source, args.timeout)
        except CellExecutionError as err:
            print(f"FAIL {source.name}\n{plain(str(err))}", file=sys.stderr)
            failed.append(source.name)
            continue
        if args.check:
            committed = source.with_suffix(".ipynb")
            stale = stale_outputs(nb, nbformat.read(committed, as_version=4)) if committed.is_file() else ["missing"]
            if stale:
                print(f"STALE {committed.name}: rebuild it\n" + "\n".join(stale), file=sys.stderr)
                failed.append(source.name)
                continue
            print(f"ok   {source.name}: {seconds:.1f} s, committed outputs current")
            continue
        target = (args.out or source.parent) / f"{source.stem}.ipynb"
        size = write_atomic(nb, target)
        note = "  (over 1 MB: shrink the figures)" if size > SIZE_WARNING else ""
        print(f"ok   {source.name} -> {target}: {seconds:.1f} s, {size / 1e3:.0f} kB{note}")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
