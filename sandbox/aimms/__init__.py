"""AIMMS PRO simulator: the REST API of AIMMS PRO on Azure (``/pro-api/v1`` and the v2 Tasks
API). It reproduces API keys with scopes and expiry, app permissions, the application,
AIMMS-version, environment, group, user and API-key listings, and the task lifecycle (queued,
assigned, running, solving, completed or failed) under the account's task parallelism, with
scheduled and repeating tasks, interrupts, deletes, responses, logs, statistics and state
hooks. ``sim`` holds the v1 routes and the documented settings; ``v2`` the Tasks API;
``tasks``, ``model``, ``schedule``, ``hooks`` and ``config`` the queue, the apps and model
answers, schedule parsing, hook calls and the settings and keys.
"""

from sandbox.aimms.sim import DEMO_CREDENTIALS, SIM, AimmsSim

__all__ = ["DEMO_CREDENTIALS", "SIM", "AimmsSim"]
