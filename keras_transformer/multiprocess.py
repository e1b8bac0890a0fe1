"""Data-parallel training over several processes (one per device or per machine).

N processes train one model: each holds the weights, runs the training step
on its rows of every global batch, and the engine combines the gradients, so
N processes train like one process on the same global batches. Process 0 is
the chief: it alone writes into the work directory. The others read it (it
must be on a file system every process sees: one machine, or a shared disk).

The engine is JAX's, started here before the backend makes a device (so,
like `distribution.py`, this module is not backend-neutral):
`jax.distributed.initialize` (what `keras.distribution.initialize` calls;
called directly to bound how long a dead peer goes unnoticed), CPU
collectives over gloo, then `keras.distribution.DataParallel` over every
process's devices. The other backends are refused, with the reason:

- TensorFlow (`TENSORFLOW_REFUSAL`): Keras 3.15's `fit` under
  `MultiWorkerMirroredStrategy` reduces its first batch across the workers
  to build the model, which fails for any batch that is a tuple or a dict
  (keras-team/keras#20329); ours is both.
- PyTorch (`TORCH_REFUSAL`): Keras's `fit` on the torch backend has no
  `torch.distributed` support, and our run (checkpoints, resume,
  validation, accumulation) is `fit` with its callbacks.

The data: every process reads and tokenizes the whole corpus, makes the same
global batches (the same seed), and feeds its own rows of each
(`data.pipeline.shard_rows`). An epoch thus covers every pair once over the
processes, and every step's global batch is the one-process run's.
"""

import contextlib
import dataclasses
import socket
import time

import keras

from keras_transformer.checks import check_positive_integer

TENSORFLOW_REFUSAL = (
    "the tensorflow backend trains in one process: Keras 3.15's model.fit under "
    "MultiWorkerMirroredStrategy fails on batches of dicts (it reduces the first batch "
    "across the workers; keras-team/keras#20329). Use --backend jax for several processes, "
    "or --devices N for the GPUs of one process"
)
TORCH_REFUSAL = (
    "the torch backend trains in one process: Keras's model.fit has no torch.distributed "
    "(DistributedDataParallel) support, and training here is model.fit with its callbacks. "
    "Use --backend jax for several processes"
)

# Seconds after which a silent peer counts as dead (JAX's heartbeat and start-up
# timeouts): the others then stop with an error instead of waiting forever.
PEER_TIMEOUT_SECONDS = 120


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands among `num_processes`, and how they meet.

    Attributes:
        num_processes: int, at least 2.
        process_id: int in `[0, num_processes)`; 0 is the chief.
        coordinator: str, `host:port` of process 0's coordination service.
        peer_timeout: float. Seconds before a silent peer counts as dead.
    """

    num_processes: int
    process_id: int
    coordinator: str
    peer_timeout: float = PEER_TIMEOUT_SECONDS

    def __post_init__(self):
        check_positive_integer(num_processes=self.num_processes)
        if not isinstance(self.process_id, int) or not 0 <= self.process_id < self.num_processes:
            raise ValueError(
                f"--process-id must be in [0, {self.num_processes - 1}] for --num-processes "
                f"{self.num_processes}. Received: --process-id {self.process_id!r}"
            )
        parse_coordinator(self.coordinator)
        if not self.peer_timeout > 0:
            raise ValueError(f"--peer-timeout must be positive. Received: {self.peer_timeout!r}")

    @property
    def is_chief(self):
        return self.process_id == 0


def parse_coordinator(address):
    """`(host, port)` of a `host:port` address.

    Raises:
        ValueError: naming the address, when it is not `host:port` with a
            port in 1..65535.
    """
    host, _, port = str(address or "").rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    problem = None
    if not host or not port:
        problem = "it is not host:port"
    elif not port.isdigit() or not 1 <= int(port) <= 65535:
        problem = "the port must be an integer in 1..65535"
    elif any(c.isspace() or c in "/@," for c in host):
        problem = "the host is not a host name or an IP address"
    if problem:
        raise ValueError(
            f"--coordinator {address!r}: {problem} (process 0's address and a free port, "
            f"e.g. 10.0.0.1:1234 or 127.0.0.1:1234)"
        )
    return host, int(port)


def cluster_from_arguments(num_processes, process_id, coordinator, peer_timeout=None):
    """The `Cluster` of the command line's flags, or None for a one-process run."""
    if num_processes in (None, 1) and process_id in (None, 0) and coordinator is None:
        return None
    if num_processes is None or process_id is None or coordinator is None:
        raise ValueError(
            "Several processes need --num-processes, --process-id and --coordinator together. "
            f"Received: --num-processes {num_processes}, --process-id {process_id}, "
            f"--coordinator {coordinator}"
        )
    timeout = PEER_TIMEOUT_SECONDS if peer_timeout is None else peer_timeout
    return Cluster(num_processes, process_id, coordinator, timeout)


def check_run(cluster, devices, time_budget):
    """Refuses what a run of several processes cannot do, naming the value."""
    if devices is not None:
        raise ValueError(
            f"--devices {devices} with --num-processes {cluster.num_processes}: each process "
            f"trains on every device it has (start one process per device, or leave out --devices)"
        )
    if time_budget:
        raise ValueError(
            f"--time-budget {time_budget} with --num-processes {cluster.num_processes}: the "
            f"processes must stop at the same step; give --max-steps or --epochs"
        )


def join_from_arguments(args):
    """The command line's cluster, checked and joined; None for a one-process run."""
    cluster = cluster_from_arguments(
        args.num_processes, args.process_id, args.coordinator, args.peer_timeout
    )
    if cluster is not None:
        check_run(cluster, args.devices, args.time_budget)
        initialize(cluster)  # before the backend makes a device
    return cluster


_STARTED = {}  # the cluster this process joined


def initialize(cluster):
    """Joins the cluster: before the backend lists or uses a device. Once per process.

    Raises:
        ValueError: on the TensorFlow and torch backends (`TENSORFLOW_REFUSAL`,
            `TORCH_REFUSAL`).
    """
    if "cluster" in _STARTED:
        if _STARTED["cluster"] != cluster:
            raise ValueError(f"This process joined {_STARTED['cluster']} already")
        return
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        check_coordinator(cluster)
        # XLA's CPU collectives are off unless named; gloo ships with jaxlib.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        timeout = max(int(cluster.peer_timeout), 1)
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=timeout,
            shutdown_timeout_seconds=timeout,
        )
    elif backend == "tensorflow":
        raise ValueError(f"--num-processes {cluster.num_processes}: {TENSORFLOW_REFUSAL}")
    else:
        raise ValueError(f"--num-processes {cluster.num_processes}: {TORCH_REFUSAL}")
    _STARTED["cluster"] = cluster


def check_coordinator(cluster):
    """Fails with the address when process 0 cannot listen on the coordinator's port, or
    when, for another process, nothing answers there within `peer_timeout` (JAX would
    abort the process with "Deadline Exceeded", naming nothing)."""
    host, port = parse_coordinator(cluster.coordinator)
    where = f"--coordinator {cluster.coordinator!r}"
    if cluster.is_chief:  # JAX's service listens on every interface at the port
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind(("", port))
            except OSError as error:
                message = f"{where}: process 0 cannot listen on port {port} ({error})"
                raise ValueError(message) from None
        return
    deadline = time.monotonic() + cluster.peer_timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5, cluster.peer_timeout)):
                return
        except socket.gaierror as error:
            raise ValueError(f"{where}: unknown host {host!r} ({error})") from None
        except OSError as error:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"{where}: nothing answered there within {cluster.peer_timeout:g} s "
                    f"({error}); start process 0 with the same --coordinator, and check that "
                    f"this machine reaches its port"
                ) from None
            time.sleep(0.5)


def joined():
    """The `Cluster` this process joined, or None."""
    return _STARTED.get("cluster")


def is_chief():
    """Whether this process writes files: process 0, or a process not in a cluster."""
    cluster = joined()
    return cluster is None or cluster.is_chief


def local_device_count():
    """Devices of this process that train (1 on a CPU)."""
    import jax

    return jax.local_device_count()


def replicas():
    """Replicas over every process: the global batch is this many token budgets."""
    cluster = joined()
    return cluster.num_processes * local_device_count()


@contextlib.contextmanager
def scope():
    """Models built, compiled, loaded and fit within train on every process's devices."""
    devices = keras.distribution.list_devices()  # every process's, after initialize
    # Each process feeds its own rows (`shard_rows`); Keras must not shard again.
    with keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False).scope():
        yield replicas()


def distribute(dataset):
    """What `fit` and `evaluate` take: this process's rows of each of `dataset`'s (global)
    batches in a cluster; outside one, `dataset` itself (None stays None)."""
    cluster = joined()
    if cluster is None or dataset is None:
        return dataset
    from keras_transformer.data.pipeline import shard_rows

    return shard_rows(dataset, cluster.process_id, cluster.num_processes)


def barrier(name):
    """Waits until every process of the cluster reaches `barrier(name)`."""
    if joined() is None:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
