"""Several HTTP gateways share one NotificationHub: each gateway's sockets get their own users' events,
whichever gateway the other users are connected to."""

from __future__ import annotations

import asyncio
import json
import uuid

import ray
from websockets.asyncio.client import connect

from tests.integration.conftest import MailSystem
from tests.integration.test_api_events import _deliver, _login, _next


def _start_second_gateway(system: MailSystem):
    """Another HttpGateway of the running system, as actors/cluster.py creates them (own name and hub key)."""
    from gateways.http import HttpGateway

    cluster = system.cluster
    index = 100 + uuid.uuid4().int % 800  # its own feed key at the hub: http-gateway-<index>
    handle = HttpGateway.options(
        name=f"http-gateway-{index}", namespace=cluster.namespace, num_cpus=0, max_concurrency=1000,
    ).remote(system.runtime, cluster.shard_names, cluster.namespace, 0, index)
    return handle, ray.get(handle.ready.remote(), timeout=60)


def test_users_on_two_gateways_each_get_their_own_new_message_events(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    alice_token, bob_token = _login(mail_system, alice).token, _login(mail_system, bob).token
    second, second_port = _start_second_gateway(mail_system)
    try:
        assert second_port != mail_system.http_port

        async def scenario():
            first_url = f"ws://127.0.0.1:{mail_system.http_port}/ws?token={alice_token}"
            second_url = f"ws://127.0.0.1:{second_port}/ws?token={bob_token}"
            async with connect(first_url) as a, connect(second_url) as b:
                assert json.loads(await a.recv())["type"] == "connected"
                assert json.loads(await b.recv())["type"] == "connected"
                await asyncio.to_thread(_deliver, mail_system, alice, "alice one")
                assert (await _next(a, "new_message", timeout=10))["data"]["subject"] == "alice one"
                # Bob's first event must be his own: Alice's, had it reached gateway 2, would come first.
                await asyncio.to_thread(_deliver, mail_system, bob, "bob one")
                assert (await _next(b, "new_message", timeout=10))["data"]["subject"] == "bob one"
                # And Bob's did not reach gateway 1: Alice's next event is her second message.
                await asyncio.to_thread(_deliver, mail_system, alice, "alice two")
                assert (await _next(a, "new_message", timeout=10))["data"]["subject"] == "alice two"

        asyncio.run(scenario())
    finally:
        try:
            ray.get(second.stop.remote(1.0), timeout=10)
        finally:
            ray.kill(second, no_restart=True)
