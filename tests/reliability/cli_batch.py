"""Run many ``compbench`` command lines, each in its own process, paying the imports once.

Usage: ``python cli_batch.py cases.json results.json``. The parent imports ``compbench.cli``
and the pipeline (torch, transformers, lightning: ~8 s here), then forks one child per case;
each child runs the console entry point ``compbench.cli.main`` with the case's argv, cwd and
environment, its stdout/stderr captured at the file-descriptor level, and exits with the CLI's
status. So every case is a separate process running the real CLI, at ~1 s instead of ~9 s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def run_case(case: dict, out_dir: Path) -> dict:
    out_path, err_path = out_dir / f"{case['id']}.out", out_dir / f"{case['id']}.err"
    start = time.time()
    pid = os.fork()
    if pid == 0:  # child: become `compbench <argv>`
        code = 70
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            os.chdir(case.get("cwd") or os.getcwd())
            os.environ.update(case.get("env", {}))
            sys.argv = ["compbench", *case["argv"]]
            from compbench import cli

            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - report anything else as the CLI would (a traceback)
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"id": case["id"], "returncode": os.waitstatus_to_exitcode(status), "seconds": time.time() - start,
            "stdout": out_path.read_text(errors="replace"), "stderr": err_path.read_text(errors="replace")}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    results_path = Path(sys.argv[2])
    import compbench.cli  # noqa: F401 - the expensive imports, once, before forking
    import compbench.training.pipeline  # noqa: F401

    out_dir = results_path.parent / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [run_case(case, out_dir) for case in cases]
    results_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
