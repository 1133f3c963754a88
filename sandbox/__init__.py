"""Faithful local simulators of the five vendor APIs (the vendors' side).

Nothing here imports from ``service``: the sandbox stands where the vendor would.
"""

VENDORS = ("aimsio", "aqua", "imis", "amilia", "aimms")
