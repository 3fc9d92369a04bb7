"""tribind: the application layer. It composes encoders, index, service and training into one CLI.

Nothing below this package imports it (see docs/architecture.md for the dependency direction).
"""

__version__ = "0.1.0"
