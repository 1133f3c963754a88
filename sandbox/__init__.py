"""Faithful local simulators of the five vendor APIs (the vendors' side).

One subpackage per vendor (``sandbox.aimsio``, ``sandbox.aqua``, …; each exports ``SIM``,
its ``VendorSim`` subclass and ``DEMO_CREDENTIALS``) over a small shared core: ``app`` (the
simulator base class and the aiohttp app), ``server``, ``clock``, ``data``, ``faults``,
``limits`` and ``stats``. The core imports no vendor (``server`` loads them by name from
``VENDORS``), no vendor imports another, and nothing here imports from ``service``
(import-linter contracts in ``pyproject.toml``).
"""

VENDORS = ("aimsio", "aqua", "imis", "amilia", "aimms")
