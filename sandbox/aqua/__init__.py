"""Aqua simulator: the AIMS360 Aqua export API (token, export job, job status, rerun and
publish-link download). It reproduces the OAuth password-grant bearer tokens, export jobs
that go Queued, Inprogress and then Completed or Failed on the sandbox clock and are later
purged, the OData and legacy job-status forms, reruns that re-read the data, company-scoped
job visibility and Public, Private and PeopleInOrganization publish links serving CSV, JSON or
Excel files streamed in chunks, with ASP.NET-style ``{"message"}`` errors. ``sim`` holds the
routes and the documented settings; ``status`` and ``download`` the job-status and
publish-link handlers; ``auth``, ``config``, ``data``, ``jobs``, ``output`` and ``mutate`` the
tokens, settings, generated sources, job records, file writers and the mutation API; ``rss``
measures a large export (``python -m sandbox.aqua.rss N``).
"""

from sandbox.aqua.sim import DEMO_CREDENTIALS, SIM, AquaSim

__all__ = ["DEMO_CREDENTIALS", "SIM", "AquaSim"]
