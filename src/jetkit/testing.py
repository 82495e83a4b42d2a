"""Helpers for testing against real NATS: a local cluster to kill nodes of.

``local_cluster(3)`` starts three nats-servers routed on loopback (JetStream on every
node, one temporary store each) and stops them at the end of the ``async with``::

    async with jetkit.testing.local_cluster(3) as cluster:
        async with jk.Stream.open(servers=cluster.urls, user=cluster.user,
                                  password=cluster.password) as s:
            await s.declare_topic("orders.events", replicas=3)
            await cluster.kill(cluster.node((await s.topic_info("orders.events")).leader))
"""

from ._cluster import LocalCluster, Node, local_cluster

__all__ = ["LocalCluster", "Node", "local_cluster"]
