"""The operator console (``streams console``): the pipeline's state and its dead letters in a browser.

``state`` reads what the workers announce (``streams.announce``) and the group's offsets,
``app`` serves the pages and runs redrives, ``guard`` decides who may, ``pages`` renders HTML.
See docs/console.md.
"""
