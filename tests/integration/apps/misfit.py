"""A user pipeline whose output breaks its schema for some events and drops others (no API calls)."""

from pathlib import Path

from streams import Pipeline

pipeline = Pipeline("misfit", source="misfit", sink="misfit.out", input_schema="dev.example.payments.Payment",
                    output_schema="dev.example.payments.CheckedPayment",
                    schemas=Path(__file__).resolve().parents[3] / "examples" / "payments" / "schemas")


@pipeline.step()
def verdict(event):
    return {"score": 1, "decision": "allow"} if event["amount_cents"] % 7 else {"score": "high", "decision": "?"}


@pipeline.output
def checked(event, verdict):
    if event["amount_cents"] % 11 == 0 and event["amount_cents"] % 7:
        return None  # filtered
    return {**event, "account": {"holder": "h", "country": "DE", "status": "active"}, "geo": None,
            "fraud": verdict, "checked_at": 0, "pipeline": pipeline.name}
