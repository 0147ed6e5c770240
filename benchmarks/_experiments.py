"""What the benchmarks share: the command line that runs, checks and saves experiments, and curve downsampling."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

def downsample(values, n: int = 50) -> list[float]:
    """``n`` window means of a training curve, rounded, so the JSON stays small."""
    chunks = np.array_split(np.asarray(values, dtype=float), min(n, len(values)))
    return [round(float(c.mean()), 4) for c in chunks]


Experiment = tuple[Callable[[], dict], Callable[[dict], None]]


def run_experiments(experiments: dict[str, Experiment], *, results_path: Path, command: str, description: str,
                    report: Callable[[str, dict], str], argv=None) -> None:
    """Run ``experiments`` (name -> (run, check)), or the one named by ``--only``, and write the results file.

    Each result gets its wall and CPU seconds; ``check`` asserts the claim before the result is saved,
    so a failed claim never overwrites a committed number. ``--only`` keeps the other saved results.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(experiments), help="run one experiment")
    parser.add_argument("--out", type=Path, default=results_path)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the saved results used 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    results.update(command=command, torch=torch.__version__, threads=args.threads)
    for name in [args.only] if args.only else experiments:
        start, cpu_start = time.perf_counter(), time.process_time()
        run, check = experiments[name]
        r = run()
        r["seconds"] = round(time.perf_counter() - start, 1)
        r["cpu_seconds"] = round(time.process_time() - cpu_start, 1)  # all threads together; wall time on a busy machine is longer
        print(report(name, r), f"[{r['seconds']} s wall, {r['cpu_seconds']} s CPU]", flush=True)
        check(r)
        results[name] = r
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
