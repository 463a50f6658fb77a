"""Payments checked against their account, the geo-IP of their address and a fraud score.

    streams worker --app examples.payments.pipeline:pipeline

A user's pipeline: its own topics, schemas (``schemas/`` beside this file) and APIs, and
nothing from the package but its public API. ``pipeline.yaml`` beside it is the same pipeline
without Python.
"""

import time

from streams import Api, Batch, Breaker, Permanent, Pipeline, Transient

SANDBOX = "http://127.0.0.1:8080"  # STREAMS_API_<NAME>_URL overrides each
accounts = Api("accounts", SANDBOX, probe="/v1/accounts/A000001")
geo = Api("geo", SANDBOX, timeout=2.0, breaker=Breaker(open_seconds=1.0))  # optional: probe again soon
fraud = Api("fraud", SANDBOX, rate_limit=500)

pipeline = Pipeline("payments-checker", source="payments", sink="payments.checked",
                    input_schema="dev.example.payments.Payment",
                    output_schema="dev.example.payments.CheckedPayment")


@pipeline.step(accounts)  # required: an unknown account (404) sends the payment to the DLQ
async def account(event):
    found = await accounts.get("/v1/accounts/{id}", id=event["account_id"])
    return {"holder": found["holder"], "country": found["country"], "status": found["status"]}


@pipeline.step(geo, required=False, fallback=None)  # optional: while it is down, geo is null
async def location(event):
    found = await geo.get("/v1/geo/{ip}", ip=event["ip"])
    return {"country": found["country"], "city": found["city"], "asn": found["asn"]}


@pipeline.step(fraud, batch=Batch(max_size=50))  # many payments per call; each fails alone
async def verdict(event, account):
    items = [{"id": str(n), "payment_id": e["payment_id"], "account_id": e["account_id"],
              "amount_cents": e["amount_cents"], "currency": e["currency"], "country": a["country"]}
             for n, (e, a) in enumerate(zip(event, account, strict=True))]
    answer = await fraud.post("/v1/fraud/score/batch", {"items": items})
    by_id = {entry["id"]: entry for entry in answer["results"]}
    return [_verdict(by_id.get(str(n))) for n in range(len(items))]


def _verdict(entry):
    if entry is None:
        return Permanent("fraud: no answer for this payment", api="fraud")
    if "error" in entry:
        status = entry["error"]["status"]
        error = Transient if status >= 500 or status in (408, 429) else Permanent
        return error(f"fraud: {entry['error'].get('message', 'refused')}", status=status, api="fraud")
    return {"score": entry["score"], "decision": entry["decision"]}


@pipeline.output
def checked(event, account, location, verdict):
    return {**event, "account": account, "geo": location, "fraud": verdict,
            "checked_at": int(time.time() * 1000), "pipeline": pipeline.name}
