"""The rows of one simulated Aimsio account, and the rules for reading and writing them.

No HTTP here: the simulator (``sandbox.aimsio.sim``) parses requests and hands rows over.
Generated rows live in lazy :class:`Dataset`s; the overlays below index only rows that
were written (by POST or the mutation API), so start-up costs nothing per row.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sandbox.aimsio.generator import Generator
from sandbox.aimsio.rows import (
    STRING_LISTS,
    ImportTally,
    derive,
    is_blank,
    row_errors,
    writable_fields,
)
from sandbox.aimsio.schema import SPECS, EntitySpec, index_from_guid, index_from_key
from sandbox.data import Dataset, Record

# Decides whether the server rejects a valid row anyway (the fault switches).
RejectFn = Callable[[EntitySpec, Record], bool]


class AimsioStore:
    def __init__(
        self,
        gen: Generator,
        size: int,
        *,
        job_create_status: str | None = "Unassigned",
        payroll_required: bool = False,
    ) -> None:
        self.gen = gen
        self.job_create_status = job_create_status
        self.payroll_required = payroll_required
        self.data = {name: Dataset(name, size, gen.seed, gen.maker(name)) for name in SPECS}
        self.stamps: dict[str, dict[int, int]] = {name: {} for name in SPECS}  # written rows
        self._keys: dict[str, dict[str, int]] = {name: {} for name in SPECS}  # written keys
        self.nrbs_by_job: dict[str, set[int]] = {}  # written NRBs by job guid
        self._fields: dict[str, list[str]] = {}

    def by_guid(self, entity: str, guid: Any) -> Record | None:
        index = index_from_guid(self.gen.prefix[entity], guid)
        return self.data[entity].get(index) if index is not None else None

    def find(self, entity: str, key: Any) -> int | None:
        """The live row whose natural key is ``key``: written keys first, then generated ones."""
        if not isinstance(key, str) or not key:
            return None
        spec, ds = SPECS[entity], self.data[entity]
        for index in (self._keys[entity].get(key), index_from_key(spec, key)):
            if index is not None:
                row = ds.get(index)
                if row is not None and row.get(spec.key_field) == key:
                    return index
        return None

    def render_job(self, job: Record) -> None:
        """Fill names from the rows a job points at and embed its NRBs, crew and equipment."""
        client = self.by_guid("Customer", job.get("jobClientGuid"))
        if client is not None:
            job["jobClientCode"], job["jobClientName"] = (
                client["customerCode"],
                client["customerName"],
            )
        book = self.by_guid("PriceBook", job.get("jobPriceBookGuid"))
        if book is not None:
            job["jobPriceBookName"] = book["priceBookName"]
        assignee_index = self.find("Employee", job.get("jobAssigneeEmployeeNumber"))
        if assignee_index is not None:
            emp = self.data["Employee"].get(assignee_index) or {}
            job["jobAssigneeFullName"] = f"{emp['employeeFirstName']} {emp['employeeLastName']}"
            job["jobAssigneeUserName"] = emp.get("employeeLinkedUserName")
        guid = job["jobGuid"]
        index = index_from_guid(self.gen.prefix["JobOrder"], guid) or 0
        nrbs = self.data["NRB"]
        candidates = sorted({index} | self.nrbs_by_job.get(guid, set()))
        job["jobNrbList"] = [
            row for row in map(nrbs.get, candidates) if row and row["nrbJobGuid"] == guid
        ]
        size = self.gen.size
        crew = (self.data["Employee"].get(i) for i in sorted({index % size, (index + 1) % size}))
        job["jobCrewList"] = [
            {
                "employeeGuid": e["employeeGuid"],
                "employeeCode": e["employeeCode"],
                "employeeFullName": f"{e['employeeFirstName']} {e['employeeLastName']}",
            }
            for e in crew
            if e is not None
        ]
        equipment = self.data["Equipment"].get(index % size)
        fields = ("equipmentGuid", "equipmentCode", "equipmentName")
        job["jobEquipmentList"] = [{k: equipment[k] for k in fields}] if equipment else []

    def entity_key(self, spec: EntitySpec, row: Record) -> Any:
        for name in (spec.key_field, spec.guid_field, spec.int_field):
            if name and not is_blank(row.get(name)):
                return row[name]
        return None

    def match(self, spec: EntitySpec, row: Record) -> tuple[int | None, str | None]:
        """The existing row this one updates (by guid or id, else natural key), or an error."""
        id_field = spec.guid_field or spec.int_field
        value = row.get(id_field) if id_field else None
        if id_field and not is_blank(value):
            if id_field == spec.guid_field:
                index = index_from_guid(self.gen.prefix[spec.name], value)
            else:
                index = (
                    value - 1 if isinstance(value, int) and not isinstance(value, bool) else None
                )
            if index is None or index not in self.data[spec.name]:
                return None, f"No {spec.name} with {id_field} {value!r}"
            return index, None
        return self.find(spec.name, row.get(spec.key_field)), None

    def upsert(
        self, spec: EntitySpec, row: Record, tally: ImportTally, now: int, reject: RejectFn
    ) -> None:
        """Create or edit one row, or count it as not imported with its reasons."""
        entity_key = self.entity_key(spec, row)
        index, problem = self.match(spec, row)
        payroll = self.payroll_required
        errors = [problem] if problem else row_errors(spec.name, row, payroll_required=payroll)
        refs: Record = {}
        if not errors:
            refs, errors = self.resolve_refs(spec, row)
        if not errors and index is not None:
            other = self.find(spec.name, row.get(spec.key_field))
            if other is not None and other != index:
                errors = [f"{spec.key_field} {row[spec.key_field]!r} is used by another row"]
        if not errors and reject(spec, row):
            errors = ["Rejected by server-side validation"]
        if errors:
            tally.reject(entity_key, errors)
            return
        fields = writable_fields(row) | refs
        if index is None:
            wanted = self.job_create_status
            if spec.name == "JobOrder" and wanted is not None and fields["jobStatus"] != wanted:
                tally.notice(entity_key, f"jobStatus of a new job is set to {wanted}", "WARNING")
                fields["jobStatus"] = wanted
            self.create(spec, fields, now)
            tally.created += 1
            return
        ds = self.data[spec.name]
        record = dict(ds.get(index) or {}) | fields
        self.write(spec, index, record, now)
        tally.edited += 1

    def set_status(
        self, spec: EntitySpec, row: Record, tally: ImportTally, now: int, reject: RejectFn
    ) -> None:
        """Invoice/Timecard: change the status of an existing row; never create one."""
        assert spec.status_field is not None
        entity_key = self.entity_key(spec, row)
        index, problem = self.match(spec, row)
        if problem is None and index is None:
            problem = f"{spec.name} {entity_key!r} does not exist and cannot be created"
        errors = [problem] if problem else row_errors(spec.name, row)
        if not errors and reject(spec, row):
            errors = ["Rejected by server-side validation"]
        if errors or index is None:
            tally.reject(entity_key, errors)
            return
        current = self.data[spec.name].get(index) or {}
        allowed = {spec.status_field, spec.key_field, spec.int_field}
        ignored = sorted(k for k, v in row.items() if k not in allowed and current.get(k) != v)
        record = dict(current) | {spec.status_field: row[spec.status_field].strip()}
        self.write(spec, index, record, now)
        tally.edited += 1
        if ignored:
            tally.edited_with_errors += 1
            message = f"Only {spec.status_field} can change; ignored: {', '.join(ignored)}"
            tally.notice(entity_key, message, "WARNING")

    def resolve_refs(self, spec: EntitySpec, row: Record) -> tuple[Record, list[str]]:
        """Check a valid row's references to other rows; return the fields they imply."""
        resolve = {
            "User": self._user_refs,
            "Employee": self._employee_refs,
            "JobOrder": self._job_refs,
            "NRB": self._nrb_refs,
        }.get(spec.name)
        out: Record = {}
        errors: list[str] = []
        if resolve is not None:
            resolve(row, out, errors)
        return out, errors

    def _user_refs(self, row: Record, out: Record, errors: list[str]) -> None:
        roles = self.gen.role_guids
        names: list[str] = row.get("userRoleNames") or []
        guids: list[str] = row.get("userRoleGuids") or []
        if names:
            errors += [f"Unknown role name {n!r}" for n in names if n not in roles]
            out["userRoleGuids"] = [roles.get(n) for n in names]
        else:
            by_guid = {g: n for n, g in roles.items()}
            errors += [f"Unknown role guid {g!r}" for g in guids if g not in by_guid]
            out["userRoleNames"] = [by_guid.get(g) for g in guids]

    def _employee_refs(self, row: Record, out: Record, errors: list[str]) -> None:
        trades = self.gen.trade_guids
        code: str = row.get("employeeTradeCode") or ""
        guid: str = row.get("employeeTradeGuid") or ""
        if code:
            if code not in trades:
                errors.append(f"employeeTradeCode {code!r} is not a labour billable item")
            out["employeeTradeGuid"] = trades.get(code)
        else:
            by_guid = {g: c for c, g in trades.items()}
            if guid not in by_guid:
                errors.append(f"employeeTradeGuid {guid!r} is not a labour billable item")
            out["employeeTradeCode"] = by_guid.get(guid)

    def _job_refs(self, row: Record, out: Record, errors: list[str]) -> None:
        client = self.find("Customer", row.get("jobClientCode"))
        book = self.find("PriceBook", row.get("jobPriceBookName"))
        assignee = row.get("jobAssigneeEmployeeNumber")
        if client is None:
            errors.append(f"jobClientCode {row.get('jobClientCode')!r} is not a customer code")
        else:
            out["jobClientGuid"] = self.gen.guid("Customer", client)
        if book is None:
            errors.append(f"jobPriceBookName {row.get('jobPriceBookName')!r} does not exist")
        else:
            out["jobPriceBookGuid"] = self.gen.guid("PriceBook", book)
        if not is_blank(assignee) and self.find("Employee", assignee) is None:
            errors.append(f"jobAssigneeEmployeeNumber {assignee!r} does not exist")

    def _nrb_refs(self, row: Record, out: Record, errors: list[str]) -> None:
        if not is_blank(row.get("nrbJobGuid")):
            job = self.by_guid("JobOrder", row.get("nrbJobGuid"))
        else:
            found = self.find("JobOrder", row.get("nrbJobNumber"))
            job = self.data["JobOrder"].get(found) if found is not None else None
        item = self.find("NonRecurringBillableItem", row.get("nrbItemCode"))
        if job is None:
            errors.append("nrbJobGuid/nrbJobNumber does not name an existing job")
        else:
            out["nrbJobGuid"], out["nrbJobNumber"] = job["jobGuid"], job["jobNumber"]
        if item is None:
            errors.append(f"nrbItemCode {row.get('nrbItemCode')!r} does not exist")
        else:
            out["nrbItemGuid"] = self.gen.guid("NonRecurringBillableItem", item)

    def template(self, entity: str) -> list[str]:
        """Field names of an entity, in generated order (the shape created rows take)."""
        if entity not in self._fields:
            self._fields[entity] = list(self.gen.maker(entity)(random.Random(0), 0))
        return self._fields[entity]

    def create(self, spec: EntitySpec, fields: Record, now: int) -> int:
        def build(index: int) -> Record:
            record: Record = dict.fromkeys(self.template(spec.name))
            record.update({k: [] for k in record if k in STRING_LISTS})
            if spec.int_field:
                record[spec.int_field] = index + 1
            record |= fields
            if spec.guid_field:
                record[spec.guid_field] = self.gen.guid(spec.name, index)
            if spec.created_field:
                record[spec.created_field] = now
            return record

        ds = self.data[spec.name]
        index = ds.add(build)
        self.write(spec, index, dict(ds.get(index) or {}), now)
        return index

    def write(self, spec: EntitySpec, index: int, record: Record, now: int) -> None:
        """Store a changed row: bump its timestamps and keep the lookup overlays current."""
        record["updatedAt"] = now
        if spec.updated_field:
            record[spec.updated_field] = now
        derive(spec.name, record)
        self.data[spec.name].put(index, record)
        self.remember(spec, index, record)

    def remember(self, spec: EntitySpec, index: int, record: Record) -> None:
        self.stamps[spec.name][index] = record["updatedAt"]
        key = record.get(spec.key_field)
        if isinstance(key, str):
            self._keys[spec.name][key] = index
        if spec.name == "NRB" and isinstance(record.get("nrbJobGuid"), str):
            self.nrbs_by_job.setdefault(record["nrbJobGuid"], set()).add(index)

    def mutate(self, spec: EntitySpec, body: dict[str, Any], now: int) -> dict[str, list[int]]:
        """Apply a ``/_sandbox/mutate`` body; returns the indices changed, deleted and added."""
        ds = self.data[spec.name]
        changed: list[int] = []
        deleted: list[int] = []
        added: list[int] = []
        for item in body.get("update", []):
            if not isinstance(item, dict):
                raise TypeError("each 'update' item must be an object")
            index = self.mutation_index(spec, item.get("id", item.get("guid")))
            fields = {k: v for k, v in item.items() if k not in ("id", "guid")}
            record = dict(ds.get(index) or {}) | fields
            # An explicit updatedAt wins, so tests can stage ties and clock skew.
            self.write(spec, index, record, int(fields.get("updatedAt", now)))
            changed.append(index)
        for ident in body.get("delete_ids", []):
            index = self.mutation_index(spec, ident)
            ds.delete(index)
            deleted.append(index)
        if any(k in body for k in ("change", "delete", "add")):

            def touch(record: Record, rng: random.Random) -> Record:
                name, choices = spec.touch_field, spec.touch_choices
                others = [c for c in choices if c != record.get(name)]
                record[name] = rng.choice(others) if others else f"changed-{rng.randrange(10**6)}"
                record["updatedAt"] = now
                if spec.updated_field:
                    record[spec.updated_field] = now
                return record

            touched = ds.mutate(
                touch,
                change=float(body.get("change", 0.0)),
                delete=float(body.get("delete", 0.0)),
                add=int(body.get("add", 0)),
                seed=int(body.get("seed", 0)),
            )
            for i in touched["changed"]:
                self.remember(spec, i, ds.get(i) or {})
            for i in touched["added"]:
                record = dict(ds.get(i) or {})
                if spec.created_field:
                    record[spec.created_field] = now
                self.write(spec, i, record, now)
            changed += touched["changed"]
            deleted += touched["deleted"]
            added += touched["added"]
        return {"changed": changed, "deleted": deleted, "added": added}

    def mutation_index(self, spec: EntitySpec, ident: Any) -> int:
        """A row named by its listed id (int), guid, or natural key."""
        index: int | None = None
        if isinstance(ident, int) and not isinstance(ident, bool):
            index = ident - 1
        elif isinstance(ident, str):
            index = index_from_guid(self.gen.prefix[spec.name], ident)
            if index is None:
                index = self.find(spec.name, ident)
        if index is None or index not in self.data[spec.name]:
            raise KeyError(f"no {spec.name} with id {ident!r}")
        return index
