"""The contract test's one allowance: rules JSON Schema cannot state.

The OpenAPI document states every bound, length and pattern the services
check, so a request valid by the schema is accepted (schemathesis'
positive_data_acceptance check). A few rules relate a field to another field,
to the present, or to the items of a list; the field descriptions say them,
and a schema-valid request may still break them. A 422 whose every refused
field is one of those rules is the right answer, so that failure is dropped
here, and nothing else is: any other refusal of schema-valid data fails the
run.

Loaded by tests/gateway/contract_test.sh through SCHEMATHESIS_HOOKS.
"""

import json

import schemathesis

# (field as the problem document names it, start of its description).
NOT_STATABLE = (
    # One field against another.
    ("ends_at", "must be after starts_at"),
    ("bonus_points", "must be between 1 and"),  # for a `bonus` campaign
    ("multiplier_bp", "must be above 10000 (1x)"),  # for a `multiplier` campaign
    ("amount_minor", "must be greater than zero"),  # for a `fixed_discount` reward
    ("currency", "must be an ISO 4217 code"),  # for a `fixed_discount` reward
    ("percent_bp", "must be 1 to 10000"),  # for a `percent_discount` reward
    ("sku", "must be a valid id"),  # for a `free_product` reward
    ("limit_period_days", "must be 1 to 3660 when a limit is set"),
    ("cap_period", "must be set when cap_count is"),
    ("window.days", "must be between 1 and 3660"),  # for a `rolling_days` window
    ("downgrade.grace_days", "must be between 1 and 730"),  # for a `grace_days` downgrade
    ("downgrade.kind", "END_OF_NEXT_PERIOD needs the calendar-year window"),
    ("churned_days", "must be more than at_risk_days"),
    ("score", "must be 1 to 5 for this survey"),  # a `csat` answer
    ("from", "must not be after to"),
    ("from", "must be at most 1100 days before to"),
    ("from", "must be at most 36 months before to"),
    ("answered_at", "must not be in the future"),
    ("threshold", "must not be negative"),  # for a visible tier
    ("amount_minor", "earns "),  # more points than one write may book, at the program's rate
    ("enabled", "a program needs a reward for at least one side"),
    ("expiry.count", ""),  # days or months, by the policy's kind
    ("never_expires", "only applies to a positive adjustment"),
    ("birth_day", "must be 1 to "),  # for the birth month
    ("birth_month", "must be given with the day"),
    # Against the time zone database (the names of the IANA zones this build bundles).
    ("time_zone", "must be an IANA time zone"),
    ("changed_at", "must not be in the future"),
    ("expires_at", "only applies to a positive adjustment"),
    # Against the present: instants from 1970 to 3,660 days ahead, some in the future.
    ("", "must be in the future"),
    ("", "must not be before 1970-01-01T00:00:00Z"),
    ("", "must not be more than 3660 days from now"),
    ("expires_at", "must be after pending_until"),
    # Against the program as it stands: a campaign's tiers must be on the ladder.
    ("tier_ids", "needs a tiers service"),
    # The points service runs without an insights service here.
    ("segment_ids", "needs an insights service"),
    ("", "is not on the tier ladder"),
    # Across the items of a list.
    ("", "appears twice"),
    ("threshold", "must be above the previous visible tier's"),
)

# JSON Schema counts 1200.0 as an integer; the API takes integers written as
# integers (1200), as the document's introduction says.
FRACTION = "invalid type: floating point"



def _allowed(error: dict) -> bool:
    field = str(error.get("field", ""))
    description = str(error.get("description", ""))
    return any(
        (not name or field == name or field.endswith("." + name)) and description.startswith(start)
        for name, start in NOT_STATABLE
    )


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keeps every failure but a 422 to schema-valid data that only names the rules above."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code not in (400, 422):
        return True
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return True
    allowed = (lambda e: str(e.get("description", "")).startswith(FRACTION)) if response.status_code == 400 else _allowed
    return not (errors and all(allowed(error) or _allowed(error) for error in errors))
