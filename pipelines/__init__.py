"""Pipelines written on the public API of ``streams``, as any user writes them; ``orders`` is the demo."""
