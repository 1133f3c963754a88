"""Aimsio entities: what each one is called, keyed and written like, and their enum values.

Pure data and pure functions, no I/O. Generated record ``index`` of an entity is built from
``(seed, entity, index)`` (``sandbox.aimsio.generator``); its guid, natural key and
``updatedAt`` come from cheap arithmetic on the index alone (here), so listing stubs never
builds a full record.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sandbox.data import guid_for

API_PREFIX = "rest/api/standard/v1/"
BASE_MS = 1_735_689_600_000  # 2025-01-01Z: generated rows predate every test clock
SPAN_MS = 180 * 86_400_000  # generated updatedAt values spread over ~6 months
_SPREAD = 2_654_435_761  # Knuth's multiplicative hash constant: scatters updatedAt by index

JOB_STATUSES = ("Unassigned", "Assigned", "Active", "Finished", "Cancelled", "Deleted")
EMPLOYMENT_TYPES = ("DIRECT_HIRE", "SUBCONTRACTOR")
EMPLOYEE_STATUSES = (
    "active_employee_status",
    "inactive_permanent_layoff_employee_status",
    "inactive_temporary_layoff_employee_status",
)
HOLIDAY_ELIGIBILITY = ("PER_UNION", "AB_5_OF_9")
EQUIPMENT_STATUSES = ("Available", "In Use", "Maintenance", "Retired")
INVOICE_STATUSES = ("Draft", "Approved", "Sent", "Paid", "Void")
TIMECARD_STATUSES = ("Draft", "Submitted", "Approved", "Rejected", "Exported")
PAYROLL_PERIOD_STATUSES = ("Open", "Closed")


@dataclass(frozen=True)
class EntitySpec:
    """How one Aimsio entity is addressed, keyed and written."""

    name: str  # PascalCase path segment, also the ``dtype``
    key_field: str  # the user-visible natural key that POST matches on
    key_prefix: str  # generated natural keys are prefix + 6-digit (index + 1) + suffix
    guid_field: str | None = None
    int_field: str | None = None
    key_suffix: str = ""
    list_keys: tuple[str, ...] = ()  # POST body keys; empty → the entity is read-only
    status_field: str | None = None  # set → POST may only change this field of existing rows
    touch_field: str = ""  # what the mutation API changes
    touch_choices: tuple[str, ...] = ()  # enum values for the touch field, if it is an enum
    created_field: str | None = None
    updated_field: str | None = None  # entity-specific mirror of updatedAt


SPECS: dict[str, EntitySpec] = {
    s.name: s
    for s in (
        EntitySpec(
            "User", "userName", "user", guid_field="userGuid", key_suffix="@acme-sandbox",
            list_keys=("userList",), touch_field="userPhone",
        ),
        EntitySpec(
            "Employee", "employeeCode", "E", guid_field="employeeGuid",
            list_keys=("employeeList",), touch_field="employeePhone",
            created_field="employeeCreatedAt", updated_field="employeeUpdatedAt",
        ),
        EntitySpec(
            "Equipment", "equipmentCode", "EQ-", guid_field="equipmentGuid",
            list_keys=("equipmentList",), touch_field="equipmentDescription",
        ),
        EntitySpec(
            "JobOrder", "jobNumber", "J-", guid_field="jobGuid", int_field="jobId",
            list_keys=("jobList",), touch_field="jobDescription",
            created_field="jobCreatedAt", updated_field="jobUpdatedAt",
        ),
        EntitySpec(
            "Customer", "customerCode", "C-", guid_field="customerGuid",
            list_keys=("customerList", "companyList"), touch_field="customerPhone",
        ),
        EntitySpec(
            "PriceBook", "priceBookName", "PB-", guid_field="priceBookGuid",
            list_keys=("priceBookList",), touch_field="priceBookDescription",
        ),
        EntitySpec(
            "NRB", "nrbNumber", "NRB-", guid_field="nrbGuid",
            list_keys=("nrbList",), touch_field="nrbDescription",
        ),
        EntitySpec(
            "NonRecurringBillableItem", "nrbItemCode", "ITEM-", guid_field="nrbItemGuid",
            touch_field="nrbItemName",
        ),
        EntitySpec(
            "PayrollPeriod", "payrollPeriodName", "PP-", int_field="payrollPeriodId",
            touch_field="payrollPeriodStatus", touch_choices=PAYROLL_PERIOD_STATUSES,
        ),
        EntitySpec(
            "Invoice", "invoiceNumber", "INV-", int_field="invoiceId",
            list_keys=("invoiceList",), status_field="invoiceStatus",
            touch_field="invoiceStatus", touch_choices=INVOICE_STATUSES,
        ),
        EntitySpec(
            "Timecard", "timecardNumber", "TC-", int_field="timecardId",
            list_keys=("timecardList",), status_field="timecardStatus",
            touch_field="timecardStatus", touch_choices=TIMECARD_STATUSES,
        ),
    )
}  # fmt: skip
ALIASES = {"company": "Customer"}
_BY_LOWER = {name.lower(): name for name in SPECS} | ALIASES
_BY_EXACT = {name: name for name in SPECS} | {"Company": "Customer"}


def parse_path(tail: str, case_insensitive: bool) -> tuple[str, str | None] | None:
    """``rest/api/standard/v1/User/abc`` → ``("User", "abc")``; anything else → None."""
    path = tail.strip("/")
    head = path[: len(API_PREFIX)]
    if (head.lower() if case_insensitive else head) != API_PREFIX:
        return None
    parts = path[len(API_PREFIX) :].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    return None


def resolve_entity(segment: str, case_insensitive: bool) -> str | None:
    if case_insensitive:
        return _BY_LOWER.get(segment.lower())
    return _BY_EXACT.get(segment)


def natural_key(spec: EntitySpec, index: int) -> str:
    return f"{spec.key_prefix}{index + 1:06d}{spec.key_suffix}"


def index_from_key(spec: EntitySpec, key: Any) -> int | None:
    """The index a generated natural key was made from; the caller still checks the row."""
    if not isinstance(key, str) or not key.startswith(spec.key_prefix):
        return None
    digits = key[len(spec.key_prefix) : len(key) - len(spec.key_suffix)]
    if not key.endswith(spec.key_suffix) or not digits.isdigit():
        return None
    return int(digits) - 1


def guid_prefix(seed: int, entity: str) -> str:
    """Everything but the last 12 hex digits, which ``guid_for`` fills with the index."""
    return guid_for(seed, entity, 0)[:-12]


def index_from_guid(prefix: str, guid: Any) -> int | None:
    """The index of ``guid`` if it is one of this entity's guids (any case, with or without -)."""
    try:
        canonical = str(uuid.UUID(str(guid)))
    except ValueError:
        return None
    if not canonical.startswith(prefix):
        return None
    return int(canonical[-12:], 16)


def entity_salt(seed: int, entity: str) -> int:
    return int(hashlib.sha1(f"updated:{seed}:{entity}".encode()).hexdigest()[:8], 16)


def generated_updated_ms(salt: int, index: int) -> int:
    return BASE_MS + (index * _SPREAD + salt) % SPAN_MS
