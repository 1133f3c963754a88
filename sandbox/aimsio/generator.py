"""Aimsio generated rows: what a simulated account holds before anyone writes to it.

No I/O. Row ``index`` of an entity is built from an ``rng`` seeded with ``(seed, entity,
index)``; its guid, natural key and ``updatedAt`` come from the index arithmetic in
``sandbox.aimsio.schema``. Cross-references (a job's customer, a timecard's employee, …)
point at other entities' generated indices.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sandbox.aimsio.schema import (
    BASE_MS,
    EMPLOYEE_STATUSES,
    EQUIPMENT_STATUSES,
    HOLIDAY_ELIGIBILITY,
    INVOICE_STATUSES,
    JOB_STATUSES,
    PAYROLL_PERIOD_STATUSES,
    SPECS,
    TIMECARD_STATUSES,
    entity_salt,
    generated_updated_ms,
    guid_prefix,
    natural_key,
)
from sandbox.data import MakeFn, Record, guid_for

DAY_MS = 86_400_000
ROLE_NAMES = ("Admin", "Field Worker", "Dispatcher", "Supervisor", "Accounting")
TRADE_CODES = ("LAB-LABOURER", "LAB-APPRENTICE", "LAB-JOURNEYMAN", "LAB-FOREMAN", "LAB-OPERATOR")
FIRST = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ivy", "Jonas", "Kai")
LAST = ("Bui", "Chen", "Dubois", "Evans", "Fraser", "Gill", "Hansen", "Ito", "Jones", "Khan")
AREAS = ("North", "South", "East", "West", "Central")
COMPANY_WORDS = ("Prairie", "Summit", "Boreal", "Granite", "Cedar", "Northern", "Ridge", "Delta")
COMPANY_KINDS = ("Energy", "Pipelines", "Resources", "Services", "Drilling", "Holdings")
EQUIPMENT_TYPES = ("Excavator", "Loader", "Pickup", "Crane", "Generator", "Vac Truck")
NRB_ITEMS = ("Mobilization", "Fuel Surcharge", "Disposal Fee", "Permit", "Rental", "Consumables")


def _phone(rng: random.Random) -> str:
    return f"403-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}"


class Generator:
    """Builds generated rows; cross-references point at other entities' generated indices."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = max(size, 1)  # modulus for cross-references
        self.prefix = {name: guid_prefix(seed, name) for name in SPECS}
        self.salt = {name: entity_salt(seed, name) for name in SPECS}
        self.role_guids = {name: guid_for(seed, "Role", k) for k, name in enumerate(ROLE_NAMES)}
        self.trade_guids = {code: guid_for(seed, "Trade", k) for k, code in enumerate(TRADE_CODES)}

    def guid(self, entity: str, index: int) -> str:
        return f"{self.prefix[entity]}{index:012x}"

    def key(self, entity: str, index: int) -> str:
        return natural_key(SPECS[entity], index)

    def updated_ms(self, entity: str, index: int) -> int:
        return generated_updated_ms(self.salt[entity], index)

    def maker(self, entity: str) -> MakeFn:
        makers: dict[str, Callable[[random.Random, int], Record]] = {
            "User": self._user,
            "Employee": self._employee,
            "Equipment": self._equipment,
            "JobOrder": self._job,
            "Customer": self._customer,
            "PriceBook": self._price_book,
            "NRB": self._nrb,
            "NonRecurringBillableItem": self._nrb_item,
            "PayrollPeriod": self._payroll_period,
            "Invoice": self._invoice,
            "Timecard": self._timecard,
        }
        return makers[entity]

    def _ids(self, entity: str, index: int) -> Record:
        spec = SPECS[entity]
        out: Record = {}
        if spec.int_field:
            out[spec.int_field] = index + 1
        if spec.guid_field:
            out[spec.guid_field] = self.guid(entity, index)
        out[spec.key_field] = natural_key(spec, index)
        return out

    def _user(self, rng: random.Random, i: int) -> Record:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        role = rng.choice(ROLE_NAMES)
        return self._ids("User", i) | {
            "userFirstName": first,
            "userLastName": last,
            "userFullName": f"{first} {last}",
            "userRoleNames": [role],
            "userRoleGuids": [self.role_guids[role]],
            "userPhone": _phone(rng),
            "userEmail": f"{first}.{last}.{i + 1}@example.com".lower(),
            "userIsActive": rng.random() < 0.9,
            "userAreas": sorted(rng.sample(AREAS, rng.randint(0, 2))),
            "userShortCode": (first[0] + last[:2]).upper(),
            "updatedAt": self.updated_ms("User", i),
        }

    def _employee(self, rng: random.Random, i: int) -> Record:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        updated = self.updated_ms("Employee", i)
        hired = updated - rng.randrange(30, 3000) * DAY_MS
        active = rng.random() < 0.85
        trade = rng.choice(TRADE_CODES)
        return self._ids("Employee", i) | {
            "employmentType": "DIRECT_HIRE" if rng.random() < 0.8 else "SUBCONTRACTOR",
            "employeeStatusUname": EMPLOYEE_STATUSES[0]
            if active
            else rng.choice(EMPLOYEE_STATUSES),
            "employeeFirstName": first,
            "employeeLastName": last,
            "employeeNickName": None,
            "employeeTradeGuid": self.trade_guids[trade],
            "employeeTradeCode": trade,
            "employmentHireDate": hired,
            "employmentTerminationDate": None
            if active
            else hired + rng.randrange(30, 900) * DAY_MS,
            "employmentReHireDate": None,
            "employeeAddress": f"{rng.randrange(1, 9999)} {rng.choice(AREAS)} Road, Calgary AB",
            "employeePhone": _phone(rng),
            "employeeEmail": f"{first}.{last}.e{i + 1}@example.com".lower(),
            "employeeNotes": None,
            "employeePayrollTypeName": rng.choice(("Hourly", "Salaried")),
            "employeePayrollUnionName": rng.choice(("Non-Union", "Local 488")),
            "employeePayrollHolidayEligibility": rng.choice(HOLIDAY_ELIGIBILITY),
            "employeeAverageDayPay": round(rng.uniform(250, 650), 2),
            "employeeHolidayHoursTopUp": rng.choice((0, 4, 8)),
            "employeeLinkedUserGuid": self.guid("User", i),
            "employeeLinkedUserName": self.key("User", i),
            "employeeCreatedAt": hired,
            "employeeUpdatedAt": updated,
            "employeeFormData": {},
            "updatedAt": updated,
        }

    def _equipment(self, rng: random.Random, i: int) -> Record:
        kind = rng.choice(EQUIPMENT_TYPES)
        return self._ids("Equipment", i) | {
            "equipmentName": f"{kind} {i + 1}",
            "equipmentDescription": f"{rng.randrange(2005, 2025)} {kind.lower()}",
            "equipmentTypeName": kind,
            "equipmentStatus": rng.choice(EQUIPMENT_STATUSES),
            "equipmentSerialNumber": f"SN{rng.randrange(10**8):08d}",
            "equipmentIsActive": rng.random() < 0.9,
            "updatedAt": self.updated_ms("Equipment", i),
        }

    def _job(self, rng: random.Random, i: int) -> Record:
        n = self.size
        updated = self.updated_ms("JobOrder", i)
        start = updated - rng.randrange(0, 90) * DAY_MS
        client, book = (i * 7 + 1) % n, (i * 3) % n
        lat, long = round(rng.uniform(49.0, 59.9), 5), round(rng.uniform(-120.0, -110.0), 5)
        return self._ids("JobOrder", i) | {
            "jobName": f"{rng.choice(COMPANY_WORDS)} {rng.choice(('Well', 'Site', 'Pad'))} {i + 1}",
            "jobDescription": rng.choice(("Maintenance", "Install", "Inspection", "Repair")),
            "jobStatus": rng.choice(JOB_STATUSES[:5]),
            "jobTypeUname": rng.choice(("service_job_type", "project_job_type")),
            "jobClientCode": self.key("Customer", client),
            "jobClientGuid": self.guid("Customer", client),
            "jobClientName": None,  # filled from the customer when read
            "jobPriceBookName": self.key("PriceBook", book),
            "jobPriceBookGuid": self.guid("PriceBook", book),
            "jobStartDate": start,
            "jobEndDate": start + rng.randrange(1, 60) * DAY_MS,
            "jobCreatedAt": start - DAY_MS,
            "jobUpdatedAt": updated,
            "jobShowInDispatching": rng.random() < 0.7,
            "jobAssigneeEmployeeNumber": self.key("Employee", i % n),
            "jobAssigneeFullName": None,  # filled from the employee when read
            "jobAssigneeUserName": None,
            "jobAddress": f"LSD {rng.randrange(1, 16)}-{rng.randrange(1, 36)}-{i % 126 + 1}",
            "jobLocationCode": f"LOC-{(i * 11) % n + 1:06d}",
            "jobLocationName": f"{rng.choice(AREAS)} Field",
            "jobLocationLat": lat,
            "jobLocationLong": long,
            "jobDirection": None,
            "jobWBSSchedule": {
                "jobScheduleGuid": guid_for(self.seed, "JobSchedule", i),
                "jobScheduleBudgetEntryOption": "PerDetailedBreakDown",
                "jobScheduleContractValueEntryOption": "PerJob",
                "jobScheduleChangeSettingOption": "Manual",
                "jobScheduleConversionRules": [],
            },
            "updatedAt": updated,
        }

    def _customer(self, rng: random.Random, i: int) -> Record:
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} {i + 1}"
        return self._ids("Customer", i) | {
            "customerName": name,
            "customerIsActive": rng.random() < 0.95,
            "customerAddress": f"{rng.randrange(100, 9999)} 5 Ave SW, Calgary AB",
            "customerPhone": _phone(rng),
            "customerEmail": f"ap{i + 1}@example.com",
            "updatedAt": self.updated_ms("Customer", i),
        }

    def _price_book(self, rng: random.Random, i: int) -> Record:
        updated = self.updated_ms("PriceBook", i)
        return self._ids("PriceBook", i) | {
            "priceBookDescription": f"{rng.choice(('Standard', 'Contract', 'Emergency'))} rates",
            "priceBookCurrency": rng.choice(("CAD", "USD")),
            "priceBookIsActive": rng.random() < 0.9,
            "priceBookEffectiveDate": updated - rng.randrange(0, 365) * DAY_MS,
            "updatedAt": updated,
        }

    def _nrb(self, rng: random.Random, i: int) -> Record:
        item = (i * 5) % self.size
        updated = self.updated_ms("NRB", i)
        return self._ids("NRB", i) | {
            "nrbJobGuid": self.guid("JobOrder", i % self.size),
            "nrbJobNumber": self.key("JobOrder", i % self.size),
            "nrbItemCode": self.key("NonRecurringBillableItem", item),
            "nrbItemGuid": self.guid("NonRecurringBillableItem", item),
            "nrbDescription": rng.choice(NRB_ITEMS),
            "nrbQuantity": rng.randrange(1, 20),
            "nrbUnitPrice": round(rng.uniform(10, 2500), 2),
            "nrbDate": updated - rng.randrange(0, 30) * DAY_MS,
            "updatedAt": updated,
        }

    def _nrb_item(self, rng: random.Random, i: int) -> Record:
        return self._ids("NonRecurringBillableItem", i) | {
            "nrbItemName": f"{rng.choice(NRB_ITEMS)} {i + 1}",
            "nrbItemUnit": rng.choice(("each", "day", "km", "litre")),
            "nrbItemUnitPrice": round(rng.uniform(10, 2500), 2),
            "nrbItemIsActive": rng.random() < 0.9,
            "updatedAt": self.updated_ms("NonRecurringBillableItem", i),
        }

    def _payroll_period(self, rng: random.Random, i: int) -> Record:
        start = BASE_MS - 365 * DAY_MS + i * 14 * DAY_MS
        return self._ids("PayrollPeriod", i) | {
            "payrollPeriodStartDate": start,
            "payrollPeriodEndDate": start + 14 * DAY_MS - 1,
            "payrollPeriodStatus": rng.choice(PAYROLL_PERIOD_STATUSES),
            "updatedAt": self.updated_ms("PayrollPeriod", i),
        }

    def _invoice(self, rng: random.Random, i: int) -> Record:
        job = (i * 13) % self.size
        updated = self.updated_ms("Invoice", i)
        return self._ids("Invoice", i) | {
            "invoiceJobGuid": self.guid("JobOrder", job),
            "invoiceJobNumber": self.key("JobOrder", job),
            "invoiceDate": updated - rng.randrange(0, 20) * DAY_MS,
            "invoiceTotal": round(rng.uniform(100, 90_000), 2),
            "invoiceStatus": rng.choice(INVOICE_STATUSES),
            "updatedAt": updated,
        }

    def _timecard(self, rng: random.Random, i: int) -> Record:
        employee, job = i % self.size, (i * 17) % self.size
        updated = self.updated_ms("Timecard", i)
        return self._ids("Timecard", i) | {
            "timecardEmployeeGuid": self.guid("Employee", employee),
            "timecardEmployeeCode": self.key("Employee", employee),
            "timecardJobNumber": self.key("JobOrder", job),
            "timecardPayrollPeriodId": (i % self.size) + 1,
            "timecardDate": updated - rng.randrange(0, 14) * DAY_MS,
            "timecardHours": rng.choice((4, 8, 10, 12)),
            "timecardStatus": rng.choice(TIMECARD_STATUSES),
            "updatedAt": updated,
        }
