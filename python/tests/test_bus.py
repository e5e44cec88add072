"""Bus mode: the Pipecat processors on a `BusClient` talking to a real `voicerag serve` (the
workspace's binary, built here in the dev profile if needed) on a private nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from pipecat.workers.runner import WorkerRunner

import voicerag
from conftest import ROOT, RUNTIME, overrides, wait_until
from pipecat_support import AgentUnderTest
from voicerag.memories import is_memory_message

NATS_SERVER = ROOT / "runtime" / "nats-server"
ALICE = [("a1", "my dog Rex loves running on the beach"), ("a2", "my sister Ana lives in Porto")]
BOB = [("b1", "my dog Bruno is afraid of the beach"), ("b2", "I work night shifts at the hospital")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nats-server exited at start-up: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nats-server not listening on {port}")


@pytest.fixture
def voicerag_serve(tmp_path):
    """A nats-server with JetStream and one `voicerag serve` replica; yields the NATS URL."""
    if not NATS_SERVER.exists():
        pytest.fail(f"{NATS_SERVER} is missing: run make setup")
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is needed to build the voicerag binary for the bus test")
    subprocess.run([cargo, "build", "--quiet", "--bin", "voicerag"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "debug" / "voicerag"
    port = free_port()
    nats = subprocess.Popen(
        [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    serve = None
    try:
        wait_listening(port, nats)
        env = {"PATH": os.environ.get("PATH", "")}
        for key, value in overrides(tmp_path / "data").items():
            env[f"VOICERAG_{key.upper()}"] = str(value)
        env["VOICERAG_RUNTIME__LIBRARY"] = str(RUNTIME)
        serve = subprocess.Popen(
            [str(binary), "serve", "--nats-url", url, "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
        )
        yield url, serve, tmp_path / "serve.log"
    finally:
        for proc in (serve, nats):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_pipecat_processors_over_the_bus(voicerag_serve):
    url, serve, log = voicerag_serve

    async def run():
        client = await voicerag.BusClient.connect(url, timeout_ms=5000)

        async def ready() -> bool:
            if serve.poll() is not None:
                raise AssertionError(f"voicerag serve exited: {log.read_text()[-2000:]}")
            try:
                await client.health()
                return True
            except voicerag.BusError:
                return False

        await wait_until(ready, "voicerag serve to answer voice.health", timeout_s=120)
        for ns, memories in (("alice", ALICE), ("bob", BOB)):
            for utt, text in memories:
                await client.reply(text, namespace=ns, conversation="c0", utterance=utt)

        async def seeded() -> bool:
            a = await client.query("dog beach sister Porto", namespace="alice", top_k=10)
            b = await client.query("dog beach hospital", namespace="bob", top_k=10)
            return len(a.hits) == 2 and len(b.hits) == 2

        await wait_until(seeded, "the seeded memories to be committed by the replica")

        alice = AgentUnderTest(client, "alice", "call-a")
        bob = AgentUnderTest(client, "bob", "call-b")
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(alice.worker, bob.worker)
        running = asyncio.create_task(runner.run())
        try:
            question = "what does my dog love to do?"
            a1, b1 = await asyncio.gather(
                alice.say(["what does my dog"], question), bob.say(["what does"], question)
            )
            for messages, mine, theirs in ((a1, ALICE, BOB), (b1, BOB, ALICE)):
                recalled = [m["content"] for m in messages if is_memory_message(m.get("content"))]
                assert len(recalled) == 1 and mine[0][1] in recalled[0]
                assert not any(text in recalled[0] for _, text in theirs)
                assert messages[-1] == {"role": "user", "content": question}
            assert alice.memory.last_result.deadline_met

            async def remembered() -> bool:
                q = await client.query("I remember Rex", namespace="alice", top_k=10)
                return "call-a/u1-reply" in [h.id for h in q.hits]

            await wait_until(remembered, "alice's reply to be stored through the memory stream")
            forgot = await client.forget(namespace="alice", conversation="call-a")
            assert forgot["scope"] == "conversation"
        finally:
            await alice.end()
            await bob.end()
            await asyncio.wait_for(running, 60)
            await client.close()
        with pytest.raises(voicerag.PipelineClosedError):
            client.submit({"namespace": "alice", "conversation": "c", "utterance": "u", "text": "x"})

    asyncio.run(run())


def test_a_dead_bus_is_a_clear_error():
    async def run():
        with pytest.raises(voicerag.BusError, match="cannot connect to NATS"):
            await voicerag.BusClient.connect(f"nats://127.0.0.1:{free_port()}", timeout_ms=500)

    asyncio.run(run())


@pytest.fixture
def nats_monitored(tmp_path):
    """A bare nats-server (no voicerag) with its monitoring port; yields (url, monitor port)."""
    if not NATS_SERVER.exists():
        pytest.fail(f"{NATS_SERVER} is missing: run make setup")
    port, monitor = free_port(), free_port()
    nats = subprocess.Popen(
        [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, nats)
        wait_listening(monitor, nats)
        yield f"nats://127.0.0.1:{port}", monitor
    finally:
        nats.terminate()
        try:
            nats.wait(30)
        except subprocess.TimeoutExpired:
            nats.kill()


def context_subscriptions(monitor: int) -> list[str]:
    """The `voice.context.*` subjects subscribed on the server, as the server itself reports them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz?subs=1", timeout=10) as reply:
        connz = json.load(reply)
    return sorted(
        subject
        for connection in connz.get("connections") or []
        for subject in connection.get("subscriptions_list") or []
        if subject.startswith("voice.context.")
    )


async def unanswered_context(client, namespace: str, conversation: str) -> None:
    """A final nobody answers (no voicerag serve): subscribes, then times out."""
    with pytest.raises(voicerag.BusError, match="no context"):
        await client.context({"namespace": namespace, "conversation": conversation,
                              "utterance": "u1", "text": "hello", "is_final": True})


def test_a_long_lived_client_keeps_at_most_max_conversations_subscribed(nats_monitored):
    url, monitor = nats_monitored

    async def run():
        client = await voicerag.BusClient.connect(url, timeout_ms=100, max_conversations=2,
                                                  context_idle_ms=600_000)
        try:
            for i in range(5):
                await unanswered_context(client, "alice", f"call-{i}")
            last_two = ["voice.context.alice.call-3", "voice.context.alice.call-4"]

            async def bounded() -> bool:
                return await asyncio.to_thread(context_subscriptions, monitor) == last_two

            # Unsubscribing reaches the server asynchronously: wait for it, generously.
            await wait_until(bounded, "only the two most recent conversations to stay subscribed")
            # An evicted conversation subscribes again and is served like a new one.
            await unanswered_context(client, "alice", "call-0")

            async def resubscribed() -> bool:
                subs = await asyncio.to_thread(context_subscriptions, monitor)
                return subs == ["voice.context.alice.call-0", "voice.context.alice.call-4"]

            await wait_until(resubscribed, "call-0 subscribed again in place of call-3")
        finally:
            await client.close()

    asyncio.run(run())


def test_an_idle_conversation_s_subscription_is_closed(nats_monitored):
    url, monitor = nats_monitored

    async def run():
        client = await voicerag.BusClient.connect(url, timeout_ms=100, context_idle_ms=3000)
        try:
            for conversation in ("call-a", "call-b"):
                await unanswered_context(client, "bob", conversation)
            subscribed = await asyncio.to_thread(context_subscriptions, monitor)
            assert subscribed == ["voice.context.bob.call-a", "voice.context.bob.call-b"]

            async def none_left() -> bool:
                return await asyncio.to_thread(context_subscriptions, monitor) == []

            await wait_until(none_left, "the idle conversations' subscriptions to close")
        finally:
            await client.close()

    asyncio.run(run())
