"""The AIMMS PRO account behind the simulator: master data, published apps and their "models".

Master data (the Authentication section of the PRO spec):
- environments: three fixed ones; groups: ``max(5, records // 50)``; users: ``records``.
- Users are ``{"id", "name", "email", "environment", "groups", "isAdmin", "isActive"}`` with
  integer entity ids (``USER_BASE_ID + index``), the ids app authorizations refer to.
  The field names are the sandbox's own: PRO does not document them.
- API-key owners are portal accounts (``ACCOUNTS``), not part of the generated users.

Apps are a handful of fixed ones (``default_apps``). Each app version exposes DEX services whose
answers are deterministic (see ``run_service``):
- ``echo``: the request body back, with the request's content type.
- ``export_users``: a JSON list of the users (optional JSON body ``{"offset": n, "limit": m}``).
- ``import_users``: a JSON list of users to upsert (no ``id`` → added; known ``id`` → updated);
  answers ``{"inserted": [ids], "updated": [ids], "rejected": [{"index", "reason"}]}``.
- ``solve``: body ``{"values": [numbers]}`` → ``{"status": "optimal"|"interrupted", "objective"}``.
- ``fail``: always fails (``errorMessage`` set), to test failure handling without faults.
A body a service cannot read makes the task fail with an ``errorMessage``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from sandbox.data import Dataset, Record

DEMO_USER_ID = 16777095  # the entity id in the vendor's own authorization example
USER_BASE_ID = 16777216
GROUP_BASE_ID = 33554432
ENVIRONMENTS: tuple[Record, ...] = (
    {"id": 16777100, "name": "ROOT"},
    {"id": 16777101, "name": "Planning"},
    {"id": 16777102, "name": "Finance"},
)
PLANNERS_GROUP_ID = GROUP_BASE_ID  # group 0; the demo account is a member
ACCOUNTS: dict[int, Record] = {
    DEMO_USER_ID: {
        "id": DEMO_USER_ID,
        "name": "Demo Integration",
        "email": "demo@sandbox.aimms.cloud",
        "environment": 16777100,
        "groups": [PLANNERS_GROUP_ID],
        "isAdmin": False,
        "isActive": True,
    }
}

READ, WRITE, EXECUTE = 4, 2, 1
USER_FIELDS = {
    "name": str,
    "email": str,
    "environment": int,
    "groups": list,
    "isAdmin": bool,
    "isActive": bool,
}

_FIRST = ("Anna", "Bram", "Chen", "Daan", "Eva", "Fatima", "Gijs", "Hana", "Ivo", "Julia")
_LAST = ("Jansen", "de Vries", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos", "Vos")
_TEAMS = ("Planners", "Schedulers", "Analysts", "Controllers", "Operators", "Viewers")


class Directory:
    """Environments, groups and users, generated lazily from the seed."""

    def __init__(self, records: int, seed: int) -> None:
        self.group_count = max(5, records // 50)
        env_ids = [env["id"] for env in ENVIRONMENTS]
        group_count = self.group_count

        def make_group(rng: random.Random, i: int) -> Record:
            name = "Planners" if i == 0 else f"{rng.choice(_TEAMS)} {i:04d}"
            return {"id": GROUP_BASE_ID + i, "name": name, "environment": rng.choice(env_ids)}

        def make_user(rng: random.Random, i: int) -> Record:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            k = rng.randint(1, min(3, group_count))
            groups = sorted(GROUP_BASE_ID + g for g in rng.sample(range(group_count), k))
            return {
                "id": USER_BASE_ID + i,
                "name": f"{first} {last}",
                "email": f"{first}.{last.replace(' ', '')}.{i}@example.com".lower(),
                "environment": rng.choice(env_ids),
                "groups": groups,
                "isAdmin": rng.random() < 0.05,
                "isActive": rng.random() >= 0.1,
            }

        self.groups = Dataset("groups", self.group_count, seed, make_group)
        self.users = Dataset("users", records, seed, make_user)

    def user(self, user_id: int) -> Record | None:
        return self.users.get(user_id - USER_BASE_ID) if user_id >= USER_BASE_ID else None

    def member(self, user_id: int) -> Record | None:
        """A portal account or a generated user: whoever an API key may belong to."""
        return ACCOUNTS.get(user_id) or self.user(user_id)

    def user_list(self, offset: int = 0, limit: int | None = None) -> list[Record]:
        out: list[Record] = []
        for n, (_, rec) in enumerate(self.users.records()):
            if n < offset:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(rec)
        return out

    def validate_user_fields(self, fields: dict[str, Any]) -> str | None:
        """Why these user fields are unacceptable, or None."""
        env_ids = {env["id"] for env in ENVIRONMENTS}
        for name, value in fields.items():
            kind = USER_FIELDS.get(name)
            if kind is None:
                return f"unknown field {name!r}"
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                return f"field {name!r} must be {kind.__name__}"
            if name == "environment" and value not in env_ids:
                return f"unknown environment {value}"
            if isinstance(value, list) and not all(
                isinstance(g, int) and g - GROUP_BASE_ID in self.groups for g in value
            ):
                return "unknown group id in 'groups'"
        return None

    def update_user(self, user_id: int, fields: dict[str, Any]) -> None:
        index = user_id - USER_BASE_ID
        current = self.users.get(index) if index >= 0 else None
        if current is None:
            raise KeyError(f"unknown user id {user_id}")
        problem = self.validate_user_fields(fields)
        if problem:
            raise ValueError(problem)
        self.users.put(index, {**current, **fields, "id": user_id})

    def add_user(self, fields: dict[str, Any]) -> int:
        problem = self.validate_user_fields(fields)
        if problem:
            raise ValueError(problem)
        if not isinstance(fields.get("name"), str) or not isinstance(fields.get("email"), str):
            raise ValueError("a new user needs 'name' and 'email'")
        defaults: Record = {"environment": ENVIRONMENTS[0]["id"], "groups": []}
        defaults.update(isAdmin=False, isActive=True)
        index = self.users.add(lambda i: {"id": USER_BASE_ID + i, **defaults, **fields})
        return USER_BASE_ID + index


def touch_user(rec: Record, rng: random.Random) -> Record:
    """A plausible edit for the mutation API: a new e-mail and a flipped active flag."""
    local, _, domain = rec["email"].partition("@")
    rec["email"] = f"{local.split('+')[0]}+{rng.randint(1, 9999)}@{domain}"
    rec["isActive"] = not rec["isActive"]
    return rec


# --- apps ------------------------------------------------------------------------------------


@dataclass
class App:
    meta: Record  # exactly what GET /pro-api/v1/applications shows
    services: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> tuple[str, str]:
        return self.meta["projectName"], self.meta["projectVersion"]


ALL_SERVICES = frozenset({"echo", "export_users", "import_users", "solve", "fail"})
AIMMS_VERSIONS = ("4.89.4.1-linux64-x64-vc143", "4.96.4.6-linux64-x64-vc143", "24.5.2.3-linux64")


def _app(
    name: str, version: str, latest: bool, services: frozenset[str], auth: list[Record]
) -> App:
    meta: Record = {
        "projectName": name,
        "projectVersion": version,
        "description": f"{name} {version} (sandbox)",
        "isLatest": latest,
        "projectCategory": "sandbox",
        "aimmsVersionId": AIMMS_VERSIONS[1],
        "attributes": {"isWebUI": "true", "iconUrl": f"/icons/{name.lower()}"},
        "authorizations": auth,
        "resourceProfile": "default",
    }
    return App(meta, services)


def default_apps() -> list[App]:
    """The account's published apps (fresh objects; PATCH and DELETE change them)."""
    root = ENVIRONMENTS[0]["id"]
    everyone = [{"authorization": READ | EXECUTE, "deny": False, "entity": root}]
    read_only = [{"authorization": READ, "deny": False, "entity": DEMO_USER_ID}]
    others = [{"authorization": READ | EXECUTE, "deny": False, "entity": ENVIRONMENTS[2]["id"]}]
    return [
        _app("SupplyPlanner", "1.0", False, ALL_SERVICES, list(everyone)),
        _app("SupplyPlanner", "1.1", True, ALL_SERVICES, list(everyone)),
        _app("DemandForecast", "2.0", True, frozenset({"echo", "solve"}), list(everyone)),
        _app("Prototype", "0.1", False, frozenset({"echo"}), list(everyone)),  # no latest tag
        _app("FinanceReports", "3.0", True, frozenset({"echo"}), read_only),
        _app("Confidential", "1.0", True, frozenset({"echo"}), others),  # demo has no access
    ]


def effective_authorization(authorizations: list[Record], entity_ids: set[int]) -> int:
    """Bits (4 read, 2 write, 1 execute) granted to any of ``entity_ids``; denials win."""
    allow = deny = 0
    for entry in authorizations:
        if entry.get("entity") in entity_ids:
            if entry.get("deny"):
                deny |= int(entry.get("authorization", 0))
            else:
                allow |= int(entry.get("authorization", 0))
    return allow & ~deny


def validate_authorizations(value: Any) -> str | None:
    if not isinstance(value, list):
        return "'authorizations' must be a list"
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"authorization", "deny", "entity"}:
            return "each authorization needs exactly 'authorization', 'deny' and 'entity'"
        bits, deny, entity = entry["authorization"], entry["deny"], entry["entity"]
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 7:
            return "'authorization' must be an integer from 1 to 7"
        if not isinstance(deny, bool):
            return "'deny' must be true or false"
        if not isinstance(entity, int) or isinstance(entity, bool):
            return "'entity' must be an integer entity id"
    return None


# --- services ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    body: bytes
    content_type: str
    return_code: int


def _json_body(body: bytes) -> Any:
    return json.loads(body.decode("utf-8")) if body.strip() else None


def precheck(service: str, body: bytes) -> str | None:
    """The errorMessage a task of ``service`` with ``body`` fails with, or None.

    Decided at creation so the task's whole state timeline is known once it is assigned.
    """
    if service == "fail":
        return "Model error: procedure for service 'fail' raised an error"
    if service not in {"export_users", "import_users", "solve"}:
        return None
    try:
        data = _json_body(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"Service '{service}' could not read the request body as JSON"
    if service == "export_users":
        if data is None:
            return None
        ok = isinstance(data, dict) and all(
            isinstance(data.get(k, 0), int) and data.get(k, 0) >= 0 for k in ("offset", "limit")
        )
        return None if ok else 'export_users takes {"offset": n, "limit": m} (integers >= 0)'
    if service == "import_users":
        return None if isinstance(data, list) else "import_users takes a JSON list of users"
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return 'solve takes {"values": [numbers]}'
    return None


def run_service(
    service: str, body: bytes, content_type: str, directory: Directory, *, interrupted: bool
) -> Outcome:
    """The model's final response for a task that passed ``precheck``; may change users."""
    if service == "echo":
        return Outcome(body, content_type or "application/octet-stream", 1)
    data = _json_body(body)
    if service == "export_users":
        data = data or {}
        users = directory.user_list(data.get("offset", 0), data.get("limit"))
        return _json_outcome(users)
    if service == "import_users":
        return _json_outcome(_import_users(data, directory))
    if service == "solve":
        values = data["values"]
        return _json_outcome(
            {"status": "interrupted" if interrupted else "optimal", "objective": sum(values)}
        )
    raise ValueError(f"unknown service {service!r}")


def _json_outcome(value: Any) -> Outcome:
    return Outcome(json.dumps(value).encode(), "application/json", 1)


def _import_users(items: list[Any], directory: Directory) -> Record:
    inserted: list[int] = []
    updated: list[int] = []
    rejected: list[Record] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append({"index": n, "reason": "not an object"})
            continue
        fields = {k: v for k, v in item.items() if k != "id"}
        try:
            if "id" in item:
                directory.update_user(item["id"], fields)
                updated.append(item["id"])
            else:
                inserted.append(directory.add_user(fields))
        except (KeyError, ValueError, TypeError) as exc:
            reason = exc.args[0] if exc.args else str(exc)
            rejected.append({"index": n, "reason": str(reason)})
    return {"inserted": inserted, "updated": updated, "rejected": rejected}
