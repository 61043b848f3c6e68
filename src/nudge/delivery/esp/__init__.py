"""One module per ESP, each only translating messages into that ESP's calls.

Modules are imported by name through `nudge.delivery.registry`, never here, so
that a missing SDK only matters to the ESP that needs it.
"""
