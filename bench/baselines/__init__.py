"""The baselines ``python -m bench`` measures ours against, each run as its own process.

- ``raw`` (B0): aiokafka ``getmany`` → decode + encode → send, no HTTP: the floor of the stack.
- ``expert`` (B1): aiokafka + aiohttp, each fetched batch enriched with ``asyncio.gather``,
  unordered, no resilience, a lingering producer: what a careful engineer writes in an afternoon.
- ``naive_faust`` (B2): a Faust agent, one awaited HTTP call and one ``topic.send`` per event.
"""
