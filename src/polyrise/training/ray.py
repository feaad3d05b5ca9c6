"""A multi-process training on a Ray cluster (`cluster:` of a run config): one Ray task pinned to each node runs
that node's `accelerate launch` with its machine rank; rank 0 is the driver's node when it takes part, so the
model is written once, where the driver reads it. The run dir must be at the same path on every node (a shared
filesystem), as for any multi-node training: every node reads the data and the model from there."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from polyrise.errors import PolyriseError
from polyrise.generation.ray import alive_nodes, cluster_resources, connect, node_name
from polyrise.settings import ClusterSettings
from polyrise.training.launch import Machines, launch_command, run_launched


@ray.remote(num_cpus=0, max_retries=0)
def _free_port() -> int:
    """A TCP port nothing listens on now, on the node this task runs on (the main node's rendezvous port)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


@ray.remote(num_cpus=0, max_retries=0)
def _launch(
    num_processes: int, accelerate_config: Path | None, machines: Machines, module: Sequence[str], cwd: Path
) -> None:
    """This node's `accelerate launch` of `module` (its argv) as machine `machines.rank`, in `cwd`."""
    run_launched(launch_command(num_processes, accelerate_config, machines=machines) + list(module), cwd=cwd)


def _pinned(node: dict[str, Any]) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)


def launch_on_cluster(
    cluster: ClusterSettings,
    num_processes: int,
    accelerate_config: Path | None,
    module: Sequence[str],
    cwd: Path,
) -> None:
    """Run `module` (a module name and its args) under `accelerate launch` on every node of the cluster that has
    GPUs (on a cluster without any: CPUs), `num_processes` processes in all, split evenly; returns when every node
    finished, or raises one error naming the node that failed (the others are stopped)."""
    connect(cluster)
    gpus = cluster_resources().get("GPU", 0) > 0
    nodes = [node for node in alive_nodes() if node["Resources"].get("GPU" if gpus else "CPU", 0) > 0]
    here = ray.get_runtime_context().get_node_id()
    nodes.sort(key=lambda node: node["NodeID"] != here)  # the driver's node is rank 0: the model is saved there
    if not nodes or num_processes % len(nodes):
        raise PolyriseError(
            f"training.num_processes {num_processes} cannot be split evenly over the Ray cluster's "
            f"{len(nodes)} {'GPU' if gpus else 'CPU'} nodes: give a multiple of {len(nodes) or 1}"
        )
    main = nodes[0]
    port = ray.get(_free_port.options(scheduling_strategy=_pinned(main)).remote())
    names = {}
    for rank, node in enumerate(nodes):
        machines = Machines(len(nodes), rank, main["NodeManagerAddress"], port)
        task = _launch.options(scheduling_strategy=_pinned(node))
        names[task.remote(num_processes, accelerate_config, machines, list(module), cwd)] = node_name(
            node["NodeID"], node["NodeManagerAddress"]
        )
    pending = list(names)
    try:
        while pending:
            [done], pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)
            except RayTaskError as e:
                cause = e.cause if isinstance(e.cause, PolyriseError) else e
                raise PolyriseError(f"the training on {names[done]} failed: {cause}") from None
            except RayError as e:
                raise PolyriseError(f"the training on {names[done]} was lost: {type(e).__name__}: {e}") from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
