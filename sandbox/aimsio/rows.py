"""Aimsio POST rows: field rules, per-row errors, notices and the IntegrationImportResult.

Pure functions over plain dicts. Checks that need other entities (role names, customer
codes, price books, jobs, items) live in the simulator, which owns the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.aimsio.schema import (
    EMPLOYEE_STATUSES,
    EMPLOYMENT_TYPES,
    EQUIPMENT_STATUSES,
    HOLIDAY_ELIGIBILITY,
    INVOICE_STATUSES,
    JOB_STATUSES,
    TIMECARD_STATUSES,
)

# Each inner tuple is "one of these is required" (usually a single field).
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "User": (
        ("userName",),
        ("userFirstName",),
        ("userLastName",),
        ("userIsActive",),
        ("userRoleNames", "userRoleGuids"),
    ),
    "Employee": (
        ("employeeCode",),
        ("employmentType",),
        ("employeeStatusUname",),
        ("employeeFirstName",),
        ("employeeLastName",),
        ("employeeTradeGuid", "employeeTradeCode"),
    ),
    "Equipment": (("equipmentCode",), ("equipmentName",)),
    "JobOrder": (
        ("jobNumber",),
        ("jobName",),
        ("jobStatus",),
        ("jobClientCode",),
        ("jobPriceBookName",),
        ("jobStartDate",),
    ),
    "Customer": (("customerCode",), ("customerName",)),
    "PriceBook": (("priceBookName",),),
    "NRB": (("nrbNumber",), ("nrbJobNumber", "nrbJobGuid"), ("nrbItemCode",), ("nrbQuantity",)),
    "Invoice": (("invoiceStatus",),),
    "Timecard": (("timecardStatus",),),
}
# Required only when the account has the Timecards module (setting ``timecards_module``).
PAYROLL_FIELDS = (
    "employeePayrollTypeName",
    "employeePayrollUnionName",
    "employeePayrollHolidayEligibility",
)
ENUMS: dict[str, tuple[str, ...]] = {
    "employmentType": EMPLOYMENT_TYPES,
    "employeeStatusUname": EMPLOYEE_STATUSES,
    "employeePayrollHolidayEligibility": HOLIDAY_ELIGIBILITY,
    "equipmentStatus": EQUIPMENT_STATUSES,
    "jobStatus": JOB_STATUSES,
    "invoiceStatus": INVOICE_STATUSES,
    "timecardStatus": TIMECARD_STATUSES,
}
BOOLEANS = frozenset(
    {"userIsActive", "equipmentIsActive", "customerIsActive", "priceBookIsActive"}
    | {"jobShowInDispatching"}
)
EPOCH_MS = frozenset(
    {"jobStartDate", "jobEndDate", "nrbDate", "priceBookEffectiveDate"}
    | {"employmentHireDate", "employmentTerminationDate", "employmentReHireDate"}
)
NUMBERS = frozenset(
    {"nrbQuantity", "nrbUnitPrice", "employeeAverageDayPay", "employeeHolidayHoursTopUp"}
)
STRING_LISTS = frozenset({"userRoleNames", "userRoleGuids", "userAreas"})
# Keys and references: looked up in other rows, so they must be strings.
STRINGS = frozenset(
    {"userGuid", "userName", "userFirstName", "userLastName", "userShortCode"}
    | {"employeeGuid", "employeeCode", "employeeFirstName", "employeeLastName"}
    | {"employeeTradeGuid", "employeeTradeCode", "equipmentGuid", "equipmentCode"}
    | {"jobGuid", "jobNumber", "jobName", "jobClientCode", "jobPriceBookName"}
    | {"jobAssigneeEmployeeNumber", "customerGuid", "customerCode", "customerName"}
    | {"priceBookGuid", "priceBookName", "nrbGuid", "nrbNumber", "nrbJobGuid"}
    | {"nrbJobNumber", "nrbItemCode", "invoiceNumber", "timecardNumber"}
)
MAX_LENGTH = {"userShortCode": 3}
# Server-maintained fields: a POST may send them but they are never taken from the body.
READ_ONLY = frozenset(
    {"dtype", "updatedAt", "userFullName", "jobId", "jobCreatedAt", "jobUpdatedAt"}
    | {"jobClientName", "jobAssigneeFullName", "jobAssigneeUserName"}
    | {"jobNrbList", "jobCrewList", "jobEquipmentList"}
    | {"employeeCreatedAt", "employeeUpdatedAt", "employeeFormData"}
    | {"employeeLinkedUserGuid", "employeeLinkedUserName"}
)


def is_blank(value: Any) -> bool:
    return (
        value is None
        or value == ""
        or value == []
        or (isinstance(value, str) and not value.strip())
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def field_error(name: str, value: Any) -> str | None:
    """What is wrong with one present field's value, or None."""
    if value is None:
        return None
    if name in BOOLEANS and not isinstance(value, bool):
        return f"{name} must be true or false"
    if name in EPOCH_MS and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"{name} must be epoch milliseconds (integer)"
    if name in STRINGS and not isinstance(value, str):
        return f"{name} must be a string"
    if name in NUMBERS and not _is_number(value):
        return f"{name} must be a number"
    if name in STRING_LISTS and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        return f"{name} must be an array of strings"
    if name in ENUMS and (not isinstance(value, str) or value.strip() not in ENUMS[name]):
        return f"{name} {value!r} is not one of {', '.join(ENUMS[name])}"
    limit = MAX_LENGTH.get(name)
    if limit is not None and (not isinstance(value, str) or len(value) > limit):
        return f"{name} must be a string of at most {limit} characters"
    return None


def row_errors(entity: str, row: dict[str, Any], *, payroll_required: bool = False) -> list[str]:
    """Missing required fields and badly typed values of one POSTed row."""
    errors = []
    required = list(REQUIRED.get(entity, ()))
    if entity == "Employee" and payroll_required:
        required += [(name,) for name in PAYROLL_FIELDS]
    for alternatives in required:
        if all(is_blank(row.get(name)) for name in alternatives):
            errors.append(f"{' or '.join(alternatives)} is required")
    for name, value in row.items():
        if name not in READ_ONLY:
            problem = field_error(name, value)
            if problem:
                errors.append(problem)
    start, end = row.get("jobStartDate"), row.get("jobEndDate")
    if isinstance(start, int) and isinstance(end, int) and end < start:
        errors.append("jobEndDate must not be before jobStartDate")
    return errors


def writable_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The row without server-maintained fields; enum values lose stray spaces."""
    out = {}
    for name, value in row.items():
        if name in READ_ONLY:
            continue
        # The vendor spec prints " SUBCONTRACTOR" with a leading space; both spellings work.
        out[name] = value.strip() if name in ENUMS and isinstance(value, str) else value
    return out


def derive(entity: str, record: dict[str, Any]) -> None:
    """Recompute read-only fields that depend on others, in place."""
    if entity == "User":
        first, last = record.get("userFirstName") or "", record.get("userLastName") or ""
        record["userFullName"] = f"{first} {last}".strip()


@dataclass
class ImportTally:
    """Counters and notices of one POST, in the vendor's IntegrationImportResult terms."""

    key_field: str = "entityKey"  # [ASSUMPTION] name of the key in each notice
    created: int = 0
    edited: int = 0
    edited_with_errors: int = 0  # edits that went in while some fields were ignored
    not_imported: int = 0
    notices: list[dict[str, Any]] = field(default_factory=list)

    def notice(self, entity_key: Any, message: str, severity: str = "ERROR") -> None:
        self.notices.append({self.key_field: entity_key, "message": message, "severity": severity})

    def reject(self, entity_key: Any, messages: list[str]) -> None:
        self.not_imported += 1
        for message in messages:
            self.notice(entity_key, message)

    def result(self, guid: str, now_ms: int) -> dict[str, Any]:
        return {
            "dtype": "IntegrationImportResult",
            "id": 0,
            "guid": guid,
            "importConfiguration": None,
            "numberOfEntitiesCreated": self.created,
            "numberOfEntitiesEdited": self.edited,
            "numberOfEntitiesEditedWithErrors": self.edited_with_errors,
            "numberOfEntitiesNotImportedDueToErrors": self.not_imported,
            "extra": None,
            "notices": self.notices,
            "updatedAt": now_ms,
            "importResultType": None,
            "numberOfEntitiesImported": self.created + self.edited,
        }
