"""Start or attach to Ray and place WhyMail's actors (shards, directory, gateways)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import ray

from actors.directory import Directory
from actors.mailbox_shard import MailboxShard
from actors.notification_hub import HUB_NAME, NotificationHub
from whymail.runtime import Runtime
from whymail.sharding import shard_name

log = logging.getLogger("whymail.cluster")

# Ray on these machines: loopback only, no dashboard, no usage reporting (DESIGN.md).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Cluster:
    """Handles of the running actors."""

    namespace: str
    shard_names: list[str]
    shards: list = field(default_factory=list)
    directory: object = None
    hub: object = None
    smtp_gateways: list = field(default_factory=list)
    smtp_port: int = 0
    submission_port: int = 0
    smtps_port: int = 0
    queues: list = field(default_factory=list)
    imap_gateways: list = field(default_factory=list)
    imap_port: int = 0
    http_gateways: list = field(default_factory=list)
    http_port: int = 0
    imaps_port: int = 0


def start_ray(address: str, namespace: str) -> None:
    """Attach to `address` ('auto' or host:port), or start a local loopback-only Ray."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    else:
        ray.init(
            namespace=namespace,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            configure_logging=False,
        )


def start_actors(
    runtime: Runtime,
    *,
    smtp_port: int | None = None,
    submission_port: int | None = None,
    smtps_port: int | None = None,
    imap_port: int | None = None,
    imaps_port: int | None = None,
    http_port: int | None = None,
    gateways: int = 1,
) -> Cluster:
    """Create (or find, when attaching) the shards, the Directory and the gateways; wait until ready."""
    from actors.delivery_queue import DeliveryQueue
    from gateways.http import HttpGateway
    from gateways.imap import ImapGateway  # gateways import actors, not the reverse
    from gateways.smtp import SmtpGateway

    namespace = runtime.config.ray.namespace
    names = [shard_name(i) for i in range(runtime.config.ray.shards)]
    cluster = Cluster(namespace=namespace, shard_names=names)
    common = {"namespace": namespace, "get_if_exists": True, "num_cpus": 0, "max_concurrency": 1000}
    cluster.hub = NotificationHub.options(name=HUB_NAME, **common).remote(runtime)  # before its publishers
    for name in names:
        cluster.shards.append(MailboxShard.options(name=name, **common).remote(name, runtime))
    cluster.directory = Directory.options(name="directory", **common).remote(runtime)
    ray.get([shard.ready.remote() for shard in cluster.shards] + [cluster.directory.ready.remote(),
                                                                  cluster.hub.ready.remote()])
    for index in range(runtime.config.queue.workers):
        cluster.queues.append(
            DeliveryQueue.options(name=f"delivery-queue-{index}", **common).remote(
                f"delivery-queue-{index}", runtime, names, namespace
            )
        )
    for index in range(gateways):
        cluster.smtp_gateways.append(
            SmtpGateway.options(name=f"smtp-gateway-{index}", **common).remote(
                runtime, names, namespace, smtp_port, submission_port, smtps_port
            )
        )
        cluster.imap_gateways.append(
            ImapGateway.options(name=f"imap-gateway-{index}", **common).remote(
                runtime, names, namespace, imap_port, imaps_port
            )
        )
        cluster.http_gateways.append(
            HttpGateway.options(name=f"http-gateway-{index}", **common).remote(
                runtime, names, namespace, http_port, index
            )
        )
    ports = ray.get([gateway.ready.remote() for gateway in cluster.smtp_gateways])
    cluster.smtp_port, cluster.submission_port, cluster.smtps_port = ports[0]
    ray.get([queue.ready.remote() for queue in cluster.queues])
    cluster.imap_port, cluster.imaps_port = ray.get(cluster.imap_gateways[0].ready.remote())
    cluster.http_port = ray.get([gateway.ready.remote() for gateway in cluster.http_gateways])[0]
    log.info(
        "actors ready: %d shards, %d queue(s), %d gateway(s) of each kind: SMTP %d, submission %d, "
        "SMTPS %d, IMAP %d, IMAPS %d, HTTP %d",
        len(names), len(cluster.queues), gateways, cluster.smtp_port, cluster.submission_port,
        cluster.smtps_port, cluster.imap_port, cluster.imaps_port, cluster.http_port,
    )
    return cluster


def stop_actors(cluster: Cluster, grace: float = 10.0) -> None:
    """Graceful stop: gateways stop accepting and drain, then every actor is killed."""
    try:
        gateways = [*cluster.smtp_gateways, *cluster.imap_gateways, *cluster.http_gateways]
        ray.get([gateway.stop.remote(grace) for gateway in gateways], timeout=grace + 5)
    except Exception as exc:  # a gateway that is already gone needs no draining
        log.warning("gateway stop: %r", exc)
    try:
        ray.get([queue.stop.remote() for queue in cluster.queues], timeout=grace + 5)
    except Exception as exc:
        log.warning("queue stop: %r", exc)
    handles = [
        *cluster.smtp_gateways, *cluster.imap_gateways, *cluster.http_gateways, *cluster.queues,
        cluster.directory, *cluster.shards, cluster.hub,
    ]
    for handle in handles:
        if handle is not None:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:
                log.debug("kill: %r", exc)
