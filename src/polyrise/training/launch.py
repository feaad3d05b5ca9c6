"""Multi-process training through `accelerate launch`: DDP, FSDP or DeepSpeed, one process per GPU.

`launch_command(n, config) + [module, *args]` is the argv that runs a Python module on `n` processes (or on the
accelerate config file's); `run_launched` runs it with live output and turns a failure into a PolyriseError
that quotes the failing process's last stderr lines. Without a config file the processes are plain DDP via
torchrun: NCCL on GPUs, gloo on a CPU-only machine (each worker then trains with `use_cpu`). A config file for
several machines (`num_machines` > 1) is launched once on each machine, with that machine's rank; on a Ray
cluster (`training.ray`) `Machines` gives every node its rank and the main node's address.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyrise.errors import PolyriseError

LAUNCH_FIELDS = frozenset({"num_processes", "accelerate_config"})
"""`TrainingSettings` fields that say how a training is run, not what it computes."""

_TAIL_BYTES = 256 * 1024
_TAIL_LINES = 25
# the launcher's own traceback (accelerate → torch.distributed.run) only repeats that a worker failed
_LAUNCHER_FRAME = re.compile(r"accelerate[/\\]commands[/\\]launch\.py")
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")


@dataclass(frozen=True)
class Machines:
    """The machines of one training and this one's place among them: `count` machines, this one of `rank` (0 is
    the main one, at `main_ip`, whose port `main_port` the others join)."""

    count: int
    rank: int
    main_ip: str
    main_port: int

    def args(self) -> list[str]:
        return [
            *("--num_machines", str(self.count), "--machine_rank", str(self.rank)),
            *("--main_process_ip", self.main_ip, "--main_process_port", str(self.main_port)),
        ]


def should_launch(num_processes: int, accelerate_config: Path | str | None) -> bool:
    """Whether a training goes through `accelerate launch`: more than one process, or a config file given."""
    return num_processes > 1 or accelerate_config is not None


def check_accelerate_config(path: Path | str) -> tuple[Path, int]:
    """The absolute path of an accelerate config file that accelerate's own loader accepts, and the number of
    machines it trains on (its `num_machines`)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise PolyriseError(f"{path}: no such accelerate config file")
    try:
        config = load_config_from_file(str(path))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise PolyriseError(f"{path}: not a valid accelerate config: {e}") from None
    return path.resolve(), config.num_machines


def launch_command(
    num_processes: int,
    accelerate_config: Path | str | None = None,
    machine_rank: int | None = None,
    machines: Machines | None = None,
) -> list[str]:
    """The argv prefix that runs a Python module under `accelerate launch`; append the module name and its args.

    With `accelerate_config`, the file decides the backend (DDP, FSDP, DeepSpeed), the mixed precision and the
    process count, which `num_processes` > 1 overrides. Without one: `num_processes` DDP workers on this
    machine (a free port is picked, so concurrent launches do not collide), or one plain process for 1.
    A file for several machines needs `machine_rank`, this machine's (0 is the one at its `main_process_ip`;
    it overrides the file's `machine_rank`), so one file serves every machine; the process count is then the
    total over all machines. `machines` (a Ray cluster's nodes) replaces the file's machines, or makes the
    processes without a file DDP workers over `machines.count` machines.
    """
    if num_processes < 1:
        raise PolyriseError(f"num_processes must be at least 1, not {num_processes}")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    count = 1
    if accelerate_config is not None:
        path, count = check_accelerate_config(accelerate_config)
        cmd += ["--config_file", str(path)]
        if num_processes > 1:
            cmd += ["--num_processes", str(num_processes)]
        if machines is not None:
            cmd += machines.args()
        elif count > 1:
            if machine_rank is None or not 0 <= machine_rank < count:
                given = "" if machine_rank is None else f"machine rank {machine_rank}: "
                raise PolyriseError(
                    f"{given}{path} trains on {count} machines: start the training on each with its rank, "
                    f"0 to {count - 1} (polyrise train ... --machine-rank K; see docs/running-on-gpus.md)"
                )
            cmd += ["--machine_rank", str(machine_rank)]
    else:
        # explicit values: no warning about defaults, and a user's default accelerate config does not switch
        # the backend (`--multi_gpu` is DDP through torchrun, also on CPU where the workers use gloo)
        cmd += ["--multi_gpu"] if num_processes > 1 else []
        cmd += ["--num_processes", str(num_processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += machines.args() if machines is not None else ["--num_machines", "1", "--main_process_port", "0"]
    if machine_rank is not None and count == 1:
        raise PolyriseError(
            f"machine rank {machine_rank}: only a training on several machines has machine ranks "
            "(an accelerate config with num_machines > 1, e.g. examples/accelerate/multi-node.yaml)"
        )
    return [*cmd, "--module"]


def _failure_lines(stderr: str, n: int = _TAIL_LINES) -> list[str]:
    """The last `n` informative stderr lines: no progress bars, no launcher traceback after the workers' output."""
    lines = [line.rstrip() for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    lines = [line for line in lines if not _PROGRESS_BAR.search(line)]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)") and any(
            _LAUNCHER_FRAME.search(line) for line in lines[i + 1 : i + 8]
        ):
            lines = lines[:i]
            break
    return lines[-n:]


def die_with_parent() -> None:
    """Ask Linux to kill this (child) process when its parent dies (kill -9 included): a `preexec_fn`."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def run_launched(command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run `command` (e.g. `launch_command(...) + ["polyrise.cli", ...]`), its output streamed live.

    stdout goes straight to this process's stdout; stderr (progress bars, logs) is copied to this process's
    stderr as it comes, and its tail kept: a non-zero exit raises a PolyriseError quoting the last lines the
    workers wrote. Interrupting this process terminates the launch; its death kills it (Linux).
    """
    argv = [str(part) for part in command]
    try:
        proc = subprocess.Popen(
            argv,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
    except OSError as e:
        raise PolyriseError(f"cannot start {argv[0]}: {e}") from None
    tail: deque[bytes] = deque()
    kept = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert proc.stderr is not None
    try:
        fd = proc.stderr.fileno()
        while chunk := os.read(fd, 8192):
            sys.stderr.write(decoder.decode(chunk))
            sys.stderr.flush()
            tail.append(chunk)
            kept += len(chunk)
            while kept - len(tail[0]) >= _TAIL_BYTES:
                kept -= len(tail.popleft())
        returncode = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        proc.stderr.close()
    if returncode != 0:
        lines = _failure_lines(b"".join(tail).decode("utf-8", errors="replace"))
        quoted = "\n".join(f"  {line}" for line in lines) or "  (nothing on stderr)"
        raise PolyriseError(
            f"the launched training failed (exit code {returncode}): {shlex.join(argv)}\n"
            f"last lines of its stderr:\n{quoted}"
        )
