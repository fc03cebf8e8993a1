"""Reading what training runs leave behind, for tests that compare runs: logs and subprocesses."""
import json
from pathlib import Path

TIMING_KEYS = {"images_per_sec"}  # wall-clock figures, which no two runs share


def read_log(workdir) -> list[dict]:
    """`train_log.jsonl`'s records, without the timing keys."""
    lines = (Path(workdir) / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def wait_all(procs, names, timeout: float) -> list[str]:
    """Waits for every `subprocess.Popen` (text mode, stdout and stderr piped), kills those
    left on failure, asserts each exited 0 (naming it, with the tail of its output); their
    stdouts."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for name, p, (out, err) in zip(names, procs, outs):
        assert p.returncode == 0, f"{name}:\n{out[-2000:]}\n{err[-4000:]}"
    return [out for out, _ in outs]
