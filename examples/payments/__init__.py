"""The payments example: payments checked by a fraud API and a geo-IP API (see ``sandbox.payments``)."""
