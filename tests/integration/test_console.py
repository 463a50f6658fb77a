"""The operator console in a real browser (headless Chromium driven by selenium), against two real
workers, the sandbox and the broker: an outage seen and over, 404s dead-lettered, filtered and
redriven, each selected letter replayed once and enriched. And what the console refuses.

Screenshots of the overview and the DLQ browser go to the test's tmp dir, or to the folder
``STREAMS_CONSOLE_SCREENSHOTS`` names (the README's come from ``docs/images``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics, producer
from streams.names import Header, dlq_topic, replay_ledger_topic, retry_topic
from streams.worker_process import ChildProcess
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, PipelineUnderTest, pipeline_under_test, set_faults, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
LETTERS = 12
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@contextlib.contextmanager
def running_console(pipeline: PipelineUnderTest, log: Path, *args: str, **env: str) -> Iterator[str]:
    """``streams console`` as a real process on a free port, for the block; its URL (from its log line)."""
    process = ChildProcess([sys.executable, "-m", "streams", "console", "--port", "0", *args], log, {
        "KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
        "STREAMS_PIPELINE": pipeline.name, "STREAMS_INPUT_TOPIC": pipeline.input_topic,
        "STREAMS_OUTPUT_TOPIC": pipeline.output_topic, "STREAMS_LOG_FORMAT": "text", **env}).start()
    try:
        end = time.monotonic() + 60
        while not (found := re.findall(r"console of \S+ on (http://\S+:\d+)", log.read_text(errors="replace"))):
            assert process.alive and time.monotonic() < end, f"the console did not start: {log.read_text()}"
            time.sleep(0.1)
        yield found[-1]
        assert process.alive, log.read_text()
    finally:
        process.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    assert CHROMIUM and CHROMEDRIVER, ("the browser test needs Debian's chromium and chromium-driver "
                                       "(make test-tools installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100",
                     "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _attr(driver: Any, css: str, name: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        value = driver.find_element("css selector", css).get_attribute(name)
        return None if value is None else str(value)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def _read(bootstrap: str, topic: str, at_least: int, idle: float = 3.0, deadline: float = 90.0) -> list[Any]:
    """Records of ``topic`` as a confluent-kafka consumer reading committed data gets them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"console-check-{time.time()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
        found: list[Any] = []
        give_up, last = time.monotonic() + deadline, time.monotonic()
        while time.monotonic() < give_up and (len(found) < at_least or time.monotonic() - last < idle):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                continue
            found.append(message)
            last = time.monotonic()
        return found
    finally:
        consumer.close()


def _headers(message: Any) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in message.headers() or []}


async def test_the_console_shows_an_outage_and_redrives_dead_letters_exactly_once(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path, browser: Any
) -> None:
    shots = Path(os.environ.get("STREAMS_CONSOLE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(PARTITIONS)
    await ensure_topics(kafka_bootstrap, {retry_topic(pipeline.name, d): PARTITIONS for d in ("5s", "1m", "10m")})
    fast = {"STREAMS_ANNOUNCE_INTERVAL": "1", "STREAMS_API_CUSTOMERS_RETRIES": "1"}
    orders = iter(sample_orders(5000, customers=500))
    stop_load = asyncio.Event()
    loaded: set[str] = set()  # event ids of the steady load

    async def steady_load() -> None:  # 20 orders a second, as long as the outage part lasts
        async with producer(kafka_bootstrap) as client:
            while not stop_load.is_set():
                order = next(orders)
                loaded.add(order["event_id"])
                await client.send(pipeline.input_topic, SERDE.encode(ORDER_PLACED, order),
                                  key=order["customer_id"].encode())
                await asyncio.sleep(0.05)

    with (pipeline.worker(0, **fast) as first, pipeline.worker(1, **fast) as second,
          running_console(pipeline, tmp_path / "console.log", STREAMS_CONSOLE_REFRESH="1",
                          STREAMS_CONSOLE_REDACT_FIELDS="shipping_country") as url):
        driver = browser
        driver.get(url + "/")

        def workers_and_partitions() -> bool:
            rows = driver.find_elements("css selector", "tr.worker[data-status=running]")
            owned = [row.get_attribute("data-partitions") for row in rows]
            return len(rows) == 2 and all(owned) and sorted(
                int(p) for text in owned for p in text.split(",")) == list(range(PARTITIONS))

        await wait_for(workers_and_partitions, 90, "both workers and all 4 partitions on the overview")
        driver.save_screenshot(str(shots / "console-overview.png"))

        load = asyncio.create_task(steady_load())
        await asyncio.sleep(2)
        await set_faults(fault_sandbox.url, "customers", {"outages": [{"start_s": 0, "duration_s": None,
                                                                       "status": 503}]})
        outage_began = time.monotonic()
        await wait_for(lambda: _attr(driver, "tr.api[data-api=customers]", "data-state") == "open"
                       and _attr(driver, "#consumption", "data-state") == "paused", 10,
                       "the customers circuit open and consumption paused on the overview, within 10 s")
        seen_open = time.monotonic() - outage_began
        driver.save_screenshot(str(shots / "console-overview-outage.png"))
        await set_faults(fault_sandbox.url, "customers", None)
        await wait_for(lambda: _attr(driver, "tr.api[data-api=customers]", "data-state") == "closed"
                       and _attr(driver, "#consumption", "data-state") == "consuming", 60,
                       "the circuit closed and consumption resumed on the overview")
        stop_load.set()
        await load

        async def load_settled() -> bool:  # its retries done, so none of them meets the 404s below
            out = await asyncio.to_thread(_read, kafka_bootstrap, pipeline.output_topic, 1, 1.0, 30.0)
            return loaded <= {_headers(m).get(Header.EVENT_ID) for m in out}

        await wait_for(load_settled, 120, "every event of the load enriched after the outage")

        # 404s: each order of these customers is dead-lettered (permanent).
        await set_faults(fault_sandbox.url, "customers", {"errors": {"404": 1.0}})
        doomed = [next(orders) for _ in range(LETTERS)]
        await pipeline.produce(doomed)
        await wait_for(lambda: int(_attr(driver, "#dlq-size", "data-count") or 0) >= LETTERS, 60,
                       f"{LETTERS} dead letters counted on the overview")
        await set_faults(fault_sandbox.url, "customers", None)

        driver.get(url + "/dlq")
        driver.find_element("id", "filter-status").send_keys("404")
        driver.find_element("id", "filter-api").send_keys("customers")
        driver.find_element("id", "apply-filters").click()
        await wait_for(lambda: _attr(driver, "#dlq-counts", "data-matched") is not None, 30, "the filtered list")
        assert _attr(driver, "#dlq-counts", "data-matched") == str(LETTERS), driver.page_source[:3000]
        refs = [row.get_attribute("data-ref") for row in driver.find_elements("css selector", "tr.letter")]
        assert len(refs) == LETTERS
        driver.save_screenshot(str(shots / "console-dlq.png"))

        driver.get(f"{url}/dlq/letter/{refs[0]}")
        value = driver.find_element("id", "letter-value").text
        assert '"shipping_country": "[REDACTED]"' in value, value
        assert "404" in driver.find_element("id", "letter-error").text
        shown = json.loads(value)
        original = next(o for o in doomed if o["event_id"] == shown["event_id"])
        assert f'"shipping_country": "{original["shipping_country"]}"' not in driver.page_source

        driver.back()
        driver.find_element("id", "preview-redrive").click()
        await wait_for(lambda: _attr(driver, "#preview-count", "data-count") is not None
                       or "refused" in driver.page_source, 30, "the preview")
        assert _attr(driver, "#preview-count", "data-count") == str(LETTERS), driver.page_source[:3000]
        driver.find_element("id", "operator").send_keys("ops-on-call")
        driver.find_element("id", "confirm-redrive").click()
        await wait_for(lambda: _attr(driver, "#job-state", "data-state") in ("done", "failed"), 60,
                       "the redrive to finish")
        assert _attr(driver, "#job-state", "data-state") == "done", driver.page_source[:3000]
        assert _attr(driver, "#job-state", "data-replayed") == str(LETTERS)

        # Each selected letter once on the input (read committed by confluent-kafka), then enriched.
        replays = await asyncio.to_thread(_read, kafka_bootstrap, pipeline.input_topic, 1)
        replayed = Counter(_headers(m).get(Header.REPLAY_OF) for m in replays if Header.REPLAY_OF in _headers(m))
        assert replayed == Counter({f"{dlq_topic(pipeline.name)}:{ref}": 1 for ref in refs})
        wanted = {o["event_id"] for o in doomed}

        async def enriched() -> bool:
            out = await asyncio.to_thread(_read, kafka_bootstrap, pipeline.output_topic, 1, 1.0, 30.0)
            return wanted <= {_headers(m).get(Header.EVENT_ID) for m in out}

        await wait_for(enriched, 90, "every redriven event enriched on the output")
        ledger = await asyncio.to_thread(_read, kafka_bootstrap, replay_ledger_topic(pipeline.name), LETTERS)
        entries = [json.loads(m.value()) for m in ledger]
        assert len(entries) == LETTERS
        assert all(e["by"] == "ops-on-call" and e["via"] == "console" and e["replayed_at"] > 0 for e in entries)
        assert first.alive and second.alive, first.log_tail() + second.log_tail()
    print(f"\ncircuit open and consumption paused on the overview {seen_open:.1f} s after the outage began; "
          f"{LETTERS} letters redriven once each and enriched")


async def test_the_console_refuses_requests_without_the_token_and_forged_posts(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, "http://127.0.0.1:1", unique, tmp_path)
    await pipeline.create_topics(PARTITIONS)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
           "STREAMS_PIPELINE": pipeline.name, "STREAMS_INPUT_TOPIC": pipeline.input_topic}

    refused = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "streams", "console", "--host",
                                                       "0.0.0.0", "--port", "0"], env={**os.environ, **env},
                                      capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "not a loopback address" in refused.stderr, refused.stderr

    token = "console-token-" + unique
    (tmp_path / "token").write_text(token + "\n")
    with running_console(pipeline, tmp_path / "console.log", "--host", "0.0.0.0",
                         STREAMS_CONSOLE_TOKEN_FILE=str(tmp_path / "token")) as url:
        url = url.replace("0.0.0.0", "127.0.0.1")
        bearer = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as anonymous:
            for path in ("/", "/api/overview", "/dlq"):
                async with anonymous.get(url + path, allow_redirects=False) as answer:
                    assert answer.status in (401, 303), (path, answer.status)
                    assert token not in await answer.text()
            async with anonymous.get(url + "/", headers={"Authorization": "Bearer wrong"}) as answer:
                assert answer.status == 401
            async with anonymous.post(url + "/dlq/redrive", data={"refs": "0:0", "operator": "x"}) as answer:
                assert answer.status == 401
        async with aiohttp.ClientSession(headers=bearer, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(url + "/dlq") as answer:
                assert answer.status == 200
                page = await answer.text()
                assert token not in page
            forged = {"refs": "0:0", "operator": "mallory", "selection": "x"}
            async with client.post(url + "/dlq/redrive", data=forged) as answer:
                assert answer.status == 403, await answer.text()
            async with client.post(url + "/dlq/redrive", data={**forged, "csrf": "0" * 64}) as answer:
                assert answer.status == 403
            async with client.get(url + "/login") as answer:  # the form carries this session's token
                csrf = re.findall(r'name=csrf value="([0-9a-f]{64})"', await answer.text())[0]
            async with client.post(url + "/dlq/redrive/preview", data={"csrf": csrf},
                                   headers={"Origin": "http://evil.example"}) as answer:
                assert answer.status == 403
            async with client.post(url + "/dlq/redrive/preview", data={"csrf": csrf}) as answer:
                assert answer.status == 200, await answer.text()
                assert 'id=preview-count data-count=0' in await answer.text()
        jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as browser_like:  # signs in once with the token: a cookie
            async with browser_like.get(url + "/login") as answer:
                csrf = re.findall(r'name=csrf value="([0-9a-f]{64})"', await answer.text())[0]
            async with browser_like.post(url + "/login", data={"csrf": csrf, "token": "wrong"}) as answer:
                assert answer.status == 401
            async with browser_like.post(url + "/login", data={"csrf": csrf, "token": token}) as answer:
                assert answer.status == 200 and "Overview" in await answer.text()
            async with browser_like.get(url + "/api/overview") as answer:
                assert answer.status == 200
    log = (tmp_path / "console.log").read_text()
    assert token not in log
