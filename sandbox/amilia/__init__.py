"""Amilia simulator: the v3 organisation API and the deprecated v2 account and person lists.
It reproduces the Basic-to-JWT login, the ``{"Items", "Paging"}`` (v3) and ``{"Items",
"Page"}`` (v2) list envelopes with their filters and page caps, accounts, persons,
registrations, access scans, programs, activities and skills, the assumed write endpoints,
``{"Message", "TransactionId"}`` errors and the 100-requests-per-second 429 limit per client
address. ``sim`` holds the routes and the documented settings; ``data``, ``store``, ``lists``,
``wire`` and ``mutate`` the generated records, their tables, the filtered lists, the wire
details and the mutation API.
"""

from sandbox.amilia.sim import DEMO_CREDENTIALS, SIM, AmiliaSim

__all__ = ["DEMO_CREDENTIALS", "SIM", "AmiliaSim"]
