"""How long a command takes to answer when it needs no network: the register's records, a wrong model path.

    .venv/bin/python benchmarks/startup.py [--repeats 3]

Importing PyTorch, torchvision (which imports torch._dynamo) and timm takes seconds on this machine. Until
2026-12-07 ``register list`` imported them to print three lines, and ``predict --model WRONG`` to say the folder
holds no model. Each command below runs as a new process, ``--repeats`` times; the median wall time is printed
beside the baseline measured in the same run: a process that only imports PyTorch, torchvision and timm.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PY = sys.executable


def seconds(argv: list[str], repeats: int, ok: tuple[int, ...] = (0,)) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from artsentry.index import Register

    with tempfile.TemporaryDirectory() as tmp:
        reg = Register.create(Path(tmp) / "reg")  # no photo: the command reads the records, whatever they hold
        reg.close()
        cli = [PY, "-m", "artsentry", "-q"]
        rows = [
            ("baseline: import torch, torchvision, timm", [PY, "-c", "import torch, torchvision, timm"], (0,)),
            ("artsentry --help", cli + ["--help"], (0,)),
            ("register list REG", cli + ["register", "list", str(Path(tmp) / "reg")], (0,)),
            ("register history REG", cli + ["register", "history", str(Path(tmp) / "reg")], (0,)),
            ("predict x.jpg --model WRONG", cli + ["predict", "x.jpg", "--model", str(Path(tmp) / "nope")], (1,)),
            ("screen x.csv --model WRONG", cli + ["screen", "x.csv", "--model", str(Path(tmp) / "nope"), "--out",
                                                 str(Path(tmp) / "out")], (1,)),
            ("train WRONG --out RUN", cli + ["train", str(Path(tmp) / "nope"), "--out", str(Path(tmp) / "run")], (1,)),
        ]
        figures = [(name, seconds(argv, a.repeats, ok)) for name, argv, ok in rows]
    base = figures[0][1]
    print(f"# {date.today()}: median of {a.repeats} runs, one process each")
    print("| command | seconds | of the baseline |\n| --- | --- | --- |")
    for name, s in figures:
        print(f"| {name} | {s:.2f} | {s / base:.2f} |")


if __name__ == "__main__":
    main()
