"""Aimsio simulator: the REST API (``/rest/api/standard/v1/``) of the Aimsio field-service
platform. It reproduces Basic auth, the list-stubs-then-fetch-each-one reads (bare JSON arrays
of ``guid``/``id`` and ``updatedAt``, then the full object), the row-by-row upserts answered by
an IntegrationImportResult with per-row notices, the read-only and status-only entities, and
the vendor's 10-in-flight, 10-per-second queueing limit. ``sim`` holds the routes and the
documented settings; ``schema``, ``generator``, ``rows`` and ``store`` the entities, their
generated data, row validation and the live tables.
"""

from sandbox.aimsio.sim import DEMO_CREDENTIALS, SIM, AimsioSim

__all__ = ["DEMO_CREDENTIALS", "SIM", "AimsioSim"]
